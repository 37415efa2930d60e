//! Loading and writing the rows the credit rules work on, inside a transaction.

use sqlx::AnyConnection;
use tally_core::rules::{Changes, Period, SubscriptionState, Topup, TopupKey};
use tally_core::{Account, Catalog, Entry, Ledger, Plan};

use crate::{StoreError, now};

type Conn = AnyConnection;

fn plan(s: Option<String>) -> Option<Plan> {
    s.as_deref().and_then(Plan::parse)
}

/// The account, locked, with the Stripe customer tally knows for it.
pub struct Locked {
    pub account: Account,
    pub customer: Option<String>,
}

/// Locks and reads the user's account, opening it first (with the free allowance and
/// its ledger row) if the user is new. Reserved credits are not counted here; callers
/// that spend add them with [`reserved_credits`].
pub async fn open_and_lock(conn: &mut Conn, user_id: &str, catalog: &Catalog) -> Result<Locked, StoreError> {
    if let Some(locked) = lock(conn, user_id).await? {
        return Ok(locked);
    }
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
        // The row is ours until commit: no one else can see it, let alone change it.
        insert_entries(conn, user_id, &[account.opening_entry()], t).await?;
        return Ok(Locked { account, customer: None });
    }
    // Another transaction opened it first; wait for it like any other lock.
    lock(conn, user_id).await?.ok_or_else(|| StoreError::NotFound(format!("account {user_id}")))
}

/// `tier, plan_credits, topup_credits, funded_by, funded_at` of an accounts row.
pub type AccountRow = (String, i64, i64, Option<String>, i64);

/// The account a row describes; reserved credits are counted separately.
pub fn account(user_id: &str, (tier, plan_credits, topup_credits, funded_by, funded_at): AccountRow) -> Account {
    Account {
        user_id: user_id.to_owned(),
        tier: Plan::parse(&tier).unwrap_or(Plan::Free),
        plan_credits,
        topup_credits,
        funded_by,
        funded_at,
        reserved: 0,
    }
}

/// Holds the account row until the transaction ends. The lock is taken with an update,
/// which both backends understand: Postgres locks the row, SQLite the file.
async fn lock(conn: &mut Conn, user_id: &str) -> Result<Option<Locked>, StoreError> {
    type Row = (String, i64, i64, Option<String>, i64, Option<String>);
    let row: Option<Row> = sqlx::query_as(
        "update accounts set updated_at = $2 where user_id = $1
         returning tier, plan_credits, topup_credits, funded_by, funded_at, stripe_customer_id",
    )
    .bind(user_id)
    .bind(now())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(tier, plan_credits, topup_credits, funded_by, funded_at, customer)| Locked {
        account: account(user_id, (tier, plan_credits, topup_credits, funded_by, funded_at)),
        customer,
    }))
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

/// What a subscription event touches: the subscription, one of its periods, and the
/// start of its newest granted period, in one round trip.
pub struct SubscriptionContext {
    pub subscription: Option<SubscriptionState>,
    pub period: Option<Period>,
    pub latest_granted: Option<i64>,
}

pub async fn load_subscription_context(
    conn: &mut Conn,
    id: &str,
    period_start: Option<i64>,
) -> Result<SubscriptionContext, StoreError> {
    type Row = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<i64>,
    );
    let (user_id, status, p, current_period_end, cancel, state_at, start, seen, granted, latest): Row = sqlx::query_as(
        "select s.user_id, s.status, s.plan, s.current_period_end, s.cancel_at_period_end, s.state_at,
                p.start, p.seen, p.granted,
                (select max(start) from periods where subscription_id = $1 and granted is not null)
         from (select 1 as one) as one
         left join subscriptions s on s.id = $1
         left join periods p on p.subscription_id = $1 and p.start = $2",
    )
    .bind(id)
    // No period is named i64::MIN, so an event without one matches none.
    .bind(period_start.unwrap_or(i64::MIN))
    .fetch_one(&mut *conn)
    .await?;
    let subscription = match (user_id, status) {
        (Some(user_id), Some(status)) => Some(SubscriptionState {
            id: id.to_owned(),
            user_id,
            status,
            plan: plan(p),
            current_period_end,
            cancel_at_period_end: cancel.unwrap_or(0) != 0,
            state_at: state_at.unwrap_or(0),
        }),
        _ => None,
    };
    let period =
        start.map(|start| Period { subscription_id: id.to_owned(), start, seen: plan(seen), granted: plan(granted) });
    Ok(SubscriptionContext { subscription, period, latest_granted: latest })
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
