//! Postgres: a pool sized for a server, and its migrations.

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::StoreError;
use crate::migrate::Migrations;

pub const MIGRATIONS: Migrations = &[
    (20261127000001, include_str!("../migrations/postgres/20261127000001_init.sql")),
    // The same SQL on both backends from here on.
    (20261127000002, include_str!("../migrations/common/20261127000002_reservations.sql")),
    (20261127000003, include_str!("../migrations/common/20261127000003_funded_at.sql")),
    (20261201000004, include_str!("../migrations/common/20261201000004_catalogue.sql")),
    (20261202000005, include_str!("../migrations/common/20261202000005_handoffs.sql")),
];

/// Held by the migration transaction; the key is "tally" in ASCII.
pub const MIGRATION_LOCK: Option<&'static str> = Some("select pg_advisory_xact_lock(1952541817)");

pub async fn connect(url: &str) -> Result<AnyPool, StoreError> {
    let url = &loopback_without_tls(url);
    let pool = AnyPoolOptions::new()
        .max_connections(16)
        // A connection is pinged before each use (the default), so that the first
        // request after a database restart does not fail on a dead one. Writes take one
        // connection per batch, so the ping is paid per batch, not per request.
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await?;
    Ok(pool)
}

/// A database on this machine is reached without TLS unless the URL names an `sslmode`:
/// TLS over loopback protects nothing, costs ~90 ms per new connection (most of
/// `tally serve`'s start-up), and splits large statements into records that wait on
/// the server's delayed ACK (sqlx leaves Nagle on), 40 ms per batch of webhooks.
fn loopback_without_tls(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "::1");
    if !loopback || url.contains("sslmode=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode=disable")
}

#[cfg(test)]
mod tests {
    use super::loopback_without_tls;

    #[test]
    fn only_a_loopback_host_without_an_sslmode_loses_tls() {
        let cases = [
            ("postgres://postgres@127.0.0.1:5432/test", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"),
            (
                "postgres://u:p@localhost/db?application_name=x",
                "postgres://u:p@localhost/db?application_name=x&sslmode=disable",
            ),
            ("postgresql://[::1]:5432/db", "postgresql://[::1]:5432/db?sslmode=disable"),
            ("postgres://127.0.0.1/db?sslmode=require", "postgres://127.0.0.1/db?sslmode=require"),
            ("postgres://u@db.example.com:5432/db", "postgres://u@db.example.com:5432/db"),
            ("postgres://u@127.0.0.1.example.com/db", "postgres://u@127.0.0.1.example.com/db"),
        ];
        for (url, want) in cases {
            assert_eq!(loopback_without_tls(url), want, "{url}");
        }
    }
}
