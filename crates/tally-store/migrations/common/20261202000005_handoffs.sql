-- One-time sign-in codes for the billing page: a host app's token is exchanged for a
-- code that works once, within a minute, so that no token travels in a URL. Only the
-- code's hash is kept.
create table handoffs (
    code_hash text primary key,
    user_id text not null,
    email text,
    expires_at bigint not null
);
