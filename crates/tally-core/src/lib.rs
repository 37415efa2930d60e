//! tally's domain, with no IO: what a plan is worth, the normalized Stripe event the
//! rest of tally sees, and the credit rules that turn events and spends into ledger
//! entries. The store loads a [`rules::Snapshot`], asks these rules what changes, and
//! writes the answer in the same transaction.

pub mod account;
pub mod error;
pub mod event;
pub mod plan;
pub mod rules;

pub use account::{Account, Bucket, Entry, Ledger};
pub use error::CoreError;
pub use event::{BillingEvent, EventKind};
pub use plan::{Catalog, Item, Offer, Plan};
