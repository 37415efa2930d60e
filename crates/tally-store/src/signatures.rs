//! A bounded record of webhook deliveries refused for their signature: a count per hour,
//! kept two days, so that `tally doctor` can say "N in the last 24 h" after a restart
//! (the metric is per process). A flood costs one row per hour, and the route never
//! waits for it: refusals are counted in memory and written by at most one task at a
//! time, which folds together all that arrived while it wrote.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::{Store, StoreError, now};

/// How long hourly counts are kept; `tally doctor` reads the last 24 h of them.
const KEEP_SECONDS: i64 = 48 * 3600;

/// Refusals counted in memory and not yet written.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    count: AtomicI64,
    /// A task is writing them.
    writing: AtomicBool,
}

impl Store {
    /// Counts one delivery refused for its signature. Returns at once: the count is
    /// written in the background, and a failure to write it is logged, never raised.
    pub fn note_signature_failure(&self) {
        let pending = &self.signature_failures;
        pending.count.fetch_add(1, Ordering::SeqCst);
        if pending.writing.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            pending.writing.store(false, Ordering::SeqCst);
            return;
        };
        let store = self.clone();
        runtime.spawn(async move {
            let pending = &store.signature_failures;
            loop {
                let n = pending.count.swap(0, Ordering::SeqCst);
                if n > 0
                    && let Err(e) = store.record_signature_failures(n, now()).await
                {
                    tracing::warn!(error = %e, count = n, "signature failures not recorded");
                }
                pending.writing.store(false, Ordering::SeqCst);
                // Refusals that came after the swap, with no task to write them.
                if pending.count.load(Ordering::SeqCst) == 0 || pending.writing.swap(true, Ordering::SeqCst) {
                    break;
                }
            }
        });
    }

    /// Adds `n` refusals to the hour of `at`, and prunes hours past the two days kept.
    pub async fn record_signature_failures(&self, n: i64, at: i64) -> Result<(), StoreError> {
        let hour = at - at.rem_euclid(3600);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "insert into signature_failures (hour, count) values ($1, $2)
             on conflict (hour) do update set count = signature_failures.count + excluded.count",
        )
        .bind(hour)
        .bind(n)
        .execute(&mut *tx)
        .await?;
        sqlx::query("delete from signature_failures where hour < $1")
            .bind(hour - KEEP_SECONDS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Refusals recorded from the hour of `since` on, and how many hourly rows the
    /// record holds (bounded by the two days kept).
    pub async fn signature_failures_since(&self, since: i64) -> Result<(i64, i64), StoreError> {
        let (sum, rows): (Option<i64>, i64) = sqlx::query_as(
            "select cast(sum(case when hour >= $1 then count else 0 end) as bigint), count(*) from signature_failures",
        )
        .bind(since - since.rem_euclid(3600))
        .fetch_one(&self.pool)
        .await?;
        Ok((sum.unwrap_or(0), rows))
    }
}
