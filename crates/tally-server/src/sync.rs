//! `tally sync`: repairs what webhooks missed. Stripe keeps the events of the last 30
//! days; tally pulls those of the types it handles and applies each through the same
//! path as a webhook. They carry the ids webhooks carry, so an event already applied is
//! a duplicate and a sync can run as often as one likes.

use std::collections::BTreeMap;

use tally_store::Store;
use tally_stripe::StripeClient;

use crate::ApiError;

/// How many events ended how.
pub type SyncReport = BTreeMap<&'static str, usize>;

/// Applies every handled event created at or after `since` (unix seconds), oldest first.
pub async fn sync(stripe: &StripeClient, store: &Store, since: i64) -> Result<SyncReport, ApiError> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = stripe.list_events(since, after.as_deref()).await?;
        let last_id =
            page.data.last().and_then(|raw| tally_stripe::parse_event(raw.get().as_bytes()).ok()).map(|e| e.id);
        let more = page.has_more && last_id.is_some();
        pages.push(page.data);
        if !more {
            break;
        }
        after = last_id;
    }
    let mut report = SyncReport::new();
    // Stripe lists newest first; apply in the order they happened.
    for raw in pages.into_iter().flatten().rev() {
        let payload = raw.get();
        let Ok(parsed) = tally_stripe::parse_event(payload.as_bytes()) else {
            *report.entry("unreadable").or_default() += 1;
            continue;
        };
        match crate::ingest_parsed(store, &parsed, payload).await {
            Ok(result) => *report.entry(result.outcome.as_str()).or_default() += 1,
            // Past the input limits, as a webhook would be: counted, not stored.
            Err(crate::IngestError::Invalid(e)) => {
                tracing::warn!(event = %parsed.id, error = %e, "event from Stripe past the input limits");
                *report.entry("invalid").or_default() += 1;
            }
            Err(crate::IngestError::Store(e)) => return Err(e.into()),
        }
    }
    Ok(report)
}
