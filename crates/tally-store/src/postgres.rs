//! Postgres: a pool sized for a server, tally's own schema in a database it may share
//! with the app (Supabase), and its migrations.
//!
//! Every connection's `search_path` is tally's schema alone, so that the same unqualified
//! SQL as on SQLite reaches tally's tables and never an app's table of the same name.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe};

use crate::StoreError;
use crate::migrate::Migrations;

pub const MIGRATIONS: Migrations = &[
    (20261127000001, include_str!("../migrations/postgres/20261127000001_init.sql")),
    // The same SQL on both backends from here on.
    (20261127000002, include_str!("../migrations/common/20261127000002_reservations.sql")),
    (20261127000003, include_str!("../migrations/common/20261127000003_funded_at.sql")),
    (20261201000004, include_str!("../migrations/common/20261201000004_catalogue.sql")),
    (20261202000005, include_str!("../migrations/common/20261202000005_handoffs.sql")),
    (20261202000006, include_str!("../migrations/postgres/20261202000006_profiles.sql")),
    (20261202000007, include_str!("../migrations/common/20261202000007_signature_failures.sql")),
    (20261203000008, include_str!("../migrations/common/20261203000008_waiting_events.sql")),
];

/// Held by the migration transaction; the key is "tally" in ASCII. One key for every
/// schema: two tallys sharing a database migrate one after the other.
const MIGRATION_LOCK: &str = "select pg_advisory_xact_lock(1952541817)";

/// The tables and functions tally's migrations create, by name: what [`adopt_public`]
/// moves into tally's schema.
const TABLES: &[&str] = &[
    "schema_migrations",
    "accounts",
    "subscriptions",
    "periods",
    "topups",
    "ledger",
    "events",
    "settings",
    "reservations",
    "ownership_conflicts",
    "handoffs",
    "signature_failures",
];
const FUNCTIONS: &[&str] = &["ledger_is_append_only()"];

/// The schema tally keeps its tables in when `TALLY_DB_SCHEMA` is not set.
pub const DEFAULT_SCHEMA: &str = "tally";

/// Checks that `name` is a plain Postgres identifier (`[a-z_][a-z0-9_]*`, at most 63
/// bytes): what `TALLY_DB_SCHEMA` and `TALLY_SYNC_PROFILES` accept, so that a name is
/// never SQL and means the same quoted or not.
pub fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok || name.len() > 63 || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(format!("{name:?} is not a lowercase identifier ([a-z_][a-z0-9_]*, at most 63 bytes)"));
    }
    Ok(())
}

/// `url` with the `search_path` set to `schema` as the connection starts: for tools and
/// tests that read tally's tables over connections of their own.
pub fn url_in_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// A pool whose connections see only `schema` (checked by [`check_identifier`]).
pub async fn connect(url: &str, schema: &str) -> Result<AnyPool, StoreError> {
    check_identifier(schema).map_err(StoreError::Invalid)?;
    let set_path: std::sync::Arc<str> = format!("set search_path to \"{schema}\"").into();
    let pool = AnyPoolOptions::new()
        .max_connections(16)
        // A connection is pinged before each use (the default), so that the first
        // request after a database restart does not fail on a dead one. Writes take one
        // connection per batch, so the ping is paid per batch, not per request.
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _| {
            let set_path = set_path.clone();
            Box::pin(async move {
                sqlx::raw_sql(AssertSqlSafe(set_path.to_string())).execute(conn).await?;
                Ok(())
            })
        })
        .connect(url)
        .await?;
    Ok(pool)
}

/// Creates `schema` if needed and brings it up to date, under the migration lock.
pub async fn migrate(pool: &AnyPool, schema: &str) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(MIGRATION_LOCK).execute(&mut *tx).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("create schema if not exists \"{schema}\""))).execute(&mut *tx).await?;
    adopt_public(&mut tx, schema).await?;
    crate::migrate::apply(&mut tx, MIGRATIONS).await?;
    tx.commit().await?;
    Ok(())
}

/// Before `TALLY_DB_SCHEMA`, tally's tables were made in `public`. A database that has
/// them there and none in `schema` has them moved (with their rows, indexes and
/// sequences) in this transaction, so that upgrading keeps every balance. The
/// `schema_migrations` found must be tally's own: its columns and its first version.
async fn adopt_public(conn: &mut AnyConnection, schema: &str) -> Result<(), StoreError> {
    if schema == "public" {
        return Ok(());
    }
    let ours: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "select to_regclass('\"{schema}\".schema_migrations') is null
            and (select count(*) from information_schema.columns
                 where table_schema = 'public' and table_name = 'schema_migrations'
                   and column_name in ('version', 'applied_at')) = 2
            and to_regclass('public.accounts') is not null
            and to_regclass('public.ledger') is not null"
    )))
    .fetch_one(&mut *conn)
    .await?;
    if !ours {
        return Ok(());
    }
    let first: Option<i64> = sqlx::query_scalar("select version from public.schema_migrations where version = $1")
        .bind(MIGRATIONS[0].0)
        .fetch_optional(&mut *conn)
        .await?;
    if first.is_none() {
        return Ok(());
    }
    for table in TABLES {
        sqlx::raw_sql(AssertSqlSafe(format!("alter table if exists public.{table} set schema \"{schema}\"")))
            .execute(&mut *conn)
            .await?;
    }
    for function in FUNCTIONS {
        let exists: bool =
            sqlx::query_scalar(AssertSqlSafe(format!("select to_regprocedure('public.{function}') is not null")))
                .fetch_one(&mut *conn)
                .await?;
        if exists {
            sqlx::raw_sql(AssertSqlSafe(format!("alter function public.{function} set schema \"{schema}\"")))
                .execute(&mut *conn)
                .await?;
        }
    }
    // The profiles view, only if it is tally's (the app may have a `profiles` of its own).
    let our_view: bool = sqlx::query_scalar(
        "select coalesce((select relkind::text = 'v' from pg_class where oid = to_regclass('public.profiles')), false)
            and to_regprocedure('public.profiles_are_read_only()') is not null",
    )
    .fetch_one(&mut *conn)
    .await?;
    if our_view {
        for sql in ["alter view public.profiles", "alter function public.profiles_are_read_only()"] {
            sqlx::raw_sql(AssertSqlSafe(format!("{sql} set schema \"{schema}\""))).execute(&mut *conn).await?;
        }
    }
    tracing::warn!(schema, "moved tally's tables from public into the schema TALLY_DB_SCHEMA names");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_identifier;

    #[test]
    fn only_plain_lowercase_identifiers_name_a_schema() {
        for good in ["tally", "_t", "tally_2", &"a".repeat(63)] {
            assert_eq!(check_identifier(good), Ok(()), "{good}");
        }
        for bad in ["", "Tally", "2tally", "tally-x", "a b", "x\";drop", "t\u{0}", "é", &"a".repeat(64)] {
            assert!(check_identifier(bad).is_err(), "{bad:?}");
        }
    }
}
