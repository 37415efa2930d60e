//! Subscriptions: the first period granted once, renewals, plan changes, cancellation,
//! failed payments and events out of order.

use serde_json::Value;
use tally_stripe::fake::Shape;

use crate::helpers::{Customer, Db, MONTH, TestApp, now, spawn_app};
use crate::on_both_backends_and_catalogues;

on_both_backends_and_catalogues!(
    new_user_is_free_with_the_free_allowance,
    subscription_checkout_grants_the_plan,
    duplicate_delivery_grants_credits_once,
    the_first_period_is_granted_once_whichever_payment_arrives_first,
    unpaid_checkout_grants_nothing,
    incomplete_subscription_grants_nothing,
    renewal_resets_plan_bucket_once_per_invoice,
    late_older_invoice_changes_nothing,
    upgrade_mid_period_adds_the_difference,
    downgrade_waits_for_the_next_renewal,
    upgrade_seen_before_payment_gives_the_same_balance,
    cancellation_keeps_topup_credits,
    payment_failure_marks_past_due_without_grant,
    cancel_at_period_end_keeps_the_tier_and_shows_it,
    an_update_no_newer_than_the_deletion_changes_nothing,
    older_update_does_not_overwrite_newer_state,
    late_invoice_of_a_deleted_subscription_grants_nothing,
    user_is_found_by_stored_customer_id,
    full_lifecycle_reads_both_shapes,
);

/// A paid subscription of `user` to the plan of `price`, through checkout and the
/// subscription's created event.
async fn subscribe(app: &TestApp, c: &Customer, sub: &str, price: &str, start: i64) {
    let s = app.shop;
    let item = if price == s.low.price { s.low.id } else { s.high.id };
    app.deliver(&c.checkout(&format!("cs_{sub}"), sub, item, "paid", start), "applied").await;
    let created = c.subscription("customer.subscription.created", sub, price, "active", start, start, false, start);
    app.deliver(&created, "applied").await;
}

async fn new_user_is_free_with_the_free_allowance(db: Db) {
    let app = spawn_app(db).await;
    let b = app.billing("nobody").await;
    assert_eq!(b["tier"], "free");
    assert_eq!(b["credits"], app.shop.free);
    assert_eq!(b["plan_credits"], app.shop.free);
    assert_eq!(b["topup_credits"], 0);
    assert_eq!(b["reserved_credits"], 0);
    assert_eq!(b["subscription"], Value::Null);
}

async fn subscription_checkout_grants_the_plan(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    app.deliver(&c.checkout("cs_1", "sub_1", s.low.id, "paid", now()), "applied").await;
    assert_eq!(app.balance("alice").await, (s.low.id.into(), s.low.credits, 0));
    let b = app.billing("alice").await;
    assert_eq!(b["subscription"]["id"], "sub_1");
    assert_eq!(b["subscription"]["status"], "active");
    assert_eq!(b["subscription"]["plan"], s.low.id);
    app.assert_books_balance().await;
}

async fn duplicate_delivery_grants_credits_once(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let event = c.checkout("cs_1", "sub_1", s.high.id, "paid", now());
    app.deliver(&event, "applied").await;
    app.spend("alice", 100, "k1").await;
    app.deliver(&event, "duplicate").await;
    app.deliver(&event, "duplicate").await;
    assert_eq!(app.balance("alice").await, (s.high.id.into(), s.high.credits - 100, 0));
    assert_eq!(app.stored(event["id"].as_str().unwrap()).await.unwrap().attempts, 3);
    app.assert_books_balance().await;
}

/// The two payments of a subscription's first period, by the one that arrives first.
#[derive(Debug, Clone, Copy)]
enum FirstPayment {
    Checkout,
    Invoice,
}

/// Checkout and the first invoice pay for the same period: whichever comes second
/// grants nothing, so what was spent in between stays spent.
async fn the_first_period_is_granted_once_whichever_payment_arrives_first(db: Db) {
    for first in [FirstPayment::Checkout, FirstPayment::Invoice] {
        for shape in [Shape::V2023, Shape::V2026] {
            let app = spawn_app(db.clone()).await;
            let s = app.shop;
            let c = Customer::new("alice", shape, s);
            let t = now();
            let checkout = c.checkout("cs_1", "sub_1", s.low.id, "paid", t);
            let invoice = c.invoice("invoice.paid", "in_1", "sub_1", s.low.price, "subscription_create", t, t);
            let (one, two) = match first {
                FirstPayment::Checkout => (checkout, invoice),
                FirstPayment::Invoice => {
                    // The invoice names no user; checkout links the customer afterwards,
                    // so give the invoice's subscription a user first through its created
                    // event.
                    let created = c.subscription(
                        "customer.subscription.created",
                        "sub_1",
                        s.low.price,
                        "incomplete",
                        t,
                        t,
                        false,
                        t,
                    );
                    app.deliver(&created, "applied").await;
                    (invoice, checkout)
                }
            };
            app.deliver(&one, "applied").await;
            app.spend("alice", 10, "k1").await;
            app.post_event(&two).await;
            assert_eq!(
                app.balance("alice").await,
                (s.low.id.into(), s.low.credits - 10, 0),
                "{first:?} first, {shape:?}"
            );
            app.assert_books_balance().await;
        }
    }
}

