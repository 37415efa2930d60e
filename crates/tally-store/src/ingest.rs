//! The webhook inbox: record a verified event under its unique id and apply its effects,
//! in one transaction (shared with the other writes waiting at that moment, see
//! [`crate::writer`]), so an event takes effect once however often it is delivered.

use std::collections::{HashMap, HashSet};

use sqlx::{AnyConnection, AssertSqlSafe};
use tally_core::rules::{self, Snapshot};
use tally_core::{BillingEvent, EventKind};

use crate::model::{IngestOutcome, NewEvent, Outcome, StoredEvent, TriggerState};
use crate::unit::{NewEventRow, Unit, placeholders};
use crate::writer::{Done, Work};
use crate::{Store, StoreError};

impl Store {
    /// Records `event` and applies it. A delivery of an event already applied is a
    /// duplicate; one that was unmatched or unreadable before is applied again.
    pub async fn ingest(&self, event: NewEvent<'_>) -> Result<IngestOutcome, StoreError> {
        let delivery = Delivery {
            id: event.id.to_owned(),
            event_type: event.event_type.to_owned(),
            created: event.created,
            livemode: event.livemode,
            payload: event.payload.to_owned(),
            event: event.event.cloned().map_err(str::to_owned),
        };
        match self.writer.submit(Work::Ingest(Box::new(delivery))).await? {
            Done::Ingested(outcome) => Ok(outcome),
            Done::Billing(_) => unreachable!("an event is answered with its outcome"),
        }
    }

    /// One stored event.
    pub async fn event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let sql = "select id, type, created, payload, outcome, note, user_id, attempts from events where id = $1";
        Ok(self.events_where(sql, id).await?.pop())
    }

    /// How many events the inbox holds.
    pub async fn count_events(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("select count(*) from events").fetch_one(&self.pool).await?)
    }

    /// Stored events with this outcome, oldest first.
    pub async fn events_with_outcome(&self, outcome: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = "select id, type, created, payload, outcome, note, user_id, attempts from events
                   where outcome = $1 order by received_at, id";
        self.events_where(sql, outcome).await
    }

    async fn events_where(&self, sql: &'static str, value: &str) -> Result<Vec<StoredEvent>, StoreError> {
        type Row = (String, String, i64, String, String, Option<String>, Option<String>, i64);
        let rows: Vec<Row> = sqlx::query_as(sql).bind(value).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(id, event_type, created, payload, outcome, note, user_id, attempts)| StoredEvent {
                id,
                event_type,
                created,
                payload,
                outcome,
                note,
                user_id,
                attempts,
            })
            .collect())
    }

    /// The Stripe state of a user that `tally trigger` continues from.
    pub async fn trigger_state(&self, user_id: &str) -> Result<TriggerState, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let customer: Option<Option<String>> =
            sqlx::query_scalar("select stripe_customer_id from accounts where user_id = $1")
                .bind(user_id)
                .fetch_optional(&mut *conn)
                .await?;
        // id, status, plan, price, current period end
        type Row = (String, String, Option<String>, Option<String>, Option<i64>);
        let subscription: Option<Row> = sqlx::query_as(
            "select id, status, plan, price_id, current_period_end from subscriptions where user_id = $1
             order by updated_at desc, id desc limit 1",
        )
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
        let mut state = TriggerState { customer: customer.flatten(), ..TriggerState::default() };
        if let Some((id, status, plan, price_id, period_end)) = subscription {
            state.price_id = price_id;
            state.latest_period =
                sqlx::query_scalar("select max(start) from periods where subscription_id = $1 and granted is not null")
                    .bind(&id)
                    .fetch_one(&mut *conn)
                    .await?;
            state.current_period_end = period_end;
            state.subscription = Some((id, status, plan));
        }
        state.topup = sqlx::query_as(
            "select payment_intent, credits from topups where user_id = $1 and payment_intent is not null
             order by session_id desc limit 1",
        )
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(state)
    }
}

/// A verified event, owned, as it waits for the writer.
pub(crate) struct Delivery {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub livemode: bool,
    pub payload: String,
    pub event: Result<BillingEvent, String>,
}

/// Counts a new delivery of each stored event among `ids` and locks it, so concurrent
/// deliveries of one event queue here; returns the outcome each has so far. An id not
/// returned is new: it is stored, with its outcome, once the batch has applied it.
pub(crate) async fn claim<'k>(
    conn: &mut AnyConnection,
    ids: impl Iterator<Item = &'k str>,
) -> Result<HashMap<String, String>, StoreError> {
    let ids: Vec<&str> = ids.collect::<HashSet<_>>().into_iter().collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "update events set attempts = attempts + 1 where id in ({}) returning id, outcome",
        placeholders(1, ids.len())
    );
    let mut query = sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id);
    }
    Ok(query.fetch_all(conn).await?.into_iter().collect())
}

/// Finds the user, reads what the event touches, and keeps what the rules say for the
/// batch to write.
pub(crate) async fn apply_event(unit: &mut Unit<'_>, event: &BillingEvent) -> Result<IngestOutcome, StoreError> {
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

/// An event id the batch was delivered, and what became of it.
#[derive(Default)]
pub(crate) struct Delivered<'a> {
    pub delivery: Option<&'a Delivery>,
    /// The outcome stored before this batch; `None` for an event new to the inbox.
    pub stored: Option<String>,
    /// The outcome of its latest application in this batch.
    pub outcome: Option<IngestOutcome>,
    /// Deliveries in this batch after the first.
    pub redeliveries: i64,
}

impl Delivered<'_> {
    pub fn outcome_so_far(&self) -> Option<&str> {
        self.outcome.as_ref().map(|o| o.outcome.as_str()).or(self.stored.as_deref())
    }

    /// Hands the event's row to the unit: a new event is stored with its outcome, a
    /// stored one gets its new outcome (if applied again) and its deliveries counted.
    pub fn keep(self, unit: &mut Unit<'_>) {
        let Some(d) = self.delivery else { return };
        match (self.stored, self.outcome) {
            (None, Some(outcome)) => unit.events.push(NewEventRow {
                id: d.id.clone(),
                event_type: d.event_type.clone(),
                created: d.created,
                livemode: d.livemode,
                payload: d.payload.clone(),
                outcome,
                attempts: 1 + self.redeliveries,
            }),
            (Some(_), outcome) if outcome.is_some() || self.redeliveries > 0 => {
                unit.outcomes.push((d.id.clone(), outcome, self.redeliveries));
            }
            _ => {}
        }
    }
}
