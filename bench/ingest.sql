-- Ceiling for webhook ingest: store the event (jsonb, ~3 KB) once, then update its user.
-- Tables: see crates/tally-bench/src/ceiling.rs (tally-bench creates them in tally_bench_ceiling).
-- pgbench -n -M prepared -c C -j 2 -T 10 -D users=100000 -D payload="$(cat event.json)" -f bench/ingest.sql URL
\set u random(0, :users - 1)
\set n random(1, 9000000000000000)
BEGIN;
INSERT INTO c_events (id, type, payload, user_id, received_at)
    VALUES ('evt_pgb_' || :n::text, 'invoice.paid', :payload::jsonb, 'u' || :u::text, 0)
    ON CONFLICT (id) DO NOTHING;
UPDATE c_users SET balance = balance + 100, updated_at = 0 WHERE user_id = 'u' || :u::text;
END;
