//! A small migration runner: numbered SQL files embedded in the binary, each applied
//! once, in order, all in the caller's transaction (both backends have transactional
//! DDL), so that a failed migration leaves the schema as it was.

use sqlx::AnyConnection;

use crate::StoreError;

/// `(version, sql)`, in the order they apply.
pub type Migrations = &'static [(i64, &'static str)];

/// Applies the migrations `conn` (a transaction) has not seen. The caller serializes
/// processes that start together (Postgres takes an advisory lock first).
pub async fn apply(conn: &mut AnyConnection, migrations: Migrations) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "create table if not exists schema_migrations (version bigint primary key, applied_at bigint not null)",
    )
    .execute(&mut *conn)
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("select version from schema_migrations").fetch_all(&mut *conn).await?;
    for (version, sql) in migrations {
        if applied.contains(version) {
            continue;
        }
        sqlx::raw_sql(*sql).execute(&mut *conn).await?;
        sqlx::query("insert into schema_migrations (version, applied_at) values ($1, $2)")
            .bind(*version)
            .bind(crate::now())
            .execute(&mut *conn)
            .await?;
        tracing::info!(version, "applied migration");
    }
    Ok(())
}
