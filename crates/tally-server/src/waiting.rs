//! Events kept as unmatched that a later event has made applicable. Stripe has no
//! order: a refund can come before the checkout of the top-up it refunds, an invoice
//! that names only its customer before the event that links that customer to a user.
//! Both are answered 200 and kept; Stripe never sends them again. Each row says what it
//! waits for, and `tally serve` tries again, every few seconds, those whose wait is
//! over (see `tally_store::Store::events_to_retry`). Every replica sweeps; the same
//! keys as a webhook's make each effect happen once.

use std::time::Duration;

use tally_store::{Outcome, Store, StoreError};

/// How often `tally serve` sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Events tried a sweep, at most.
const BATCH: i64 = 500;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Retried {
    pub tried: usize,
    /// Tried and no longer unmatched.
    pub applied: usize,
}

/// Tries once more every unmatched event whose wait is over at `now`.
pub async fn retry_waiting(store: &Store, now: i64) -> Result<Retried, StoreError> {
    let (tried, applied) = retry(store, now).await?;
    Ok(Retried { tried, applied: applied.len() })
}

/// [`retry_waiting`], naming the events that applied and how: how many were tried, and
/// the id and new outcome of each that is no longer unmatched.
pub async fn retry(store: &Store, now: i64) -> Result<(usize, Vec<(String, Outcome)>), StoreError> {
    let events = store.events_to_retry(now, BATCH).await?;
    let mut applied = Vec::new();
    for stored in &events {
        // It was read when it was stored; a failure to read it now is the same event.
        let Ok(parsed) = tally_stripe::parse_event(stored.payload.as_bytes()) else { continue };
        match crate::ingest_parsed(store, &parsed, &stored.payload).await {
            Ok(result) if result.outcome != Outcome::Unmatched => {
                tracing::info!(event = %stored.id, outcome = result.outcome.as_str(), "a waiting event applied");
                applied.push((stored.id.clone(), result.outcome));
            }
            Ok(_) | Err(crate::IngestError::Invalid(_)) => {}
            Err(crate::IngestError::Store(e)) => return Err(e),
        }
    }
    Ok((events.len(), applied))
}

/// Sweeps every `every` until the server stops.
pub async fn sweep_every(store: Store, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = retry_waiting(&store, tally_store::now()).await {
            tracing::warn!(error = %e, "retrying waiting events failed; trying again at the next sweep");
        }
    }
}
