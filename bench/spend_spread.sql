-- Ceiling for spending, spread over :users users: conditional debit, then the ledger row.
\set u random(0, :users - 1)
\set n random(1, 9000000000000000)
BEGIN;
UPDATE c_users SET balance = balance - 1, updated_at = 0 WHERE user_id = 'u' || :u::text AND balance >= 1;
INSERT INTO c_ledger (user_id, delta, reference, created_at)
    VALUES ('u' || :u::text, -1, 'pgb-' || :n::text, 0) ON CONFLICT (reference) DO NOTHING;
END;
