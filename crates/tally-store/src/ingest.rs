//! Webhook events as jobs of the writer's batch: claim the stored ones (so concurrent
//! deliveries of one event queue), find the user, let the credit rules decide, and keep
//! the event's row with its outcome, all in the batch's transaction. An event takes
//! effect once however often it is delivered.

use std::collections::{HashMap, HashSet};

use sqlx::AnyConnection;
use tally_core::rules::{self, Snapshot, UNKNOWN_PRICE};
use tally_core::{BillingEvent, EventKind};

use crate::StoreError;
use crate::model::{IngestOutcome, Outcome};
use crate::sql::fetch_in;
use crate::unit::{NewEventRow, Unit};

/// A verified event, owned, as it waits for the writer.
pub(crate) struct Delivery {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub livemode: bool,
    pub payload: String,
    pub event: Result<BillingEvent, String>,
}

/// What an unmatched event waits for, kept on its row so that `tally serve` tries it
/// again once that is in (see `Store::events_to_retry`): the link of its Stripe
/// customer to a user when no user was found, or the top-up of its payment intent when
/// a refund came before that checkout. Nothing for an unknown price, which waits for
/// the catalogue file, not for an event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Waits {
    pub customer: Option<String>,
    pub payment_intent: Option<String>,
}

impl Waits {
    fn of(event: &Result<BillingEvent, String>, outcome: Option<&IngestOutcome>) -> Waits {
        let (Ok(event), Some(outcome)) = (event, outcome) else { return Waits::default() };
        if outcome.outcome != Outcome::Unmatched || outcome.note.as_deref() == Some(UNKNOWN_PRICE) {
            return Waits::default();
        }
        match outcome.user_id {
            None => Waits { customer: event.kind.owner().and_then(|o| o.customer.clone()), payment_intent: None },
            Some(_) => Waits { customer: None, payment_intent: event.kind.payment_intent().map(str::to_owned) },
        }
    }
}

/// Counts a new delivery of each stored event among `ids` and locks it, so concurrent
/// deliveries of one event queue here; returns the outcome each has so far. An id not
/// returned is new: it is stored, with its outcome, once the batch has applied it.
async fn claim<'k>(
    conn: &mut AnyConnection,
    ids: impl Iterator<Item = &'k str>,
) -> Result<HashMap<String, String>, StoreError> {
    let ids: Vec<&str> = ids.collect::<HashSet<_>>().into_iter().collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = "update events set attempts = attempts + 1 where id in ({keys}) returning id, outcome";
    let claimed: Vec<(String, String)> = fetch_in(conn, sql, None, &ids).await?;
    Ok(claimed.into_iter().collect())
}

/// Finds the user, reads what the event touches, and keeps what the rules say for the
/// batch to write.
async fn apply_event(unit: &mut Unit<'_>, event: &BillingEvent) -> Result<IngestOutcome, StoreError> {
    if event.kind == EventKind::Unhandled {
        return Ok(IngestOutcome {
            outcome: Outcome::Ignored,
            user_id: None,
            note: Some("event type not handled".into()),
        });
    }
    let Some(user_id) = unit.find_user(&event.kind).await? else {
        return Ok(IngestOutcome { outcome: Outcome::Unmatched, user_id: None, note: Some("no user found".into()) });
    };
    // The owner came from a stored link: metadata naming someone else moves nothing of theirs.
    if let Some(named) = event.kind.owner().and_then(|o| o.user_id.as_deref()).filter(|named| *named != user_id) {
        tracing::warn!(event = %event.id, owner = %user_id, named, "event names another user than its customer's owner");
        unit.record_conflict(&event.id, &user_id, named);
    }
    let mut account = unit.account(&user_id).await?.account.clone();
    let linked = match event.kind.owner().and_then(|o| o.customer.as_deref()) {
        Some(customer) => unit.link_customer(&user_id, customer).await?,
        None => false,
    };
    // A refund takes only credits that are not held.
    account.reserved = match event.kind {
        EventKind::ChargeRefunded(_) => unit.reserved(&user_id).await?,
        _ => 0,
    };
    let (subscription, period, latest_granted) = match event.kind.subscription_id() {
        Some(id) => unit.subscription_context(id, rules::period_of(&event.kind)).await?,
        None => (None, None, None),
    };
    let topup = match rules::topup_of(&event.kind) {
        Some(key) => unit.topup(key).await?,
        None => None,
    };
    let snapshot = Snapshot { account, subscription, period, latest_granted, topup };
    let changes = rules::apply(event, snapshot, unit.catalogue);
    let outcome = if changes.unmatched {
        Outcome::Unmatched
    } else if changes.changed_anything() || (linked && matches!(event.kind, EventKind::CustomerChanged(_))) {
        Outcome::Applied
    } else {
        Outcome::Ignored
    };
    let note = changes.note.map(str::to_owned);
    unit.record(changes);
    Ok(IngestOutcome { outcome, user_id: Some(user_id), note })
}

