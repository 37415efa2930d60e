//! One account, locked, read and written inside a transaction: the path of holds and of
//! checkout's customer link (webhooks and spends go through [`crate::unit`]).

use sqlx::AnyConnection;
use tally_core::{Account, Catalog, Entry, Ledger, Plan};

use crate::{StoreError, now};

type Conn = AnyConnection;

/// Locks and reads the user's account, opening it first (with the free allowance and
/// its ledger row) if the user is new. Reserved credits are not counted here; callers
/// that spend add them with [`reserved_credits`].
pub async fn open_and_lock(conn: &mut Conn, user_id: &str, catalog: &Catalog) -> Result<Account, StoreError> {
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
        return Ok(account);
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
async fn lock(conn: &mut Conn, user_id: &str) -> Result<Option<Account>, StoreError> {
    let row: Option<AccountRow> = sqlx::query_as(
        "update accounts set updated_at = $2 where user_id = $1
         returning tier, plan_credits, topup_credits, funded_by, funded_at",
    )
    .bind(user_id)
    .bind(now())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|row| account(user_id, row)))
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
