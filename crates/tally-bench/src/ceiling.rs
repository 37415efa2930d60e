//! The ceiling: the same durable transaction issued straight to Postgres, with nothing
//! between the client and the database: one connection per worker, held for the whole
//! run (no pool, so no pool pings), statements prepared once per connection.
//!
//! - ingest: `insert` the event (jsonb, the same ~3-5 KB body tally gets) `on conflict
//!   do nothing`, and when it is new, `update` its user: 4 round trips with begin/commit.
//! - spend: the conditional debit `update ... where balance >= amount returning`, and
//!   when it took, `insert` the ledger row: 4 round trips.
//!
//! The same statements are in `bench/*.sql` for pgbench.

use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};
use tokio::sync::Mutex;

use crate::seed::{HOT_CREDITS, SPREAD_CREDITS};
use crate::workload::{HOT_USER, spread_user, unix_now};

pub const SCHEMA: &str = "
drop table if exists c_events, c_users, c_ledger;
create table c_users (user_id text primary key, balance bigint not null check (balance >= 0), updated_at bigint not null);
create table c_events (id text primary key, type text not null, payload jsonb not null, user_id text not null, received_at bigint not null);
create table c_ledger (id bigserial primary key, user_id text not null, delta bigint not null, reference text not null unique, created_at bigint not null);
";

/// Creates the ceiling's tables and its users: u0..u{users-1} and the hot one.
pub async fn setup(url: &str, users: usize) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;
    sqlx::query(AssertSqlSafe(format!(
        "insert into c_users (user_id, balance, updated_at)
         select 'u' || g, {SPREAD_CREDITS}, 0 from generate_series(0, {}) g",
        users as i64 - 1
    )))
    .execute(&pool)
    .await?;
    sqlx::query("insert into c_users (user_id, balance, updated_at) values ($1, $2, 0)")
        .bind(HOT_USER)
        .bind(HOT_CREDITS)
        .execute(&pool)
        .await?;
    sqlx::raw_sql("vacuum analyze c_users").execute(&pool).await?;
    pool.close().await;
    Ok(())
}

/// One open connection per worker.
pub struct Conns(Vec<Mutex<PgConnection>>);

impl Conns {
    pub async fn open(url: &str, c: usize) -> anyhow::Result<Conns> {
        let mut conns = Vec::with_capacity(c);
        for _ in 0..c {
            conns.push(Mutex::new(PgConnection::connect(url).await?));
        }
        Ok(Conns(conns))
    }

    /// The connection of `worker` (only that worker uses it).
    pub fn of(&self, worker: usize) -> &Mutex<PgConnection> {
        &self.0[worker % self.0.len()]
    }

    pub async fn close(self) {
        for conn in self.0 {
            let _ = conn.into_inner().close().await;
        }
    }
}

/// Records an event and credits its user, once.
pub async fn ingest(
    conn: &mut PgConnection,
    id: &str,
    event_type: &str,
    payload: &str,
    user: &str,
) -> Result<(), String> {
    let t = unix_now();
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    let inserted = sqlx::query(
        "insert into c_events (id, type, payload, user_id, received_at) values ($1, $2, $3::jsonb, $4, $5)
         on conflict (id) do nothing",
    )
    .bind(id)
    .bind(event_type)
    .bind(payload)
    .bind(user)
    .bind(t)
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?
    .rows_affected();
    if inserted == 1 {
        sqlx::query("update c_users set balance = balance + 100, updated_at = $2 where user_id = $1")
            .bind(user)
            .bind(t)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())
}

/// Debits `amount` if the balance allows, with its ledger row.
pub async fn spend(conn: &mut PgConnection, user: &str, amount: i64, reference: &str) -> Result<(), String> {
    let t = unix_now();
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    let row = sqlx::query(
        "update c_users set balance = balance - $2, updated_at = $3 where user_id = $1 and balance >= $2
         returning balance",
    )
    .bind(user)
    .bind(amount)
    .bind(t)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    let Some(row) = row else {
        return Err(format!("insufficient balance for {user}"));
    };
    let _balance: i64 = row.get(0);
    sqlx::query("insert into c_ledger (user_id, delta, reference, created_at) values ($1, $2, $3, $4)")
        .bind(user)
        .bind(-amount)
        .bind(reference)
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())
}

pub async fn count(url: &str, sql: &'static str, pattern: &str) -> anyhow::Result<i64> {
    let mut conn = PgConnection::connect(url).await?;
    let n = sqlx::query_scalar(sql).bind(pattern).fetch_one(&mut conn).await?;
    conn.close().await?;
    Ok(n)
}

/// The user a ceiling ingest event updates.
pub fn event_user(event: usize, users: usize) -> String {
    spread_user((event / 3) % users.max(1))
}
