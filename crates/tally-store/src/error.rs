//! Storage errors, sorted by what the caller should do about them.

use tally_core::CoreError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or cannot commit now; the caller should retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule refused the write (such as a key reused for another user).
    #[error("conflict: {0}")]
    Conflict(String),
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
                let code = db.code().unwrap_or_default();
                if db.is_unique_violation() {
                    StoreError::Conflict(db.message().to_owned())
                } else if is_transient(&code) {
                    StoreError::Unavailable(e.to_string())
                } else {
                    StoreError::Database(e)
                }
            }
            _ => StoreError::Database(e),
        }
    }
}

/// Error codes that mean "not now" rather than "never": connection loss, shutdown,
/// lack of resources, serialization failures and deadlocks, and objects not ready (a
/// database not accepting connections, a lock not available) (Postgres); busy or locked
/// (SQLite, extended codes included).
fn is_transient(code: &str) -> bool {
    let postgres = ["08", "53", "55", "57", "40"].iter().any(|class| code.starts_with(class)) && code.len() == 5;
    let sqlite = code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14));
    postgres || sqlite
}
