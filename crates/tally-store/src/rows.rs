//! Loading and writing the rows the credit rules work on, inside a transaction.

use sqlx::AnyConnection;
use tally_core::rules::{Changes, Period, SubscriptionState, Topup, TopupKey};
use tally_core::{Account, Catalog, Entry, Ledger, Plan};

use crate::{StoreError, now};

type Conn = AnyConnection;

fn plan(s: Option<String>) -> Option<Plan> {
    s.as_deref().and_then(Plan::parse)
}

/// Creates the user's account with the free allowance if it does not exist yet.
pub async fn ensure_account(conn: &mut Conn, user_id: &str, catalog: &Catalog) -> Result<(), StoreError> {
    let account = Account::new_user(user_id, catalog);
    let t = now();
    let created = sqlx::query(
        "insert into accounts (user_id, tier, plan_credits, topup_credits, created_at, updated_at)
         values ($1, $2, $3, 0, $4, $4) on conflict (user_id) do nothing",
    )
    .bind(user_id)
    .bind(account.tier.as_str())
    .bind(account.plan_credits)
    .bind(t)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if created == 1 {
        insert_entries(conn, user_id, &[account.opening_entry()], t).await?;
    }
    Ok(())
}

/// Reads the account and holds its row until the transaction ends. The lock is taken
/// with an update, which both backends understand: Postgres locks the row, SQLite the file.
/// `reserved` counts the live holds, but not `except` (a hold being settled).
pub async fn lock_account(conn: &mut Conn, user_id: &str, except: Option<&str>) -> Result<Account, StoreError> {
    let t = now();
    let (tier, plan_credits, topup_credits, funded_by, funded_at): (String, i64, i64, Option<String>, i64) =
        sqlx::query_as(
            "update accounts set updated_at = $2 where user_id = $1
             returning tier, plan_credits, topup_credits, funded_by, funded_at",
        )
        .bind(user_id)
        .bind(t)
        .fetch_one(&mut *conn)
        .await?;
    let reserved = reserved_credits(conn, user_id, except, t).await?;
    Ok(Account {
        user_id: user_id.to_owned(),
        tier: Plan::parse(&tier).unwrap_or(Plan::Free),
        plan_credits,
        topup_credits,
        funded_by,
        funded_at,
        reserved,
    })
}

/// The credits held by the user's live reservations at time `t`.
pub async fn reserved_credits(conn: &mut Conn, user_id: &str, except: Option<&str>, t: i64) -> Result<i64, StoreError> {
    let held: i64 = sqlx::query_scalar(
        "select cast(coalesce(sum(amount), 0) as bigint) from reservations
         where user_id = $1 and status = 'held' and expires_at > $2 and id <> $3",
    )
    .bind(user_id)
    .bind(t)
    .bind(except.unwrap_or(""))
    .fetch_one(&mut *conn)
    .await?;
    Ok(held)
}

/// Writes the account's new balances and the entries that explain them.
pub async fn write_ledger(conn: &mut Conn, ledger: &Ledger) -> Result<(), StoreError> {
    let a = &ledger.account;
    let t = now();
    sqlx::query(
        "update accounts set tier = $2, plan_credits = $3, topup_credits = $4, funded_by = $5, funded_at = $6,
             updated_at = $7
         where user_id = $1",
    )
    .bind(&a.user_id)
    .bind(a.tier.as_str())
    .bind(a.plan_credits)
    .bind(a.topup_credits)
    .bind(a.funded_by.as_deref())
    .bind(a.funded_at)
    .bind(t)
    .execute(&mut *conn)
    .await?;
    insert_entries(conn, &a.user_id, &ledger.entries, t).await
}

