//! tally's scenario suite: every rule of CONTRACT §1 and every webhook answer, through
//! HTTP, on embedded SQLite and on Postgres (see `tally_testdb`: TEST_DATABASE_URL, or a
//! private cluster started for the run).

mod fake_stripe;
mod helpers;

mod openapi;
mod ownership;
mod pages;

mod auth;
mod bad_input;
mod batches;
mod catalogue;
mod checkout;
mod concurrency;
mod credits;
mod hostile_input;
mod jwks;
mod limits;
mod localstripe;
mod prorations_late_and_foreign_events;
mod readiness;
mod reservations;
mod shared_database;
mod subscriptions;
mod sync;
mod topups;
