//! Storage errors, sorted by what the caller should do about them.

use tally_core::CoreError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or cannot commit now; the caller should retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// An idempotency key used before for another user, amount or kind of request.
    #[error("the idempotency key was used for {0}")]
    KeyReused(&'static str),
    #[error("{0} not found")]
    NotFound(String),
    /// A reservation that is no longer held: committed, released or expired.
    #[error("the reservation is already {0}")]
    Settled(String),
    /// A request the data refuses, such as committing more than was held.
    #[error("{0}")]
    Invalid(String),
    /// The credit rules refused the operation.
    #[error(transparent)]
    Refused(#[from] CoreError),
    #[error("DATABASE_URL must start with postgres:// or sqlite:, got {0:?}")]
    BadUrl(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        use sqlx::Error as E;
        match &e {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::Protocol(_) | E::WorkerCrashed => {
                StoreError::Unavailable(e.to_string())
            }
            E::Database(db) => {
                if db.is_unique_violation() {
                    StoreError::Conflict(db.message().to_owned())
                } else if is_transient(db.as_ref()) {
                    StoreError::Unavailable(e.to_string())
                } else {
                    StoreError::Database(e)
                }
            }
            _ => StoreError::Database(e),
        }
    }
}

/// Whether the database said "not now" rather than "never", read by each backend's own
/// codes: a Postgres SQLSTATE is not a number to mask, and a SQLite code is not a class.
fn is_transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return postgres_transient(pg.code());
    }
    if let Some(lite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        let code = sqlx::error::DatabaseError::code(lite);
        return code.and_then(|c| c.parse::<i32>().ok()).is_some_and(sqlite_transient);
    }
    false
}

/// Connection loss (08), transaction rollbacks such as serialization failures and
/// deadlocks (40), lack of resources (53), objects not ready, such as a lock not
/// available (55), and shutdown (57). Everything else (22021, a NUL byte in text, say)
/// fails the same way every time.
fn postgres_transient(sqlstate: &str) -> bool {
    sqlstate.len() == 5 && ["08", "40", "53", "55", "57"].iter().any(|class| sqlstate.starts_with(class))
}

/// Busy, locked, I/O error, full and cannot open (SQLite, extended codes included).
fn sqlite_transient(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6 | 10 | 13 | 14)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_classes_of_not_now_are_transient() {
        for code in ["08006", "40001", "40P01", "53300", "55P03", "57P01"] {
            assert!(postgres_transient(code), "{code}");
        }
        // 22021 (a NUL byte) once passed for SQLite's busy code: 22021 & 0xff == 5.
        for code in ["22021", "22001", "23505", "42P01", "XX000", "0800"] {
            assert!(!postgres_transient(code), "{code}");
        }
    }

    #[test]
    fn sqlite_busy_and_locked_are_transient_with_their_extended_codes() {
        for code in [5, 6, 261, 517, 10, 13] {
            assert!(sqlite_transient(code), "{code}");
        }
        for code in [1, 19, 2067, 11] {
            assert!(!sqlite_transient(code), "{code}");
        }
    }

    /// The Any driver hands back each backend's own error, so the codes are read per
    /// backend: a cancelled statement (57014) on Postgres is "not now".
    #[tokio::test]
    async fn a_postgres_error_is_read_by_its_sqlstate() {
        let db = tally_testdb::TestDatabase::create();
        sqlx::any::install_default_drivers();
        let pool = crate::postgres::connect(&db.url, crate::postgres::DEFAULT_SCHEMA).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        sqlx::raw_sql("set statement_timeout = 1").execute(&mut *conn).await.unwrap();
        let cancelled = sqlx::raw_sql("select pg_sleep(1)").execute(&mut *conn).await.unwrap_err();
        assert!(matches!(StoreError::from(cancelled), StoreError::Unavailable(_)));
        let nul = sqlx::query("select $1::text").bind("a\0b").execute(&mut *conn).await.unwrap_err();
        assert!(matches!(StoreError::from(nul), StoreError::Database(_)));
    }
}
