//! What the store answers without writing: balances, the ledger, the inbox, and what
//! `tally trigger` continues from.

use crate::model::{Billing, LedgerRow, StoredEvent, TriggerState};
use crate::views::billing_of;
use crate::{Store, StoreError, now, rows};
use tally_core::Account;

impl Store {
    /// The user's billing state; a user tally has never seen is a new free user.
    pub async fn billing(&self, user_id: &str) -> Result<Billing, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row: Option<rows::AccountRow> = sqlx::query_as(
            "select tier, plan_credits, topup_credits, funded_by, funded_at from accounts where user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
        let account = match row {
            Some(row) => {
                let mut account = rows::account(user_id, row);
                account.reserved = rows::reserved_credits(&mut conn, user_id, now()).await?;
                account
            }
            None => Account::new_user(user_id, &self.catalogue),
        };
        billing_of(&mut conn, account).await
    }

    /// The user's Stripe customer, if tally knows one.
    pub async fn stripe_customer(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let customer: Option<Option<String>> =
            sqlx::query_scalar("select stripe_customer_id from accounts where user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(customer.flatten())
    }

    /// The price a subscription is on, when an event has named it.
    pub async fn subscription_price(&self, subscription_id: &str) -> Result<Option<String>, StoreError> {
        let price: Option<Option<String>> = sqlx::query_scalar("select price_id from subscriptions where id = $1")
            .bind(subscription_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(price.flatten())
    }

    /// The user's ledger rows, newest first, up to `limit`, older than row `before`.
    pub async fn ledger(&self, user_id: &str, limit: i64, before: Option<i64>) -> Result<Vec<LedgerRow>, StoreError> {
        type Row = (i64, String, i64, i64, String, String, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "select id, bucket, delta, balance_after, reason, reference, created_at from ledger
             where user_id = $1 and id < $3 order by id desc limit $2",
        )
        .bind(user_id)
        .bind(limit)
        .bind(before.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, bucket, delta, balance_after, reason, reference, created_at)| LedgerRow {
                id,
                bucket,
                delta,
                balance_after,
                reason,
                reference,
                created_at,
            })
            .collect())
    }

    /// Whether every account's balances equal the sums of its ledger rows; the users
    /// where they do not.
    pub async fn unbalanced_accounts(&self) -> Result<Vec<String>, StoreError> {
        let users: Vec<String> = sqlx::query_scalar(
            "select a.user_id from accounts a
             left join (select user_id,
                     cast(sum(case when bucket = 'plan' then delta else 0 end) as bigint) as plan_sum,
                     cast(sum(case when bucket = 'topup' then delta else 0 end) as bigint) as topup_sum
                 from ledger group by user_id) l on l.user_id = a.user_id
             where coalesce(l.plan_sum, 0) <> a.plan_credits or coalesce(l.topup_sum, 0) <> a.topup_credits",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(users)
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

    /// Unmatched events that can apply now: what each waits for (see `ingest::Waits`)
    /// has come, its customer linked to a user or its top-up in. Only those of the last
    /// three days (Stripe's own retries stop then; older ones are the operator's `tally
    /// replay`), and not one tried `MAX_TRIES` times already, so an event the rules
    /// still keep waiting is not tried forever.
    pub async fn events_to_retry(&self, now: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = "select id, type, created, payload, outcome, note, user_id, attempts from events e
                   where outcome = 'unmatched' and received_at >= $1 and attempts < $2
                     and (exists (select 1 from accounts a where a.stripe_customer_id = e.waits_customer)
                          or exists (select 1 from topups t where t.payment_intent = e.waits_intent))
                   order by received_at, id limit $3";
        let query = sqlx::query_as(sql).bind(now - RETRY_WINDOW).bind(MAX_TRIES).bind(limit);
        Ok(stored_events(query.fetch_all(&self.pool).await?))
    }

    async fn events_where(&self, sql: &'static str, value: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(sql).bind(value).fetch_all(&self.pool).await?;
        Ok(stored_events(rows))
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

/// How far back unmatched events are retried: Stripe's own retries stop after three days.
const RETRY_WINDOW: i64 = 3 * 24 * 3600;

/// Deliveries and tries of one event after which tally stops trying it by itself.
const MAX_TRIES: i64 = 100;

type EventRow = (String, String, i64, String, String, Option<String>, Option<String>, i64);

fn stored_events(rows: Vec<EventRow>) -> Vec<StoredEvent> {
    rows.into_iter()
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
        .collect()
}
