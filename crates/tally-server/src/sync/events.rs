//! The first pass of `tally sync`: the events Stripe keeps, of the types tally handles,
//! applied oldest first as webhooks would have been.

use std::collections::{BTreeMap, HashMap};

use serde_json::value::RawValue;
use tally_store::Store;
use tally_stripe::api::HANDLED_EVENTS;
use tally_stripe::{ParsedEvent, StripeClient};

use super::{Observer, SyncError};

/// Pulls and applies (in a dry run, counts as `new` or `stored`) every handled event
/// created at or after `since`.
pub async fn pull(
    stripe: &StripeClient,
    store: &Store,
    since: i64,
    dry_run: bool,
    observer: &mut dyn Observer,
) -> Result<BTreeMap<&'static str, usize>, SyncError> {
    let mut report = BTreeMap::new();
    let mut events = Vec::new();
    for event_type in HANDLED_EVENTS {
        for raw in list_all(stripe, event_type, since).await? {
            match tally_stripe::parse_event(raw.get().as_bytes()) {
                Ok(parsed) => events.push((parsed, raw)),
                Err(_) => *report.entry("unreadable").or_default() += 1,
            }
            observer.events_listed(events.len());
        }
    }
    // Each list is newest first, one type at a time: apply them all in the order they
    // happened. Within one second the rules give the same result in any order.
    events.sort_by_key(|(parsed, _)| parsed.created);
    if dry_run {
        let ids: Vec<&str> = events.iter().map(|(parsed, _)| parsed.id.as_str()).collect();
        let stored = store.stored_event_ids(&ids).await?;
        for (parsed, _) in &events {
            *report.entry(if stored.contains(&parsed.id) { "stored" } else { "new" }).or_default() += 1;
        }
        return Ok(report);
    }
    let mut outcomes: HashMap<&str, &'static str> = HashMap::with_capacity(events.len());
    for (parsed, raw) in &events {
        outcomes.insert(&parsed.id, apply(store, parsed, raw.get()).await?.outcome);
    }
    // An event that found no user may wait for a customer that a later event of the
    // pass linked (a customer.created of the same second is listed after it): the
    // sweep `tally serve` runs applies what waits no more, and the report counts how
    // each event ended.
    for (id, outcome) in crate::waiting::retry(store, tally_store::now()).await?.1 {
        if let Some(counted) = outcomes.get_mut(id.as_str()) {
            *counted = outcome.as_str();
        }
    }
    for outcome in outcomes.into_values() {
        *report.entry(outcome).or_default() += 1;
    }
    Ok(report)
}

/// How an event ended, and for whom.
#[derive(Debug, Clone)]
pub struct Applied {
    pub outcome: &'static str,
    /// The rules' note, such as why nothing changed.
    pub note: Option<String>,
    pub user_id: Option<String>,
}

/// Applies one event through the webhook's path. An event past the input limits is
/// `invalid` and stored nowhere, as a webhook would be refused.
pub async fn apply(store: &Store, parsed: &ParsedEvent, payload: &str) -> Result<Applied, SyncError> {
    match crate::ingest_parsed(store, parsed, payload).await {
        Ok(result) => Ok(Applied { outcome: result.outcome.as_str(), note: result.note, user_id: result.user_id }),
        Err(crate::IngestError::Invalid(e)) => {
            tracing::warn!(event = %parsed.id, error = %e, "event from Stripe past the input limits");
            Ok(Applied { outcome: "invalid", note: Some(e.to_string()), user_id: None })
        }
        Err(crate::IngestError::Store(e)) => Err(e.into()),
    }
}

/// Every event of one type since `since`, following Stripe's pages.
async fn list_all(stripe: &StripeClient, event_type: &str, since: i64) -> Result<Vec<Box<RawValue>>, SyncError> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = stripe.list_events(event_type, since, after.as_deref()).await?;
        let last = page.data.last().and_then(|raw| object_id(raw.get()));
        let more = page.has_more && last.is_some();
        all.extend(page.data);
        if !more {
            return Ok(all);
        }
        after = last;
    }
}

/// The `id` of a listed object, the cursor of the next page.
pub fn object_id(raw: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    serde_json::from_str::<Id>(raw).ok().map(|o| o.id).filter(|id| !id.is_empty())
}
