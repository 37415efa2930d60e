//! Seeding tally's database with the spend users, and the state checks run after each
//! workload. The seed writes what tally itself would (an account and the ledger rows
//! that explain its balance), in bulk, so that 100k users take a second, not minutes.

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe};

use crate::workload::{HOT_USER, spread_user, unix_now};

/// Credits the hot user starts with (top-up bucket), enough for any run.
pub const HOT_CREDITS: i64 = 1_000_000_000;
/// Credits each spread user starts with (the free plan's allowance).
pub const SPREAD_CREDITS: i64 = 100;

pub async fn pool(url: &str) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let url = match url.starts_with("postgres") {
        // tally's tables are in its own schema (TALLY_DB_SCHEMA, default here).
        true => tally_store::postgres::url_in_schema(url, tally_store::postgres::DEFAULT_SCHEMA),
        false => url.to_owned(),
    };
    Ok(AnyPoolOptions::new().max_connections(2).connect(&url).await?)
}

/// Accounts u0..u{users-1} with the free allowance, and the hot user with a large top-up.
pub async fn seed_users(pool: &AnyPool, users: usize) -> anyhow::Result<()> {
    let t = unix_now();
    let mut start = 0;
    while start < users {
        let end = (start + 1000).min(users);
        let names: Vec<String> = (start..end).map(spread_user).collect();
        insert_accounts(pool, &names, t, 0).await?;
        start = end;
    }
    insert_accounts(pool, &[HOT_USER.to_owned()], t, HOT_CREDITS).await?;
    Ok(())
}

async fn insert_accounts(pool: &AnyPool, users: &[String], t: i64, topup: i64) -> anyhow::Result<()> {
    let accounts: Vec<String> =
        users.iter().map(|u| format!("('{u}', 'free', {SPREAD_CREDITS}, {topup}, {t}, {t})")).collect();
    let mut ledger: Vec<String> = users
        .iter()
        .map(|u| format!("('{u}', 'plan', {SPREAD_CREDITS}, {SPREAD_CREDITS}, 'signup', 'signup:{u}', {t})"))
        .collect();
    if topup > 0 {
        ledger.extend(
            users.iter().map(|u| format!("('{u}', 'topup', {topup}, {topup}, 'grant', 'grant:bench-{u}', {t})")),
        );
    }
    let mut tx = pool.begin().await?;
    sqlx::query(AssertSqlSafe(format!(
        "insert into accounts (user_id, tier, plan_credits, topup_credits, created_at, updated_at) values {}",
        accounts.join(",")
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "insert into ledger (user_id, bucket, delta, balance_after, reason, reference, created_at) values {}",
        ledger.join(",")
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Ledger rows whose reference starts with `prefix`.
pub async fn ledger_rows_like(pool: &AnyPool, prefix: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("select count(*) from ledger where reference like $1")
        .bind(format!("{prefix}%"))
        .fetch_one(pool)
        .await?)
}

/// Reservations with this key prefix and status.
pub async fn reservations_like(pool: &AnyPool, prefix: &str, status: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("select count(*) from reservations where idempotency_key like $1 and status = $2")
        .bind(format!("{prefix}%"))
        .bind(status)
        .fetch_one(pool)
        .await?)
}

/// `n` processed events of the users, stored as tally stores them (a real invoice.paid
/// body each, ids random like Stripe's), in bulk: what a database holds after months.
pub async fn store_events(pool: &AnyPool, n: usize, users: usize) -> anyhow::Result<()> {
    let body = crate::workload::ingest("grow", 1, 0.0).events.swap_remove(0).body;
    let t = unix_now();
    let batch = 50_000;
    for from in (0..n).step_by(batch) {
        let count = batch.min(n - from);
        sqlx::query(
            "insert into events (id, type, created, livemode, payload, outcome, user_id, received_at, attempts)
             select 'evt_' || md5(random()::text || g::text), 'invoice.paid', $1, 0,
                    replace($2, 'grow-u0', 'u' || (g % $3)), 'processed', 'u' || (g % $3), $1, 1
             from generate_series(1, $4) g",
        )
        .bind(t)
        .bind(&body)
        .bind(users.max(1) as i64)
        .bind(count as i64)
        .execute(pool)
        .await?;
    }
    Ok(())
}
