//! The webhook edge after the signature: `parse_event` on any body (both API shapes
//! are in the seeds), then the id checks the route runs before the database, and the
//! Checkout Session reader the success page uses on what Stripe's API returns.
//!
//! Beyond "no panic": an event that passes the edge's checks stores only strings within
//! the input limits (every id the normalized event carries, enumerated here field by
//! field so that a new field cannot slip past unchecked), no NUL anywhere, and only
//! times from 1970 to 9999.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_core::event::{CheckoutSession, Invoice, Owner, PlanLine, Subscription};
use tally_core::input::{MAX_ID_BYTES, MAX_TIME};
use tally_core::{BillingEvent, EventKind};
use tally_stripe::parse::checkout_session;
use tally_stripe::parse_event;

fuzz_target!(|body: &[u8]| {
    if let Ok(parsed) = parse_event(body) {
        if parsed.check_limits().is_ok() {
            within_limits("id", &parsed.id);
            within_limits("type", &parsed.event_type);
            match &parsed.event {
                Ok(event) => {
                    stored_ids(event).into_iter().for_each(|(field, id)| within_limits(field, id));
                    times_within_limits(event);
                }
                Err(note) => assert!(!note.contains('\0'), "a NUL in the note {note:?}"),
            }
        }
    }
    // The success page reads a Checkout Session the same tolerant way; what it reads is
    // checked like a webhook's before it is stored.
    if let Ok(text) = std::str::from_utf8(body)
        && let Ok((session, created)) = checkout_session(text)
    {
        let event = BillingEvent { id: format!("fulfil_{}", session.id), created, kind: EventKind::Checkout(session) };
        if event.check_ids().is_ok() {
            stored_ids(&event).into_iter().for_each(|(field, id)| within_limits(field, id));
        }
    }
});

/// CONTRACT §3: 1 to 255 bytes, not blank, no control nor bidirectional formatting
/// characters (so no NUL).
fn within_limits(field: &str, value: &str) {
    assert!(!value.trim().is_empty(), "{field} is blank: {value:?}");
    assert!(value.len() <= MAX_ID_BYTES, "{field} is {} bytes", value.len());
    assert!(!value.chars().any(char::is_control), "{field} has a control character: {value:?}");
    assert!(!value.chars().any(is_bidi), "{field} has a bidirectional formatting character: {value:?}");
}

/// U+061C, U+200E, U+200F, U+202A to U+202E and U+2066 to U+2069.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Every time an event that passed the edge carries is a unix time from 1970 to 9999.
fn times_within_limits(event: &BillingEvent) {
    let mut times = vec![Some(event.created)];
    match &event.kind {
        EventKind::InvoicePaid(i) | EventKind::InvoicePaymentFailed(i) => {
            times.extend(i.plan_lines.iter().flat_map(|l| [l.period_start, l.period_end]));
        }
        EventKind::SubscriptionChanged(s) | EventKind::SubscriptionDeleted(s) => {
            times.extend([s.start_date, s.current_period_start, s.current_period_end]);
        }
        _ => {}
    }
    for t in times.into_iter().flatten() {
        assert!((0..=MAX_TIME).contains(&t), "a time of {t} passed the edge");
    }
}

/// Every string of the event that the store writes, each field named so that adding
/// one to the event fails to compile here until it is listed.
fn stored_ids(event: &BillingEvent) -> Vec<(&'static str, &str)> {
    let BillingEvent { id, created: _, kind } = event;
    let mut ids = vec![("id", id.as_str())];
    match kind {
        EventKind::Checkout(CheckoutSession { id, mode: _, paid: _, item, subscription, payment_intent, owner: o }) => {
            ids.push(("checkout.id", id));
            ids.extend(item.as_deref().map(|i| ("checkout.item", i)));
            ids.extend(subscription.as_deref().map(|s| ("checkout.subscription", s)));
            ids.extend(payment_intent.as_deref().map(|p| ("checkout.payment_intent", p)));
            owner(o, &mut ids);
        }
        EventKind::InvoicePaid(invoice) | EventKind::InvoicePaymentFailed(invoice) => {
            let Invoice { id, subscription, billing_reason: _, amount_paid: _, plan_lines, owner: o } = invoice;
            ids.push(("invoice.id", id));
            ids.extend(subscription.as_deref().map(|s| ("invoice.subscription", s)));
            for PlanLine { price_id, period_start: _, period_end: _ } in plan_lines {
                ids.extend(price_id.as_deref().map(|p| ("invoice.lines.price", p)));
            }
            owner(o, &mut ids);
        }
        EventKind::SubscriptionChanged(subscription) | EventKind::SubscriptionDeleted(subscription) => {
            let Subscription {
                id,
                status,
                price_id,
                start_date: _,
                current_period_start: _,
                current_period_end: _,
                cancel_at_period_end: _,
                owner: o,
            } = subscription;
            ids.push(("subscription.id", id));
            ids.push(("subscription.status", status));
            ids.extend(price_id.as_deref().map(|p| ("subscription.price", p)));
            owner(o, &mut ids);
        }
        EventKind::ChargeRefunded(charge) => {
            let tally_core::event::Charge { id, payment_intent, amount: _, amount_refunded: _, owner: o } = charge;
            ids.push(("charge.id", id));
            ids.extend(payment_intent.as_deref().map(|p| ("charge.payment_intent", p)));
            owner(o, &mut ids);
        }
        EventKind::CustomerChanged(o) => owner(o, &mut ids),
        EventKind::Unhandled => {}
    }
    ids
}

fn owner<'a>(o: &'a Owner, ids: &mut Vec<(&'static str, &'a str)>) {
    let Owner { user_id, customer } = o;
    ids.extend(user_id.as_deref().map(|u| ("owner.user_id", u)));
    ids.extend(customer.as_deref().map(|c| ("owner.customer", c)));
}
