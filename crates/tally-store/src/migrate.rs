//! A small migration runner: numbered SQL files embedded in the binary, each applied
//! once, in order, all in one transaction (both backends have transactional DDL).

use sqlx::AnyPool;

use crate::StoreError;

/// `(version, sql)`, in the order they apply.
pub type Migrations = &'static [(i64, &'static str)];

/// `lock` is taken first inside the transaction, so that two processes starting
/// together do not both apply the same migration; it is released at commit.
pub async fn run(pool: &AnyPool, migrations: Migrations, lock: Option<&'static str>) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    if let Some(lock) = lock {
        sqlx::raw_sql(lock).execute(&mut *tx).await?;
    }
    sqlx::raw_sql(
        "create table if not exists schema_migrations (version bigint primary key, applied_at bigint not null)",
    )
    .execute(&mut *tx)
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("select version from schema_migrations").fetch_all(&mut *tx).await?;
    for (version, sql) in migrations {
        if applied.contains(version) {
            continue;
        }
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query("insert into schema_migrations (version, applied_at) values ($1, $2)")
            .bind(*version)
            .bind(crate::now())
            .execute(&mut *tx)
            .await?;
        tracing::info!(version, "applied migration");
    }
    tx.commit().await?;
    Ok(())
}
