//! One-time sign-in codes for the billing page (kept as hashes): made for a signed-in
//! user, taken once, dead after their expiry. Not money, so not through the writer.

use crate::{Store, StoreError};

/// Whom a sign-in code signs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub user_id: String,
    pub email: Option<String>,
}

impl Store {
    /// Keeps a code (by its hash) for `handoff` until `expires_at`; drops the expired ones.
    pub async fn create_handoff(
        &self,
        code_hash: &str,
        handoff: &Handoff,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("delete from handoffs where expires_at < $1").bind(now).execute(&self.pool).await?;
        sqlx::query("insert into handoffs (code_hash, user_id, email, expires_at) values ($1, $2, $3, $4)")
            .bind(code_hash)
            .bind(&handoff.user_id)
            .bind(handoff.email.as_deref())
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The user a code names, once: the code is deleted as it is read, so a second use
    /// (or a second replica racing the first) finds nothing.
    pub async fn take_handoff(&self, code_hash: &str, now: i64) -> Result<Option<Handoff>, StoreError> {
        let row: Option<(String, Option<String>, i64)> =
            sqlx::query_as("delete from handoffs where code_hash = $1 returning user_id, email, expires_at")
                .bind(code_hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.filter(|(_, _, expires_at)| *expires_at >= now).map(|(user_id, email, _)| Handoff { user_id, email }))
    }
}