async fn unpaid_checkout_grants_nothing(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let event = c.checkout("cs_1", "sub_1", s.low.id, "unpaid", now());
    app.deliver(&event, "ignored").await;
    assert_eq!(app.balance("alice").await, ("free".into(), s.free, 0));
}

async fn incomplete_subscription_grants_nothing(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let t = now();
    app.deliver(
        &c.subscription("customer.subscription.created", "sub_1", s.low.price, "incomplete", t, t, false, t),
        "applied",
    )
    .await;
    assert_eq!(app.balance("alice").await, ("free".into(), s.free, 0));
    assert_eq!(app.billing("alice").await["subscription"]["status"], "incomplete");
}

async fn renewal_resets_plan_bucket_once_per_invoice(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let t = now() - MONTH;
    subscribe(&app, &c, "sub_1", s.low.price, t).await;
    app.spend("alice", 20, "k1").await;
    let renewal = c.invoice("invoice.paid", "in_2", "sub_1", s.low.price, "subscription_cycle", t + MONTH, t + MONTH);
    app.deliver(&renewal, "applied").await;
    assert_eq!(app.balance("alice").await, (s.low.id.into(), s.low.credits, 0));
    app.spend("alice", 30, "k2").await;
    // The same invoice again, as a new event (invoice.payment_succeeded is sent too).
    let again = c.invoice(
        "invoice.payment_succeeded",
        "in_2",
        "sub_1",
        s.low.price,
        "subscription_cycle",
        t + MONTH,
        t + MONTH,
    );
    app.deliver(&again, "ignored").await;
    assert_eq!(app.balance("alice").await, (s.low.id.into(), s.low.credits - 30, 0));
    app.assert_books_balance().await;
}

async fn late_older_invoice_changes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2023, s);
    let t = now() - 3 * MONTH;
    subscribe(&app, &c, "sub_1", s.low.price, t).await;
    let third =
        c.invoice("invoice.paid", "in_3", "sub_1", s.low.price, "subscription_cycle", t + 2 * MONTH, t + 2 * MONTH);
    app.deliver(&third, "applied").await;
    app.spend("alice", 10, "k1").await;
    // The second period's invoice arrives after the third's: it resets nothing.
    let second = c.invoice("invoice.paid", "in_2", "sub_1", s.low.price, "subscription_cycle", t + MONTH, t + MONTH);
    app.deliver(&second, "ignored").await;
    assert_eq!(app.balance("alice").await, (s.low.id.into(), s.low.credits - 10, 0));
    app.assert_books_balance().await;
}

async fn upgrade_mid_period_adds_the_difference(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let t = now() - 10;
    subscribe(&app, &c, "sub_1", s.low.price, t).await;
    app.spend("alice", 10, "k1").await;
    let upgrade = c.subscription("customer.subscription.updated", "sub_1", s.high.price, "active", t, t, false, t + 5);
    app.deliver(&upgrade, "applied").await;
    let upgraded = s.low.credits - 10 + (s.high.credits - s.low.credits);
    assert_eq!(app.balance("alice").await, (s.high.id.into(), upgraded, 0));
    assert_eq!(app.billing("alice").await["subscription"]["plan"], s.high.id);
    // Replaying the upgrade as another event grants nothing more.
    let again = c.subscription("customer.subscription.updated", "sub_1", s.high.price, "active", t, t, false, t + 6);
    app.post_event(&again).await;
    assert_eq!(app.balance("alice").await, (s.high.id.into(), upgraded, 0));
    app.assert_books_balance().await;
}

async fn downgrade_waits_for_the_next_renewal(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2023, s);
    let t = now() - MONTH;
    subscribe(&app, &c, "sub_1", s.high.price, t).await;
    app.spend("alice", 1_000, "k1").await;
    let downgrade = c.subscription("customer.subscription.updated", "sub_1", s.low.price, "active", t, t, false, t + 5);
    app.deliver(&downgrade, "applied").await;
    assert_eq!(
        app.balance("alice").await,
        (s.high.id.into(), s.high.credits - 1_000, 0),
        "nothing is taken mid-period"
    );
    assert_eq!(app.billing("alice").await["subscription"]["plan"], s.low.id);
    let renewal = c.invoice("invoice.paid", "in_2", "sub_1", s.low.price, "subscription_cycle", t + MONTH, t + MONTH);
    app.deliver(&renewal, "applied").await;
    assert_eq!(app.balance("alice").await, (s.low.id.into(), s.low.credits, 0));
    app.assert_books_balance().await;
}

