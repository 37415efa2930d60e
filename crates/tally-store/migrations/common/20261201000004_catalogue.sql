-- the start of the subscription's current period: a period longer than a month grants
-- its allowance at each monthly anniversary of it
alter table subscriptions add column current_period_start bigint;
-- the price it was last seen on: a price the catalogue no longer names is reported
alter table subscriptions add column price_id text;
-- the clock's scan for long periods due a monthly grant
create index subscriptions_by_status on subscriptions (status, current_period_end);
-- events whose metadata named another user than the owner of their Stripe customer:
-- applied to the owner (the first link wins), kept here for `tally audit`
create table ownership_conflicts (
    event_id    text primary key,
    owner       text   not null,
    named       text   not null,
    recorded_at bigint not null
);