/// The events of one batch: what each had before it, and what became of it.
pub(crate) struct Inbox<'a> {
    /// The stored outcome of each event id delivered before this batch.
    stored: HashMap<String, String>,
    delivered: Vec<Delivered<'a>>,
    index: HashMap<&'a str, usize>,
}

/// An event id the batch was delivered, and what became of it.
struct Delivered<'a> {
    delivery: &'a Delivery,
    /// The outcome stored before this batch; `None` for an event new to the inbox.
    stored: Option<String>,
    /// The outcome of its latest application in this batch.
    outcome: Option<IngestOutcome>,
    /// Deliveries in this batch after the first.
    redeliveries: i64,
}

impl<'a> Inbox<'a> {
    /// Claims the stored events among `deliveries` (see [`claim`]).
    pub async fn claim(conn: &mut AnyConnection, deliveries: &[&'a Delivery]) -> Result<Inbox<'a>, StoreError> {
        let stored = claim(conn, deliveries.iter().map(|d| d.id.as_str())).await?;
        Ok(Inbox { stored, delivered: Vec::new(), index: HashMap::new() })
    }

    /// The events of `deliveries` that will be applied: new ones, and stored ones that
    /// were unmatched or failed before.
    pub fn to_apply<'d>(&self, deliveries: &[&'d Delivery]) -> Vec<&'d EventKind> {
        deliveries
            .iter()
            .filter(|d| self.stored.get(&d.id).is_none_or(|o| Outcome::retryable(o)))
            .filter_map(|d| d.event.as_ref().ok().map(|e| &e.kind))
            .collect()
    }

    /// Applies one delivery. A second delivery of an id within the batch is a
    /// redelivery like any other: applied again if the first left it unmatched or failed.
    pub async fn deliver(&mut self, unit: &mut Unit<'_>, d: &'a Delivery) -> Result<IngestOutcome, StoreError> {
        let i = match self.index.get(d.id.as_str()) {
            Some(&i) => {
                self.delivered[i].redeliveries += 1;
                i
            }
            None => {
                self.index.insert(&d.id, self.delivered.len());
                let stored = self.stored.get(&d.id).cloned();
                self.delivered.push(Delivered { delivery: d, stored, outcome: None, redeliveries: 0 });
                self.delivered.len() - 1
            }
        };
        if self.delivered[i].outcome_so_far().is_some_and(|o| !Outcome::retryable(o)) {
            return Ok(IngestOutcome { outcome: Outcome::Duplicate, user_id: None, note: None });
        }
        let outcome = match &d.event {
            Ok(event) => apply_event(unit, event).await?,
            Err(reason) => IngestOutcome { outcome: Outcome::Failed, user_id: None, note: Some(reason.clone()) },
        };
        self.delivered[i].outcome = Some(outcome.clone());
        Ok(outcome)
    }

    /// Hands each event's row to the unit: a new event is stored with its outcome, a
    /// stored one gets its new outcome (if applied again) and its deliveries counted.
    pub fn keep(self, unit: &mut Unit<'_>) {
        for delivered in self.delivered {
            delivered.keep(unit);
        }
    }
}

impl Delivered<'_> {
    fn outcome_so_far(&self) -> Option<&str> {
        self.outcome.as_ref().map(|o| o.outcome.as_str()).or(self.stored.as_deref())
    }

    fn keep(self, unit: &mut Unit<'_>) {
        let d = self.delivery;
        let waits = Waits::of(&d.event, self.outcome.as_ref());
        match (self.stored, self.outcome) {
            (None, Some(outcome)) => unit.events.push(NewEventRow {
                id: d.id.clone(),
                event_type: d.event_type.clone(),
                created: d.created,
                livemode: d.livemode,
                payload: d.payload.clone(),
                outcome,
                waits,
                attempts: 1 + self.redeliveries,
            }),
            (Some(_), outcome) if outcome.is_some() || self.redeliveries > 0 => {
                unit.outcomes.push((d.id.clone(), outcome.map(|o| (o, waits)), self.redeliveries));
            }
            _ => {}
        }
    }
}
