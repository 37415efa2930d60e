//! Top-ups: bought once per session, async payments, refunds.

use tally_stripe::fake::Shape;

use tally_server::waiting::{Retried, retry_waiting};

use crate::helpers::{Customer, Db, now, spawn_app};
use crate::on_both_backends_and_catalogues;

on_both_backends_and_catalogues!(
    topup_checkout_adds_the_pack_once,
    unpaid_topup_waits_for_async_payment,
    async_topup_grants_once,
    partial_then_full_refund_takes_back_the_refunded_share,
    refund_after_spending_stops_at_zero,
    refund_of_an_unknown_charge_is_unmatched,
    a_refund_that_came_before_its_checkout_applies_once_the_checkout_is_in,
);

async fn topup_checkout_adds_the_pack_once(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("bob", Shape::V2026, s);
    let t = now();
    app.deliver(&c.topup("checkout.session.completed", "cs_1", "pi_1", "paid", t), "applied").await;
    // The same session in another event (such as a resend) grants nothing more.
    app.deliver(&c.topup("checkout.session.completed", "cs_1", "pi_1", "paid", t), "ignored").await;
    assert_eq!(app.balance("bob").await, ("free".into(), s.free, s.pack.credits));
    app.assert_books_balance().await;
}

async fn unpaid_topup_waits_for_async_payment(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("bob", Shape::V2023, s);
    app.deliver(&c.topup("checkout.session.completed", "cs_1", "pi_1", "unpaid", now()), "ignored").await;
    assert_eq!(app.balance("bob").await, ("free".into(), s.free, 0));
}

async fn async_topup_grants_once(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("bob", Shape::V2026, s);
    let t = now();
    app.deliver(&c.topup("checkout.session.completed", "cs_1", "pi_1", "unpaid", t), "ignored").await;
    app.deliver(&c.topup("checkout.session.async_payment_succeeded", "cs_1", "pi_1", "paid", t + 60), "applied").await;
    app.deliver(&c.topup("checkout.session.async_payment_succeeded", "cs_1", "pi_1", "paid", t + 61), "ignored").await;
    assert_eq!(app.balance("bob").await, ("free".into(), s.free, s.pack.credits));
    app.assert_books_balance().await;
}

async fn partial_then_full_refund_takes_back_the_refunded_share(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("bob", Shape::V2026, s);
    let t = now();
    app.deliver(&c.topup("checkout.session.completed", "cs_1", "pi_1", "paid", t), "applied").await;
    // A quarter of the price refunded: a quarter of the credits (rounded down).
    let quarter = s.pack.amount / 4;
    app.deliver(&c.refund("ch_1", "pi_1", quarter, t + 10), "applied").await;
    assert_eq!(app.balance("bob").await, ("free".into(), s.free, s.pack.credits - s.pack.credits / 4));
    // The rest: amount_refunded is cumulative, so only the new share is taken.
    app.deliver(&c.refund("ch_1", "pi_1", s.pack.amount, t + 20), "applied").await;
    assert_eq!(app.balance("bob").await, ("free".into(), s.free, 0));
    // A late copy of the partial refund takes nothing more.
    app.deliver(&c.refund("ch_1", "pi_1", quarter, t + 10), "ignored").await;
    assert_eq!(app.balance("bob").await, ("free".into(), s.free, 0));
    app.assert_books_balance().await;
}

async fn refund_after_spending_stops_at_zero(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("bob", Shape::V2023, s);
    let t = now();
    app.deliver(&c.topup("checkout.session.completed", "cs_1", "pi_1", "paid", t), "applied").await;
    // The plan bucket and most of the top-up: less is left than the refund takes back.
    let left = s.pack.credits / 5;
    app.spend("bob", s.free + s.pack.credits - left, "k1").await;
    assert_eq!(app.balance("bob").await, ("free".into(), 0, left));
    app.deliver(&c.refund("ch_1", "pi_1", s.pack.amount, t + 10), "applied").await;
    assert_eq!(app.balance("bob").await, ("free".into(), 0, 0));
    app.assert_books_balance().await;
}

async fn refund_of_an_unknown_charge_is_unmatched(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("stranger", Shape::V2026, app.shop);
    let event = c.refund("ch_x", "pi_unknown", app.shop.pack.amount, now());
    app.deliver(&event, "unmatched").await;
    let stored = app.stored(event["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(stored.outcome, "unmatched");
    assert_eq!(stored.payload, event.to_string());
}

/// Stripe has no order: both refunds below are answered 200 and kept as unmatched, the
/// first because no event has linked the customer to a user yet, the second because its
/// top-up's checkout has not come. Stripe never sends them again; tally's sweep tries
/// each once what it waits for is in, and each takes its share once.
async fn a_refund_that_came_before_its_checkout_applies_once_the_checkout_is_in(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("ivy", Shape::V2026, s);
    let t = now();
    let full = c.refund("ch_1", "pi_1", s.pack.amount, t + 10);
    app.deliver(&full, "unmatched").await;
    assert_eq!(app.stored(full["id"].as_str().unwrap()).await.unwrap().note.as_deref(), Some("no user found"));
    // What it waits for has not come: a sweep does not try it.
    assert_eq!(retry_waiting(&app.store, now()).await.unwrap(), Retried { tried: 0, applied: 0 });

    // A subscription's checkout links the customer; the second pack's refund then waits
    // for its own checkout only.
    app.deliver(&c.checkout("cs_sub", "sub_1", s.low.id, "paid", t + 20), "applied").await;
    let half = c.refund("ch_2", "pi_2", s.pack.amount / 2, t + 30);
    app.deliver(&half, "unmatched").await;
    assert_eq!(
        app.stored(half["id"].as_str().unwrap()).await.unwrap().note.as_deref(),
        Some("charge is not a known top-up")
    );
    // The first refund's customer is linked now, but its top-up is not in: tried, it
    // waits for that top-up instead.
    assert_eq!(retry_waiting(&app.store, now()).await.unwrap(), Retried { tried: 1, applied: 0 });
    assert_eq!(retry_waiting(&app.store, now()).await.unwrap().tried, 0);

    app.deliver(&c.topup("checkout.session.completed", "cs_1", "pi_1", "paid", t), "applied").await;
    app.deliver(&c.topup("checkout.session.completed", "cs_2", "pi_2", "paid", t + 1), "applied").await;
    assert_eq!(app.balance("ivy").await.2, 2 * s.pack.credits);
    assert_eq!(retry_waiting(&app.store, now()).await.unwrap(), Retried { tried: 2, applied: 2 });
    let (tier, plan, topup) = app.balance("ivy").await;
    assert_eq!((tier.as_str(), plan), (s.low.id, s.low.credits));
    assert_eq!(topup, s.pack.credits - s.pack.credits / 2, "the first pack refunded in full, half the second");
    assert_eq!(retry_waiting(&app.store, now()).await.unwrap().tried, 0, "nothing waits any more");
    // Three days on, what still waits is left to the operator's `tally replay`.
    let stranger = Customer::new("ned", Shape::V2026, s);
    app.deliver(&stranger.refund("ch_3", "pi_3", s.pack.amount, t), "unmatched").await;
    app.deliver(&stranger.topup("checkout.session.completed", "cs_3", "pi_3", "paid", t), "applied").await;
    assert_eq!(retry_waiting(&app.store, now() + 4 * 24 * 3600).await.unwrap().tried, 0);
    assert_eq!(retry_waiting(&app.store, now()).await.unwrap(), Retried { tried: 1, applied: 1 });
    app.assert_books_balance().await;
}