async fn upgrade_seen_before_payment_gives_the_same_balance(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let t = now();
    // The upgrade of the first period arrives before the checkout that paid for it.
    let upgrade = c.subscription("customer.subscription.updated", "sub_1", s.high.price, "active", t, t, false, t + 5);
    app.post_event(&upgrade).await;
    app.deliver(&c.checkout("cs_1", "sub_1", s.low.id, "paid", t), "applied").await;
    assert_eq!(app.balance("alice").await, (s.high.id.into(), s.high.credits, 0));
    app.assert_books_balance().await;
}

async fn cancellation_keeps_topup_credits(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let t = now() - 100;
    subscribe(&app, &c, "sub_1", s.low.price, t).await;
    app.deliver(&c.topup("checkout.session.completed", "cs_top", "pi_top", "paid", t + 1), "applied").await;
    // All of the plan bucket and some of the top-up.
    app.spend("alice", s.low.credits + 100, "k1").await;
    assert_eq!(app.balance("alice").await, (s.low.id.into(), 0, s.pack.credits - 100));
    let deleted =
        c.subscription("customer.subscription.deleted", "sub_1", s.low.price, "canceled", t, t, false, t + 50);
    app.deliver(&deleted, "applied").await;
    assert_eq!(app.balance("alice").await, ("free".into(), s.free, s.pack.credits - 100));
    assert_eq!(app.billing("alice").await["subscription"]["status"], "canceled");
    app.deliver(&deleted, "duplicate").await;
    assert_eq!(app.balance("alice").await, ("free".into(), s.free, s.pack.credits - 100));
    app.assert_books_balance().await;
}

async fn payment_failure_marks_past_due_without_grant(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let t = now() - MONTH;
    subscribe(&app, &c, "sub_1", s.low.price, t).await;
    app.spend("alice", 20, "k1").await;
    let failed =
        c.invoice("invoice.payment_failed", "in_2", "sub_1", s.low.price, "subscription_cycle", t + MONTH, t + MONTH);
    app.deliver(&failed, "applied").await;
    let b = app.billing("alice").await;
    assert_eq!(b["subscription"]["status"], "past_due");
    assert_eq!((b["tier"].as_str(), b["plan_credits"].as_i64()), (Some(s.low.id), Some(s.low.credits - 20)));
    // The retry succeeds: the period is granted and the subscription is active again.
    let paid =
        c.invoice("invoice.paid", "in_2", "sub_1", s.low.price, "subscription_cycle", t + MONTH, t + MONTH + 3600);
    app.deliver(&paid, "applied").await;
    let b = app.billing("alice").await;
    assert_eq!(b["subscription"]["status"], "active");
    assert_eq!(b["plan_credits"], s.low.credits);
}

async fn cancel_at_period_end_keeps_the_tier_and_shows_it(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2023, s);
    let t = now() - 100;
    subscribe(&app, &c, "sub_1", s.low.price, t).await;
    let cancel = c.subscription("customer.subscription.updated", "sub_1", s.low.price, "active", t, t, true, t + 10);
    app.deliver(&cancel, "applied").await;
    let b = app.billing("alice").await;
    assert_eq!(b["tier"], s.low.id);
    assert_eq!(b["subscription"]["cancel_at_period_end"], true);
    assert_eq!(b["subscription"]["current_period_end"], t + MONTH);
}

/// An update created before the deletion, or in the same second, arrives after it: the
/// subscription stays canceled and grants nothing, even for a better plan.
async fn an_update_no_newer_than_the_deletion_changes_nothing(db: Db) {
    let s = db.shop;
    // The deletion is created at t + 50: one update was created before it, for a better
    // plan, and one in the same second.
    let cases = [("older", 40, s.high.price, Shape::V2026), ("same second", 50, s.low.price, Shape::V2023)];
    for (case, updated_at, price, shape) in cases {
        let app = spawn_app(db.clone()).await;
        let c = Customer::new("alice", shape, s);
        let t = now() - 100;
        subscribe(&app, &c, "sub_1", s.low.price, t).await;
        app.deliver(
            &c.subscription("customer.subscription.deleted", "sub_1", s.low.price, "canceled", t, t, false, t + 50),
            "applied",
        )
        .await;
        let late =
            c.subscription("customer.subscription.updated", "sub_1", price, "active", t, t, false, t + updated_at);
        app.post_event(&late).await;
        let b = app.billing("alice").await;
        assert_eq!(b["subscription"]["status"], "canceled", "{case}");
        assert_eq!((b["tier"].as_str(), b["plan_credits"].as_i64()), (Some("free"), Some(s.free)), "{case}");
        app.assert_books_balance().await;
    }
}

