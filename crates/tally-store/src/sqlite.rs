//! Embedded SQLite: one file, created on first use, so `tally serve` needs no setup.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

use crate::StoreError;
use crate::migrate::Migrations;

pub const MIGRATIONS: Migrations = &[
    (20261127000001, include_str!("../migrations/sqlite/20261127000001_init.sql")),
    // The same SQL on both backends from here on.
    (20261127000002, include_str!("../migrations/common/20261127000002_reservations.sql")),
    (20261127000003, include_str!("../migrations/common/20261127000003_funded_at.sql")),
    (20261201000004, include_str!("../migrations/common/20261201000004_catalogue.sql")),
    (20261202000005, include_str!("../migrations/common/20261202000005_handoffs.sql")),
    (20261202000006, include_str!("../migrations/sqlite/20261202000006_profiles.sql")),
    (20261202000007, include_str!("../migrations/common/20261202000007_signature_failures.sql")),
    (20261203000008, include_str!("../migrations/common/20261203000008_waiting_events.sql")),
];

/// Brings the file's schema up to date (one connection: nothing runs beside it).
pub async fn migrate(pool: &AnyPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    crate::migrate::apply(&mut tx, MIGRATIONS).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn connect(url: &str) -> Result<AnyPool, StoreError> {
    let url = if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    };
    let pool = AnyPoolOptions::new()
        // SQLite has one writer; a single connection queues writes in order instead of
        // polling a busy lock, and every transaction here writes.
        .max_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("pragma journal_mode = wal; pragma synchronous = full; pragma busy_timeout = 5000;")
                    .await?;
                Ok(())
            })
        })
        .connect(&url)
        .await?;
    Ok(pool)
}
