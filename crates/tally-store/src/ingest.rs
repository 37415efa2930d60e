//! The webhook inbox: record a verified event under its unique id and apply its effects,
//! in one transaction, so an event takes effect once however often it is delivered.

use sqlx::AnyConnection;
use tally_core::rules::{self, Snapshot};
use tally_core::{BillingEvent, Catalog, EventKind};

use crate::model::{IngestOutcome, NewEvent, Outcome, StoredEvent, TriggerState};
use crate::rows;
use crate::{Store, StoreError, now};

impl Store {
    /// Records `event` and applies it. A delivery of an event already applied is a
    /// duplicate; one that was unmatched or unreadable before is applied again.
    pub async fn ingest(&self, event: NewEvent<'_>, catalog: &Catalog) -> Result<IngestOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "insert into events (id, type, created, livemode, payload, outcome, received_at, attempts)
             values ($1, $2, $3, $4, $5, 'pending', $6, 1) on conflict (id) do nothing",
        )
        .bind(event.id)
        .bind(event.event_type)
        .bind(event.created)
        .bind(i64::from(event.livemode))
        .bind(event.payload)
        .bind(now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // The update locks the stored event, so concurrent deliveries queue here.
            let prior: String =
                sqlx::query_scalar("update events set attempts = attempts + 1 where id = $1 returning outcome")
                    .bind(event.id)
                    .fetch_one(&mut *tx)
                    .await?;
            if !Outcome::retryable(&prior) {
                tx.commit().await?;
                return Ok(IngestOutcome { outcome: Outcome::Duplicate, user_id: None, note: None });
            }
        }
        let result = match event.event {
            Ok(billing_event) => apply(&mut tx, billing_event, catalog).await?,
            Err(reason) => IngestOutcome { outcome: Outcome::Failed, user_id: None, note: Some(reason.to_owned()) },
        };
        sqlx::query("update events set outcome = $2, note = $3, user_id = $4 where id = $1")
            .bind(event.id)
            .bind(result.outcome.as_str())
            .bind(result.note.as_deref())
            .bind(result.user_id.as_deref())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(result)
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
        let subscription: Option<(String, String, Option<String>, Option<i64>)> = sqlx::query_as(
            "select id, status, plan, current_period_end from subscriptions where user_id = $1
             order by updated_at desc, id desc limit 1",
        )
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
        let mut state = TriggerState { customer: customer.flatten(), ..TriggerState::default() };
        if let Some((id, status, plan, period_end)) = subscription {
            state.latest_period = rows::load_subscription_context(&mut conn, &id, None).await?.latest_granted;
            state.current_period_end = period_end;
            state.subscription = Some((id, status, plan.as_deref().and_then(tally_core::Plan::parse)));
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

/// Finds the user, loads and locks what the event touches, and writes what the rules say.
async fn apply(conn: &mut AnyConnection, event: &BillingEvent, catalog: &Catalog) -> Result<IngestOutcome, StoreError> {
    if event.kind == EventKind::Unhandled {
        return Ok(IngestOutcome {
            outcome: Outcome::Ignored,
            user_id: None,
            note: Some("event type not handled".into()),
        });
    }
    let Some(user_id) = find_user(conn, &event.kind).await? else {
        return Ok(IngestOutcome { outcome: Outcome::Unmatched, user_id: None, note: Some("no user found".into()) });
    };
    let rows::Locked { mut account, customer } = rows::open_and_lock(conn, &user_id, catalog).await?;
    let mut linked = false;
    if let (None, Some(new)) = (customer, event.kind.owner().and_then(|o| o.customer.as_deref())) {
        linked = link_customer(conn, &user_id, new).await?;
    }
    if let EventKind::ChargeRefunded(_) = event.kind {
        // A refund takes only credits that are not held.
        account.reserved = rows::reserved_credits(conn, &user_id, None, now()).await?;
    }
    let context = match event.kind.subscription_id() {
        Some(id) => Some(rows::load_subscription_context(conn, id, rules::period_of(&event.kind)).await?),
        None => None,
    };
    let (subscription, period, latest_granted) = match context {
        Some(c) => (c.subscription, c.period, c.latest_granted),
        None => (None, None, None),
    };
    let snapshot = Snapshot {
        account,
        subscription,
        period,
        latest_granted,
        topup: match rules::topup_of(&event.kind) {
            Some(key) => rows::load_topup(conn, key).await?,
            None => None,
        },
    };
    let changes = rules::apply(event, snapshot, catalog);
    rows::write_changes(conn, &changes).await?;
    let outcome = if changes.unmatched {
        Outcome::Unmatched
    } else if changes.changed_anything() || (linked && matches!(event.kind, EventKind::CustomerChanged(_))) {
        Outcome::Applied
    } else {
        Outcome::Ignored
    };
    Ok(IngestOutcome { outcome, user_id: Some(user_id), note: changes.note.map(str::to_owned) })
}

/// The user an event is about: named in its metadata, or known by its subscription,
/// its Stripe customer, or (for refunds) its top-up's payment intent.
async fn find_user(conn: &mut AnyConnection, kind: &EventKind) -> Result<Option<String>, StoreError> {
    let owner = kind.owner();
    if let Some(user) = owner.and_then(|o| o.user_id.clone()) {
        return Ok(Some(user));
    }
    let lookups = [
        ("select user_id from subscriptions where id = $1", kind.subscription_id()),
        ("select user_id from accounts where stripe_customer_id = $1", owner.and_then(|o| o.customer.as_deref())),
        ("select user_id from topups where payment_intent = $1", kind.payment_intent()),
    ];
    for (sql, key) in lookups {
        let Some(key) = key else { continue };
        let user: Option<String> = sqlx::query_scalar(sql).bind(key).fetch_optional(&mut *conn).await?;
        if user.is_some() {
            return Ok(user);
        }
    }
    Ok(None)
}

/// Remembers the user's Stripe customer, unless another user already has it; says
/// whether it did.
async fn link_customer(conn: &mut AnyConnection, user_id: &str, customer: &str) -> Result<bool, StoreError> {
    let linked = sqlx::query(
        "update accounts set stripe_customer_id = $2 where user_id = $1 and stripe_customer_id is null
         and not exists (select 1 from accounts where stripe_customer_id = $2)",
    )
    .bind(user_id)
    .bind(customer)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(linked == 1)
}