async fn older_update_does_not_overwrite_newer_state(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let t = now() - 100;
    subscribe(&app, &c, "sub_1", s.low.price, t).await;
    app.deliver(
        &c.subscription("customer.subscription.updated", "sub_1", s.low.price, "past_due", t, t, false, t + 30),
        "applied",
    )
    .await;
    let older = c.subscription("customer.subscription.updated", "sub_1", s.low.price, "active", t, t, true, t + 20);
    app.post_event(&older).await;
    let b = app.billing("alice").await;
    assert_eq!(b["subscription"]["status"], "past_due");
    assert_eq!(b["subscription"]["cancel_at_period_end"], false);
}

async fn late_invoice_of_a_deleted_subscription_grants_nothing(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let t = now() - MONTH;
    subscribe(&app, &c, "sub_1", s.low.price, t).await;
    app.deliver(
        &c.subscription("customer.subscription.deleted", "sub_1", s.low.price, "canceled", t, t, false, t + 50),
        "applied",
    )
    .await;
    let late = c.invoice("invoice.paid", "in_2", "sub_1", s.low.price, "subscription_cycle", t + MONTH, t + MONTH);
    app.post_event(&late).await;
    assert_eq!(app.balance("alice").await, ("free".into(), s.free, 0));
    app.assert_books_balance().await;
}

async fn user_is_found_by_stored_customer_id(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let t = now() - MONTH;
    app.deliver(&c.checkout("cs_1", "sub_1", s.low.id, "paid", t), "applied").await;
    // A renewal of another subscription of the same customer names neither user nor
    // a known subscription: the stored customer id finds alice.
    let renewal =
        c.invoice("invoice.paid", "in_9", "sub_other", s.low.price, "subscription_cycle", t + MONTH, t + MONTH);
    let (_, body) = app.post_event(&renewal).await;
    assert_eq!(body["user_id"], "alice", "{body}");
}

/// Subscribe, top up, spend into the top-up, upgrade, renew, refund the top-up and
/// cancel, in each shape of Stripe's payloads.
async fn full_lifecycle_reads_both_shapes(db: Db) {
    for shape in [Shape::V2023, Shape::V2026] {
        let app = spawn_app(db.clone()).await;
        let s = app.shop;
        let (low, high) = (s.low.id, s.high.id);
        let c = Customer::new("alice", shape, s);
        let t = now() - 2 * MONTH;
        subscribe(&app, &c, "sub_1", s.low.price, t).await;
        let first = c.invoice("invoice.paid", "in_1", "sub_1", s.low.price, "subscription_create", t, t);
        app.deliver(&first, "ignored").await;
        app.deliver(&c.topup("checkout.session.completed", "cs_top", "pi_top", "paid", t + 10), "applied").await;
        // The plan bucket and half the top-up.
        let topup_left = s.pack.credits - s.pack.credits / 2;
        app.spend("alice", s.low.credits + s.pack.credits / 2, "k1").await;
        assert_eq!(app.balance("alice").await, (low.into(), 0, topup_left), "{shape:?}");
        let up = c.subscription("customer.subscription.updated", "sub_1", s.high.price, "active", t, t, false, t + 20);
        app.deliver(&up, "applied").await;
        let upgraded = s.high.credits - s.low.credits;
        assert_eq!(app.balance("alice").await, (high.into(), upgraded, topup_left), "{shape:?}");
        let renewal =
            c.invoice("invoice.paid", "in_2", "sub_1", s.high.price, "subscription_cycle", t + MONTH, t + MONTH);
        app.deliver(&renewal, "applied").await;
        assert_eq!(app.balance("alice").await, (high.into(), s.high.credits, topup_left), "{shape:?}");
        // A full refund takes back what is left of the top-up.
        app.deliver(&c.refund("ch_1", "pi_top", s.pack.amount, t + MONTH + 5), "applied").await;
        assert_eq!(app.balance("alice").await, (high.into(), s.high.credits, 0), "{shape:?}");
        let deleted = c.subscription(
            "customer.subscription.deleted",
            "sub_1",
            s.high.price,
            "canceled",
            t,
            t + MONTH,
            false,
            t + MONTH + 9,
        );
        app.deliver(&deleted, "applied").await;
        assert_eq!(app.balance("alice").await, ("free".into(), s.free, 0), "{shape:?}");
        app.assert_books_balance().await;
    }
}
