//! The second pass of `tally sync`: every subscription Stripe has, page by page,
//! compared with tally's record and repaired through the rules.

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tally_core::reconcile::{self, Comparison};
use tally_store::{KeptSubscription, Store};
use tally_stripe::parse::{self, ListedSubscription};
use tally_stripe::{StripeClient, StripeError};

use super::events::{self, object_id};
use super::{Difference, Observer, Repair, SyncError, SyncOptions, SyncReport};

/// Compares every subscription and repairs each that differs (in a dry run, says how
/// it would). Resumes after the cursor an interrupted run left, and moves it on after
/// each page; a finished run clears it.
pub async fn reconcile(
    stripe: &StripeClient,
    store: &Store,
    options: SyncOptions,
    observer: &mut dyn Observer,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let mut after = if options.dry_run { None } else { store.sync_cursor().await? };
    report.resumed_after = after.clone();
    loop {
        // The time Stripe's answer is true as of: a repair from it must not undo an
        // event Stripe made later, and a later delivery of an earlier one must not undo it.
        let listed_at = tally_store::now();
        let page = match stripe.list_subscriptions(after.as_deref()).await {
            // The cursor's subscription is gone (test data deleted): start over.
            Err(StripeError::Api { status: 400 | 404, .. }) if after.is_some() && after == report.resumed_after => {
                tracing::warn!(cursor = ?after, "the sync cursor names no subscription; starting from the first");
                after = None;
                report.resumed_after = None;
                continue;
            }
            page => page?,
        };
        let listed: Vec<(ListedSubscription, &RawValue)> = page
            .data
            .iter()
            .filter_map(|raw| match parse::listed_subscription(raw.get()) {
                Ok(sub) => Some((sub, raw.as_ref())),
                Err(e) => {
                    tracing::warn!(error = %e, "a subscription from Stripe could not be read");
                    report.skipped += 1;
                    None
                }
            })
            .collect();
        let ids: Vec<&str> = listed.iter().map(|(l, _)| l.subscription.id.as_str()).collect();
        let kept = store.kept_subscriptions(&ids).await?;
        for (sub, raw) in &listed {
            report.checked += 1;
            let ours = kept.get(&sub.subscription.id);
            let Some(comparison) =
                reconcile::compare(&sub.subscription, ours.map(|k| (&k.state, &k.granted)), store.catalogue())
            else {
                report.skipped += 1;
                continue;
            };
            if comparison.is_empty() {
                continue;
            }
            let difference = repair(stripe, store, options, sub, raw, ours, comparison, listed_at).await?;
            observer.difference(&difference);
            report.differences.push(difference);
        }
        observer.subscriptions_checked(report.checked);
        let last = page.data.last().and_then(|raw| object_id(raw.get()));
        let more = page.has_more && last.is_some();
        if !options.dry_run {
            store.set_sync_cursor(if more { last.as_deref() } else { None }).await?;
        }
        if !more {
            return Ok(());
        }
        after = last;
    }
}

/// Applies what Stripe shows: the subscription, when its state differs (or its trial
/// is not granted), then the paid invoice of an active period tally has not granted.
#[allow(clippy::too_many_arguments)]
async fn repair(
    stripe: &StripeClient,
    store: &Store,
    options: SyncOptions,
    listed: &ListedSubscription,
    raw: &RawValue,
    kept: Option<&KeptSubscription>,
    comparison: Comparison,
    listed_at: i64,
) -> Result<Difference, SyncError> {
    let sub = &listed.subscription;
    let mut difference = Difference {
        subscription: sub.id.clone(),
        user_id: kept.map(|k| k.state.user_id.clone()),
        fields: comparison.state,
        period_unpaid: comparison.period_unpaid,
        repairs: Vec::new(),
        unrepaired: None,
    };
    if !difference.fields.is_empty() || (comparison.period_unpaid && sub.status == "trialing") {
        let event_type =
            if sub.status == "canceled" { "customer.subscription.deleted" } else { "customer.subscription.updated" };
        let id = event_id("sub", &subscription_key(listed, kept));
        let object = Object { id: &sub.id, raw, created: listed_at, livemode: listed.livemode };
        difference.repairs.push(apply(store, options, &id, event_type, object, &mut difference.user_id).await?);
    }
    if comparison.period_unpaid && sub.status == "active" {
        let Some(invoice_id) = listed.latest_invoice.as_deref() else {
            difference.unrepaired = Some("Stripe names no invoice for the period".into());
            return Ok(difference);
        };
        let invoice = stripe.retrieve_invoice(invoice_id).await?;
        let status = parse::invoice_status(invoice.get()).map_err(|e| StripeError::Decode(e.to_string()))?;
        if !status.paid {
            difference.unrepaired = Some(format!("its latest invoice, {invoice_id}, is not paid"));
            return Ok(difference);
        }
        let id = event_id("inv", &[invoice_id]);
        let object = Object { id: invoice_id, raw: &invoice, created: status.created, livemode: status.livemode };
        difference.repairs.push(apply(store, options, &id, "invoice.paid", object, &mut difference.user_id).await?);
    }
    Ok(difference)
}

/// A Stripe object to apply as the event it would have come in.
struct Object<'a> {
    id: &'a str,
    raw: &'a RawValue,
    /// The event's `created`: when Stripe's object was true.
    created: i64,
    livemode: bool,
}

async fn apply(
    store: &Store,
    options: SyncOptions,
    id: &str,
    event_type: &'static str,
    object: Object<'_>,
    user_id: &mut Option<String>,
) -> Result<Repair, SyncError> {
    let payload = parse::envelope(id, event_type, object.created, object.livemode, object.raw);
    let mut repair =
        Repair { event_id: id.to_owned(), event_type, object: object.id.to_owned(), outcome: None, note: None };
    if options.dry_run {
        return Ok(repair);
    }
    let parsed = tally_stripe::parse_event(payload.as_bytes())
        .map_err(|e| StripeError::Decode(format!("{event_type} {}: {e}", object.id)))?;
    let applied = events::apply(store, &parsed, &payload).await?;
    repair.outcome = Some(applied.outcome);
    repair.note = applied.note;
    if user_id.is_none() {
        *user_id = applied.user_id;
    }
    Ok(repair)
}

/// What the repair of a subscription's state was made from, on both sides: a rerun
/// that finds the same difference makes the same event, a duplicate; a difference that
/// comes back after tally moved on (another `state_at`) makes a new one.
fn subscription_key(listed: &ListedSubscription, kept: Option<&KeptSubscription>) -> Vec<String> {
    let sub = &listed.subscription;
    let mut key = vec![
        sub.id.clone(),
        sub.status.clone(),
        format!("{:?}", sub.price_id),
        format!("{:?}", sub.current_period_start),
        format!("{:?}", sub.current_period_end),
        sub.cancel_at_period_end.to_string(),
    ];
    if let Some(kept) = kept {
        let s = &kept.state;
        key.extend([
            s.status.clone(),
            format!("{:?}", s.plan),
            format!("{:?}", s.price_id),
            format!("{:?}", s.current_period_end),
            s.cancel_at_period_end.to_string(),
            s.state_at.to_string(),
        ]);
    }
    key
}

/// `evt_sync_{kind}_` and 24 hex digits of the key's hash: an id of Stripe's shape,
/// within the input limits whatever the key's length.
fn event_id(kind: &str, key: &[impl AsRef<str>]) -> String {
    let mut hash = Sha256::new();
    for part in key {
        hash.update(part.as_ref().as_bytes());
        hash.update([0]);
    }
    format!("evt_sync_{kind}_{}", &hex::encode(hash.finalize())[..24])
}
