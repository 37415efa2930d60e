//! What the store takes and gives back.

use serde::Serialize;
use tally_core::BillingEvent;

/// A verified event to record and apply.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub created: i64,
    pub livemode: bool,
    /// The raw body, kept for replay.
    pub payload: &'a str,
    /// The normalized event, or why its object could not be read.
    pub event: Result<&'a BillingEvent, &'a str>,
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Its effects are in the database.
    Applied,
    /// Seen before; nothing was done again.
    Duplicate,
    /// Not one tally acts on, or nothing in it changes anything.
    Ignored,
    /// No user could be found for it; stored for replay.
    Unmatched,
    /// Its object could not be read; stored for replay.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Unmatched => "unmatched",
            Outcome::Failed => "failed",
        }
    }

    /// Outcomes worth applying again when the event is delivered or replayed again.
    pub fn retryable(s: &str) -> bool {
        s == "unmatched" || s == "failed"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestOutcome {
    pub outcome: Outcome,
    pub user_id: Option<String>,
    pub note: Option<String>,
}

/// A user's billing state, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Billing {
    pub user_id: String,
    /// `free` or a plan id of the catalogue.
    pub tier: String,
    pub credits: i64,
    pub plan_credits: i64,
    pub topup_credits: i64,
    pub reserved_credits: i64,
    pub subscription: Option<SubscriptionView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionView {
    pub id: String,
    pub status: String,
    pub plan: Option<String>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
}

impl SubscriptionView {
    /// The user has this subscription to manage (in the portal), not one to buy again.
    pub fn is_live(&self) -> bool {
        matches!(self.status.as_str(), "active" | "trialing" | "past_due" | "unpaid")
    }
}

/// One ledger row, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerRow {
    pub id: i64,
    pub bucket: String,
    pub delta: i64,
    pub balance_after: i64,
    pub reason: String,
    pub reference: String,
    pub created_at: i64,
}

/// A request to spend credits, idempotent on its key.
#[derive(Debug, Clone, Copy)]
pub struct Spend<'a> {
    pub user_id: &'a str,
    pub amount: i64,
    pub idempotency_key: &'a str,
    pub reason: &'a str,
}

/// An event as the inbox holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredEvent {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub payload: String,
    pub outcome: String,
    pub note: Option<String>,
    pub user_id: Option<String>,
    pub attempts: i64,
}

/// What `tally trigger` needs to continue a user's story with a realistic event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerState {
    pub customer: Option<String>,
    /// The user's newest subscription: id, status, plan.
    pub subscription: Option<(String, String, Option<String>)>,
    /// The price that subscription is on.
    pub price_id: Option<String>,
    /// The start of that subscription's newest granted period (0 = the first).
    pub latest_period: Option<i64>,
    pub current_period_end: Option<i64>,
    /// The newest top-up: payment intent and credits.
    pub topup: Option<(String, i64)>,
}

/// A request to hold credits, idempotent on its key.
#[derive(Debug, Clone, Copy)]
pub struct Reserve<'a> {
    pub user_id: &'a str,
    pub amount: i64,
    pub idempotency_key: &'a str,
    pub ttl_seconds: i64,
}

/// A hold on credits, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reservation {
    pub reservation_id: String,
    pub user_id: String,
    /// The credits held.
    pub amount: i64,
    /// The credits taken at commit.
    pub committed: Option<i64>,
    /// `held`, `committed`, `released` or `expired`.
    pub status: String,
    pub expires_at: i64,
}

/// A reservation step's answer: the reservation and the user's state after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReservationState {
    #[serde(flatten)]
    pub reservation: Reservation,
    pub billing: Billing,
}

/// An operator's adjustment of a bucket, idempotent on its key.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    pub user_id: &'a str,
    pub amount: i64,
    pub bucket: tally_core::Bucket,
    pub reason: &'a str,
    pub key: &'a str,
}
