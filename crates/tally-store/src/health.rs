//! What `tally doctor` reads from tally's own records: events kept for replay, by why,
//! and refused signatures (see [`crate::signatures`]).

use crate::{Store, StoreError};

/// Stored events that still wait for a replay.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Unmatched events by their note (`unknown_price`, `no user found`), with how many.
    pub unmatched: Vec<(String, i64)>,
    /// Events whose object could not be read.
    pub failed: i64,
}

impl Store {
    /// Unmatched events by reason, and failed events.
    pub async fn waiting_events(&self) -> Result<Waiting, StoreError> {
        let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "select outcome, note, count(*) from events where outcome in ('unmatched', 'failed')
             group by outcome, note order by outcome, note",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut waiting = Waiting::default();
        for (outcome, note, n) in rows {
            match outcome.as_str() {
                "failed" => waiting.failed += n,
                _ => waiting.unmatched.push((note.unwrap_or_else(|| "no reason".into()), n)),
            }
        }
        Ok(waiting)
    }
}
