//! What time alone grants: the months of a long (yearly) period after its first, and
//! a monthly free tier's reset on the 1st. `tally serve` calls [`Store::grant_due`]
//! every minute on every replica; each grant is a writer job under its own ledger
//! reference, made once per account lock, so any number of replicas grant it once.
//! Only the month due now is granted: after downtime, missed months are not.

use tally_core::calendar::month_name;
use tally_core::rules::{self, SubscriptionState};

use crate::credits::Change;
use crate::sql::fetch_in;
use crate::{Store, StoreError};

/// What one tick granted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Granted {
    /// Months of long periods.
    pub months: usize,
    /// Free accounts reset for the month.
    pub free: usize,
}

/// Long periods are found among periods longer than this (a month has at most 31 days).
const LONG_PERIOD: i64 = 31 * 86_400;

impl Store {
    /// Grants what is due at `now` (unix seconds; tests pass their own clock).
    pub async fn grant_due(&self, now: i64) -> Result<Granted, StoreError> {
        let mut granted = Granted::default();
        for (user, subscription_id, reference) in self.months_due(now).await? {
            let change = Change::Month { subscription_id, now };
            if self.grant_once(&user, reference, change).await? {
                granted.months += 1;
            }
        }
        if self.catalogue.free.monthly {
            for (user, reference) in self.free_months_due(now).await? {
                if self.grant_once(&user, reference, Change::FreeMonth { now }).await? {
                    granted.free += 1;
                }
            }
        }
        Ok(granted)
    }

    /// Makes a time grant through the writer; says whether it changed the account. A
    /// grant the rules refuse now (the subscription stopped funding the account since it
    /// was listed) is skipped; only an outage is an error.
    async fn grant_once(&self, user: &str, reference: String, change: Change) -> Result<bool, StoreError> {
        match self.once(user, reference, change).await {
            Ok(_) => Ok(true),
            Err(StoreError::Invalid(why)) => {
                tracing::debug!(user, why, "time grant skipped");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// `(user, subscription, reference)` of every month due and not granted yet.
    async fn months_due(&self, now: i64) -> Result<Vec<(String, String, String)>, StoreError> {
        type Row = (String, String, String, Option<String>, Option<i64>, Option<i64>);
        let rows: Vec<Row> = sqlx::query_as(
            "select id, user_id, status, plan, current_period_start, current_period_end from subscriptions
             where status = 'active' and current_period_end > $1 and current_period_end - current_period_start > $2",
        )
        .bind(now)
        .bind(LONG_PERIOD)
        .fetch_all(&self.pool)
        .await?;
        let due: Vec<(String, String, String)> = rows
            .into_iter()
            .filter_map(|(id, user_id, status, plan, start, end)| {
                let state = SubscriptionState {
                    status,
                    plan,
                    current_period_start: start,
                    current_period_end: end,
                    ..SubscriptionState::new(&id, &user_id)
                };
                let due = rules::month_due(&state, now)?;
                Some((user_id, id, due.reference()))
            })
            .collect();
        let granted = self.granted_references(due.iter().map(|(_, _, r)| r.as_str())).await?;
        Ok(due.into_iter().filter(|(_, _, r)| !granted.contains(r)).collect())
    }

    /// `(user, reference)` of every free account not reset yet in the month of `now`.
    async fn free_months_due(&self, now: i64) -> Result<Vec<(String, String)>, StoreError> {
        // The reference is `free:{user}:{month}` (rules::free_month_reference), matched in SQL.
        let prefix = "free:";
        let suffix = format!(":{}", month_name(now));
        let users: Vec<String> = sqlx::query_scalar(
            "select a.user_id from accounts a where a.tier = $1 and not exists
             (select 1 from ledger l where l.reference = $2 || a.user_id || $3)",
        )
        .bind(tally_core::FREE)
        .bind(prefix)
        .bind(&suffix)
        .fetch_all(&self.pool)
        .await?;
        Ok(users.into_iter().map(|u| (rules::free_month_reference(&u, now), u)).map(|(r, u)| (u, r)).collect())
    }

    /// Which of these ledger references are taken.
    async fn granted_references<'k>(
        &self,
        references: impl Iterator<Item = &'k str>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let references: Vec<&str> = references.collect();
        let mut conn = self.pool.acquire().await?;
        let sql = "select reference from ledger where reference in ({keys})";
        let taken: Vec<(String,)> = fetch_in(&mut conn, sql, None, &references).await?;
        Ok(taken.into_iter().map(|(r,)| r).collect())
    }
}
