//! `tally sync`: repairs what webhooks missed, in two passes through the webhook's own
//! path, so a sync can run as often as one likes and grants nothing twice.
//!
//! 1. [`events`]: the events Stripe keeps (30 days) of the types tally handles. They
//!    carry the ids webhooks carry, so one already applied is a duplicate.
//! 2. [`subscriptions`]: every subscription Stripe has, compared with tally's record
//!    (`tally_core::reconcile`). A difference is repaired by an event built from
//!    Stripe's object, and an active period tally has not granted by one built from the
//!    invoice that paid it. Their ids derive from what was observed, so a rerun that
//!    finds the same difference applies nothing new; the grants themselves are keyed
//!    by period and ledger reference, as a webhook's are.
//!
//! The subscriptions pass records a cursor after each page; an interrupted sync resumes
//! after it. A dry run lists what it would do and writes nothing.

pub mod events;
pub mod subscriptions;

use std::collections::BTreeMap;

use tally_core::reconcile::FieldDiff;
use tally_store::{Store, StoreError};
use tally_stripe::{StripeClient, StripeError};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("Stripe: {0}")]
    Stripe(#[from] StripeError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Events created at or after this time (unix seconds) are pulled; `None` skips
    /// the events pass and compares subscriptions only.
    pub since: Option<i64>,
    /// Report, write nothing.
    pub dry_run: bool,
}

/// What a sync did, or would do.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    /// Events pulled, by outcome (`applied`, `duplicate`, ...; in a dry run `new` and
    /// `stored`).
    pub events: BTreeMap<&'static str, usize>,
    /// Subscriptions compared with tally's records.
    pub checked: usize,
    /// Subscriptions on prices outside the catalogue that tally never kept: not tally's.
    pub skipped: usize,
    pub differences: Vec<Difference>,
    /// The subscription after which this run started, resuming an interrupted one.
    pub resumed_after: Option<String>,
}

/// A subscription that differed, and what the sync did about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub subscription: String,
    /// The user tally has for it, when it has one.
    pub user_id: Option<String>,
    pub fields: Vec<FieldDiff>,
    /// Stripe shows a period active that tally has not granted.
    pub period_unpaid: bool,
    /// The events applied (or, in a dry run, that would be), in order.
    pub repairs: Vec<Repair>,
    /// Why part of the difference could not be repaired.
    pub unrepaired: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    pub event_id: String,
    pub event_type: &'static str,
    /// The Stripe object the event carries: the subscription, or the invoice.
    pub object: String,
    /// How the event ended (`applied`, `duplicate`, `unmatched`, ...); `None` in a dry run.
    pub outcome: Option<&'static str>,
    /// The rules' note, such as why nothing was granted.
    pub note: Option<String>,
}

/// What a sync tells as it goes: the CLI draws a bar on a terminal, lines elsewhere.
pub trait Observer {
    fn events_listed(&mut self, _total: usize) {}
    fn subscriptions_checked(&mut self, _total: usize) {}
    fn difference(&mut self, _difference: &Difference) {}
}

/// An observer that tells nobody.
pub struct Quiet;

impl Observer for Quiet {}

/// Both passes, events first.
pub async fn sync(
    stripe: &StripeClient,
    store: &Store,
    options: SyncOptions,
    observer: &mut dyn Observer,
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport::default();
    if let Some(since) = options.since {
        report.events = events::pull(stripe, store, since, options.dry_run, observer).await?;
    }
    subscriptions::reconcile(stripe, store, options, observer, &mut report).await?;
    Ok(report)
}
