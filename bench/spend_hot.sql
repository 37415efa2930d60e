-- Ceiling for spending on one hot user: every transaction queues on the same row lock.
\set n random(1, 9000000000000000)
BEGIN;
UPDATE c_users SET balance = balance - 1, updated_at = 0 WHERE user_id = 'hot' AND balance >= 1;
INSERT INTO c_ledger (user_id, delta, reference, created_at)
    VALUES ('hot', -1, 'pgb-' || :n::text, 0) ON CONFLICT (reference) DO NOTHING;
END;
