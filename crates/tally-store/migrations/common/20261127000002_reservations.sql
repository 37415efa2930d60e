-- Holds on credits for metered calls whose cost is known only afterwards. A hold
-- counts while status is 'held' and expires_at is in the future, so an expired one
-- frees itself without any job.
create table reservations (
    id              text primary key,
    user_id         text   not null,
    idempotency_key text   not null unique,
    amount          bigint not null check (amount > 0),
    committed       bigint,
    status          text   not null,
    expires_at      bigint not null,
    created_at      bigint not null,
    updated_at      bigint not null
);
create index reservations_by_user on reservations (user_id, status, expires_at);
