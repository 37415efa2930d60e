//! Fulfilment on return from Checkout: when the user lands on the success page before
//! the webhook did, tally fetches the session from Stripe and applies it through the
//! same idempotent path as the webhook, so nothing is granted twice either way.

use tally_core::{BillingEvent, EventKind};
use tally_store::NewEvent;

use crate::{ApiError, AppState};

/// What came of looking at a session on return from Checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fulfilment {
    /// Applied now or before (or not the user's: nothing to wait for).
    Done,
    /// Not paid yet (a payment method that settles later): the webhook will tell.
    Unpaid,
}

/// Applies Checkout Session `session_id` if it belongs to `user` and is not applied yet.
pub async fn checkout_session(state: &AppState, user: &str, session_id: &str) -> Result<Fulfilment, ApiError> {
    let event_id = format!("fulfil_{session_id}");
    if state.store.event(&event_id).await?.is_some() {
        return Ok(Fulfilment::Done);
    }
    let stripe = state.stripe.as_ref().ok_or(ApiError::StripeNotConfigured)?;
    let retrieved = stripe.retrieve_checkout_session(session_id).await?;
    if retrieved.session.owner.user_id.as_deref() != Some(user) {
        tracing::warn!(session_id, user, "a session of another user on the success page");
        return Ok(Fulfilment::Done);
    }
    // Not stored: a later look (the page refreshes while it waits) must ask Stripe again.
    if !retrieved.session.paid {
        return Ok(Fulfilment::Unpaid);
    }
    let event = BillingEvent { id: event_id, created: retrieved.created, kind: EventKind::Checkout(retrieved.session) };
    // The same input limits as a webhook's, before the database: the answer is Stripe's,
    // but what it names (customer, item, payment intent) is stored like any event's.
    if let Err(e) = event.check_ids().and_then(|()| event.check_times()) {
        tracing::warn!(session_id, error = %e, "a Checkout Session past the input limits");
        return Err(ApiError::Stripe);
    }
    let new = NewEvent {
        id: &event.id,
        event_type: "checkout.session.completed",
        created: event.created,
        livemode: false,
        payload: &retrieved.raw,
        event: Ok(&event),
    };
    let outcome = state.store.ingest(new).await?;
    tracing::info!(session_id, outcome = outcome.outcome.as_str(), "fulfilled on return from Checkout");
    Ok(Fulfilment::Done)
}
