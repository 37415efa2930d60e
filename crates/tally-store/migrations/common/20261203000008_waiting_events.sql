-- What an unmatched event waits for: the Stripe customer to be linked to a user (no
-- user was found), or the top-up of its payment intent (a refund that came before the
-- checkout). `tally serve` tries it again once that is in (Store::events_to_retry).
alter table events add column waits_customer text;
alter table events add column waits_intent text;
