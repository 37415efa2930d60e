//! Postgres: a pool sized for a server, and its migrations.

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::StoreError;
use crate::migrate::Migrations;

pub const MIGRATIONS: Migrations = &[
    (20261127000001, include_str!("../migrations/postgres/20261127000001_init.sql")),
    (20261127000002, include_str!("../migrations/postgres/20261127000002_reservations.sql")),
    (20261127000003, include_str!("../migrations/postgres/20261127000003_funded_at.sql")),
];

/// Held by the migration transaction; the key is "tally" in ASCII.
pub const MIGRATION_LOCK: Option<&'static str> = Some("select pg_advisory_xact_lock(1952541817)");

pub async fn connect(url: &str) -> Result<AnyPool, StoreError> {
    let pool = AnyPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(5)).connect(url).await?;
    Ok(pool)
}
