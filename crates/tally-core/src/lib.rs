//! tally's domain, with no IO: the catalogue (what each plan and pack is worth), the normalized Stripe event the
//! rest of tally sees, and the credit rules that turn events and spends into ledger
//! entries. The store loads a [`rules::Snapshot`], asks these rules what changes, and
//! writes the answer in the same transaction.

pub mod account;
pub mod calendar;
pub mod catalogue;
pub mod error;
pub mod event;
pub mod input;
pub mod reconcile;
pub mod requests;
pub mod rules;

pub use account::{Account, Bucket, Entry, Ledger};
pub use catalogue::{Catalogue, CatalogueError, FREE, Interval, Pack, Plan, Price, Product};
pub use error::CoreError;
pub use event::{BillingEvent, EventKind};
