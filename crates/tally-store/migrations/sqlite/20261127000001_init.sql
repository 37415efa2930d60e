-- tally's schema. Times are unix seconds; money effects are ledger rows.

create table accounts (
    user_id            text primary key,
    tier               text   not null,
    plan_credits       bigint not null check (plan_credits >= 0),
    topup_credits      bigint not null check (topup_credits >= 0),
    -- the subscription whose period filled the plan bucket
    funded_by          text,
    stripe_customer_id text unique,
    created_at         bigint not null,
    updated_at         bigint not null
);

create table subscriptions (
    id                   text primary key,
    user_id              text   not null,
    status               text   not null,
    plan                 text,
    current_period_end   bigint,
    cancel_at_period_end bigint not null,
    -- created of the newest event applied; 0 while only checkout has been seen
    state_at             bigint not null,
    updated_at           bigint not null
);
create index subscriptions_by_user on subscriptions (user_id, updated_at);

-- one row per billing period: what it has granted, or what it will grant once paid
create table periods (
    subscription_id text   not null,
    start           bigint not null,
    seen            text,
    granted         text,
    primary key (subscription_id, start)
);

create table topups (
    session_id       text primary key,
    user_id          text   not null,
    payment_intent   text,
    credits          bigint not null,
    refunded_credits bigint not null
);
create index topups_by_payment_intent on topups (payment_intent);

create table ledger (
    id            integer primary key autoincrement,
    user_id       text   not null,
    bucket        text   not null,
    delta         bigint not null,
    balance_after bigint not null,
    reason        text   not null,
    reference     text   not null,
    created_at    bigint not null,
    unique (reference, bucket)
);
create index ledger_by_user on ledger (user_id, id);

create trigger ledger_no_update before update on ledger
begin
    select raise(abort, 'the ledger is append-only');
end;
create trigger ledger_no_delete before delete on ledger
begin
    select raise(abort, 'the ledger is append-only');
end;

-- every verified event, whatever became of it
create table events (
    id          text primary key,
    type        text   not null,
    created     bigint not null,
    livemode    bigint not null,
    payload     text   not null,
    outcome     text   not null,
    note        text,
    user_id     text,
    received_at bigint not null,
    attempts    bigint not null
);
create index events_by_outcome on events (outcome, received_at);

create table settings (
    key   text primary key,
    value text not null
);