async fn insert_entries(conn: &mut Conn, user_id: &str, entries: &[Entry], t: i64) -> Result<(), StoreError> {
    for e in entries {
        sqlx::query(
            "insert into ledger (user_id, bucket, delta, balance_after, reason, reference, created_at)
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(user_id)
        .bind(e.bucket.as_str())
        .bind(e.delta)
        .bind(e.balance_after)
        .bind(&e.reason)
        .bind(&e.reference)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn load_subscription(conn: &mut Conn, id: &str) -> Result<Option<SubscriptionState>, StoreError> {
    type Row = (String, String, Option<String>, Option<i64>, i64, i64);
    let row: Option<Row> = sqlx::query_as(
        "select user_id, status, plan, current_period_end, cancel_at_period_end, state_at
         from subscriptions where id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(user_id, status, p, current_period_end, cancel, state_at)| SubscriptionState {
        id: id.to_owned(),
        user_id,
        status,
        plan: plan(p),
        current_period_end,
        cancel_at_period_end: cancel != 0,
        state_at,
    }))
}

pub async fn load_period(conn: &mut Conn, subscription_id: &str, start: i64) -> Result<Option<Period>, StoreError> {
    let row: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("select seen, granted from periods where subscription_id = $1 and start = $2")
            .bind(subscription_id)
            .bind(start)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(seen, granted)| Period {
        subscription_id: subscription_id.to_owned(),
        start,
        seen: plan(seen),
        granted: plan(granted),
    }))
}

/// The start of the newest period of the subscription that has granted its allowance.
pub async fn latest_granted(conn: &mut Conn, subscription_id: &str) -> Result<Option<i64>, StoreError> {
    let start: Option<i64> =
        sqlx::query_scalar("select max(start) from periods where subscription_id = $1 and granted is not null")
            .bind(subscription_id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(start)
}

pub async fn load_topup(conn: &mut Conn, key: TopupKey<'_>) -> Result<Option<Topup>, StoreError> {
    let (sql, value) = match key {
        TopupKey::Session(id) => (
            "select session_id, user_id, payment_intent, credits, refunded_credits from topups where session_id = $1",
            id,
        ),
        TopupKey::PaymentIntent(id) => (
            "select session_id, user_id, payment_intent, credits, refunded_credits from topups where payment_intent = $1",
            id,
        ),
    };
    let row: Option<(String, String, Option<String>, i64, i64)> =
        sqlx::query_as(sql).bind(value).fetch_optional(&mut *conn).await?;
    Ok(row.map(|(session_id, user_id, payment_intent, credits, refunded_credits)| Topup {
        session_id,
        user_id,
        payment_intent,
        credits,
        refunded_credits,
    }))
}

/// Writes everything the credit rules changed.
pub async fn write_changes(conn: &mut Conn, changes: &Changes) -> Result<(), StoreError> {
    if !changes.ledger.entries.is_empty() || changes.period.is_some() {
        write_ledger(conn, &changes.ledger).await?;
    }
    if let Some(s) = &changes.subscription {
        sqlx::query(
            "insert into subscriptions (id, user_id, status, plan, current_period_end, cancel_at_period_end, state_at, updated_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8)
             on conflict (id) do update set status = excluded.status, plan = excluded.plan,
                 current_period_end = excluded.current_period_end,
                 cancel_at_period_end = excluded.cancel_at_period_end,
                 state_at = excluded.state_at, updated_at = excluded.updated_at",
        )
        .bind(&s.id)
        .bind(&s.user_id)
        .bind(&s.status)
        .bind(s.plan.map(Plan::as_str))
        .bind(s.current_period_end)
        .bind(i64::from(s.cancel_at_period_end))
        .bind(s.state_at)
        .bind(now())
        .execute(&mut *conn)
        .await?;
    }
    if let Some(p) = &changes.period {
        sqlx::query(
            "insert into periods (subscription_id, start, seen, granted) values ($1, $2, $3, $4)
             on conflict (subscription_id, start) do update set seen = excluded.seen, granted = excluded.granted",
        )
        .bind(&p.subscription_id)
        .bind(p.start)
        .bind(p.seen.map(Plan::as_str))
        .bind(p.granted.map(Plan::as_str))
        .execute(&mut *conn)
        .await?;
    }
    if let Some(t) = &changes.topup {
        sqlx::query(
            "insert into topups (session_id, user_id, payment_intent, credits, refunded_credits) values ($1, $2, $3, $4, $5)
             on conflict (session_id) do update set refunded_credits = excluded.refunded_credits",
        )
        .bind(&t.session_id)
        .bind(&t.user_id)
        .bind(t.payment_intent.as_deref())
        .bind(t.credits)
        .bind(t.refunded_credits)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
