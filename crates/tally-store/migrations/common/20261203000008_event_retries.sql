-- How often `tally serve` has tried an unmatched event again by itself (see
-- Store::events_to_retry): its backoff counts these tries, not Stripe's redeliveries.
alter table events add column retries bigint not null default 0;
