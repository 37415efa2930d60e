//! Subscriptions: the first period granted once, renewals, plan changes, cancellation,
//! failed payments and events out of order.

use serde_json::Value;
use tally_stripe::fake::Shape;

use crate::helpers::{Customer, Db, ENTERPRISE, MONTH, PRO, TestApp, now, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    new_user_is_free_with_100_credits,
    subscription_checkout_grants_the_plan,
    duplicate_delivery_grants_credits_once,
    checkout_then_first_invoice_grants_once,
    first_invoice_then_checkout_grants_once,
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
    older_update_after_deleted_changes_nothing,
    update_of_the_same_second_after_deleted_changes_nothing,
    older_update_does_not_overwrite_newer_state,
    late_invoice_of_a_deleted_subscription_grants_nothing,
    user_is_found_by_stored_customer_id,
    full_lifecycle_reads_the_2023_shape,
    full_lifecycle_reads_the_2026_shape,
);

/// A paid pro subscription for `user`, through checkout and the first invoice.
async fn subscribe(app: &TestApp, c: &Customer, sub: &str, price: &str, start: i64) {
    let item = if price == PRO { "pro" } else { "enterprise" };
    app.deliver(&c.checkout(&format!("cs_{sub}"), sub, item, "paid", start), "applied").await;
    let created = c.subscription("customer.subscription.created", sub, price, "active", start, start, false, start);
    app.deliver(&created, "applied").await;
}

async fn new_user_is_free_with_100_credits(db: Db) {
    let app = spawn_app(db).await;
    let b = app.billing("nobody").await;
    assert_eq!(b["tier"], "free");
    assert_eq!(b["credits"], 100);
    assert_eq!(b["plan_credits"], 100);
    assert_eq!(b["topup_credits"], 0);
    assert_eq!(b["reserved_credits"], 0);
    assert_eq!(b["subscription"], Value::Null);
}

async fn subscription_checkout_grants_the_plan(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    app.deliver(&c.checkout("cs_1", "sub_1", "pro", "paid", now()), "applied").await;
    assert_eq!(app.balance("alice").await, ("pro".into(), 2_500, 0));
    let b = app.billing("alice").await;
    assert_eq!(b["subscription"]["id"], "sub_1");
    assert_eq!(b["subscription"]["status"], "active");
    assert_eq!(b["subscription"]["plan"], "pro");
    app.assert_books_balance().await;
}

async fn duplicate_delivery_grants_credits_once(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let event = c.checkout("cs_1", "sub_1", "enterprise", "paid", now());
    app.deliver(&event, "applied").await;
    app.spend("alice", 100, "k1").await;
    app.deliver(&event, "duplicate").await;
    app.deliver(&event, "duplicate").await;
    assert_eq!(app.balance("alice").await, ("enterprise".into(), 9_900, 0));
    assert_eq!(app.stored(event["id"].as_str().unwrap()).await.unwrap().attempts, 3);
    app.assert_books_balance().await;
}

async fn checkout_then_first_invoice_grants_once(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2023);
    let t = now();
    app.deliver(&c.checkout("cs_1", "sub_1", "pro", "paid", t), "applied").await;
    app.spend("alice", 500, "k1").await;
    let invoice = c.invoice("invoice.paid", "in_1", "sub_1", PRO, "subscription_create", t, t);
    app.post_event(&invoice).await;
    assert_eq!(app.balance("alice").await, ("pro".into(), 2_000, 0));
    app.assert_books_balance().await;
}

async fn first_invoice_then_checkout_grants_once(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let t = now();
    // The invoice names no user; checkout links the customer afterwards, so give the
    // invoice's subscription a user first through its created event.
    let created = c.subscription("customer.subscription.created", "sub_1", PRO, "incomplete", t, t, false, t);
    app.deliver(&created, "applied").await;
    app.deliver(&c.invoice("invoice.paid", "in_1", "sub_1", PRO, "subscription_create", t, t), "applied").await;
    app.spend("alice", 500, "k1").await;
    app.post_event(&c.checkout("cs_1", "sub_1", "pro", "paid", t)).await;
    assert_eq!(app.balance("alice").await, ("pro".into(), 2_000, 0));
    app.assert_books_balance().await;
}

async fn unpaid_checkout_grants_nothing(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let event = c.checkout("cs_1", "sub_1", "pro", "unpaid", now());
    app.deliver(&event, "ignored").await;
    assert_eq!(app.balance("alice").await, ("free".into(), 100, 0));
}

async fn incomplete_subscription_grants_nothing(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let t = now();
    app.deliver(
        &c.subscription("customer.subscription.created", "sub_1", PRO, "incomplete", t, t, false, t),
        "applied",
    )
    .await;
    assert_eq!(app.balance("alice").await, ("free".into(), 100, 0));
    assert_eq!(app.billing("alice").await["subscription"]["status"], "incomplete");
}

async fn renewal_resets_plan_bucket_once_per_invoice(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let t = now() - MONTH;
    subscribe(&app, &c, "sub_1", PRO, t).await;
    app.spend("alice", 2_000, "k1").await;
    let renewal = c.invoice("invoice.paid", "in_2", "sub_1", PRO, "subscription_cycle", t + MONTH, t + MONTH);
    app.deliver(&renewal, "applied").await;
    assert_eq!(app.balance("alice").await, ("pro".into(), 2_500, 0));
    app.spend("alice", 300, "k2").await;
    // The same invoice again, as a new event (invoice.payment_succeeded is sent too).
    let again =
        c.invoice("invoice.payment_succeeded", "in_2", "sub_1", PRO, "subscription_cycle", t + MONTH, t + MONTH);
    app.deliver(&again, "ignored").await;
    assert_eq!(app.balance("alice").await, ("pro".into(), 2_200, 0));
    app.assert_books_balance().await;
}

async fn late_older_invoice_changes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2023);
    let t = now() - 3 * MONTH;
    subscribe(&app, &c, "sub_1", PRO, t).await;
    let third = c.invoice("invoice.paid", "in_3", "sub_1", PRO, "subscription_cycle", t + 2 * MONTH, t + 2 * MONTH);
    app.deliver(&third, "applied").await;
    app.spend("alice", 1_000, "k1").await;
    // The second period's invoice arrives after the third's: it resets nothing.
    let second = c.invoice("invoice.paid", "in_2", "sub_1", PRO, "subscription_cycle", t + MONTH, t + MONTH);
    app.deliver(&second, "ignored").await;
    assert_eq!(app.balance("alice").await, ("pro".into(), 1_500, 0));
    app.assert_books_balance().await;
}

async fn upgrade_mid_period_adds_the_difference(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let t = now() - 10;
    subscribe(&app, &c, "sub_1", PRO, t).await;
    app.spend("alice", 500, "k1").await;
    let upgrade = c.subscription("customer.subscription.updated", "sub_1", ENTERPRISE, "active", t, t, false, t + 5);
    app.deliver(&upgrade, "applied").await;
    assert_eq!(app.balance("alice").await, ("enterprise".into(), 9_500, 0));
    assert_eq!(app.billing("alice").await["subscription"]["plan"], "enterprise");
    // Replaying the upgrade as another event grants nothing more.
    let again = c.subscription("customer.subscription.updated", "sub_1", ENTERPRISE, "active", t, t, false, t + 6);
    app.post_event(&again).await;
    assert_eq!(app.balance("alice").await, ("enterprise".into(), 9_500, 0));
    app.assert_books_balance().await;
}

async fn downgrade_waits_for_the_next_renewal(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2023);
    let t = now() - MONTH;
    subscribe(&app, &c, "sub_1", ENTERPRISE, t).await;
    app.spend("alice", 1_000, "k1").await;
    let downgrade = c.subscription("customer.subscription.updated", "sub_1", PRO, "active", t, t, false, t + 5);
    app.deliver(&downgrade, "applied").await;
    assert_eq!(app.balance("alice").await, ("enterprise".into(), 9_000, 0), "nothing is taken mid-period");
    assert_eq!(app.billing("alice").await["subscription"]["plan"], "pro");
    let renewal = c.invoice("invoice.paid", "in_2", "sub_1", PRO, "subscription_cycle", t + MONTH, t + MONTH);
    app.deliver(&renewal, "applied").await;
    assert_eq!(app.balance("alice").await, ("pro".into(), 2_500, 0));
    app.assert_books_balance().await;
}

async fn upgrade_seen_before_payment_gives_the_same_balance(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let t = now();
    // The upgrade of the first period arrives before the checkout that paid for it.
    let upgrade = c.subscription("customer.subscription.updated", "sub_1", ENTERPRISE, "active", t, t, false, t + 5);
    app.post_event(&upgrade).await;
    app.deliver(&c.checkout("cs_1", "sub_1", "pro", "paid", t), "applied").await;
    assert_eq!(app.balance("alice").await, ("enterprise".into(), 10_000, 0));
    app.assert_books_balance().await;
}

async fn cancellation_keeps_topup_credits(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let t = now() - 100;
    subscribe(&app, &c, "sub_1", PRO, t).await;
    app.deliver(&c.topup("checkout.session.completed", "cs_top", "pi_top", "paid", t + 1), "applied").await;
    app.spend("alice", 2_600, "k1").await;
    assert_eq!(app.balance("alice").await, ("pro".into(), 0, 900));
    let deleted = c.subscription("customer.subscription.deleted", "sub_1", PRO, "canceled", t, t, false, t + 50);
    app.deliver(&deleted, "applied").await;
    assert_eq!(app.balance("alice").await, ("free".into(), 100, 900));
    assert_eq!(app.billing("alice").await["subscription"]["status"], "canceled");
    app.deliver(&deleted, "duplicate").await;
    assert_eq!(app.balance("alice").await, ("free".into(), 100, 900));
    app.assert_books_balance().await;
}

async fn payment_failure_marks_past_due_without_grant(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let t = now() - MONTH;
    subscribe(&app, &c, "sub_1", PRO, t).await;
    app.spend("alice", 2_000, "k1").await;
    let failed = c.invoice("invoice.payment_failed", "in_2", "sub_1", PRO, "subscription_cycle", t + MONTH, t + MONTH);
    app.deliver(&failed, "applied").await;
    let b = app.billing("alice").await;
    assert_eq!(b["subscription"]["status"], "past_due");
    assert_eq!((b["tier"].as_str(), b["plan_credits"].as_i64()), (Some("pro"), Some(500)));
    // The retry succeeds: the period is granted and the subscription is active again.
    let paid = c.invoice("invoice.paid", "in_2", "sub_1", PRO, "subscription_cycle", t + MONTH, t + MONTH + 3600);
    app.deliver(&paid, "applied").await;
    let b = app.billing("alice").await;
    assert_eq!(b["subscription"]["status"], "active");
    assert_eq!(b["plan_credits"], 2_500);
}

async fn cancel_at_period_end_keeps_the_tier_and_shows_it(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2023);
    let t = now() - 100;
    subscribe(&app, &c, "sub_1", PRO, t).await;
    let cancel = c.subscription("customer.subscription.updated", "sub_1", PRO, "active", t, t, true, t + 10);
    app.deliver(&cancel, "applied").await;
    let b = app.billing("alice").await;
    assert_eq!(b["tier"], "pro");
    assert_eq!(b["subscription"]["cancel_at_period_end"], true);
    assert_eq!(b["subscription"]["current_period_end"], t + MONTH);
}

async fn older_update_after_deleted_changes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let t = now() - 100;
    subscribe(&app, &c, "sub_1", PRO, t).await;
    app.deliver(
        &c.subscription("customer.subscription.deleted", "sub_1", PRO, "canceled", t, t, false, t + 50),
        "applied",
    )
    .await;
    let older = c.subscription("customer.subscription.updated", "sub_1", ENTERPRISE, "active", t, t, false, t + 40);
    app.post_event(&older).await;
    let b = app.billing("alice").await;
    assert_eq!(b["subscription"]["status"], "canceled");
    assert_eq!((b["tier"].as_str(), b["plan_credits"].as_i64()), (Some("free"), Some(100)));
    app.assert_books_balance().await;
}

async fn update_of_the_same_second_after_deleted_changes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2023);
    let t = now() - 100;
    subscribe(&app, &c, "sub_1", PRO, t).await;
    app.deliver(
        &c.subscription("customer.subscription.deleted", "sub_1", PRO, "canceled", t, t, false, t + 50),
        "applied",
    )
    .await;
    let same_second = c.subscription("customer.subscription.updated", "sub_1", PRO, "active", t, t, false, t + 50);
    app.post_event(&same_second).await;
    let b = app.billing("alice").await;
    assert_eq!(b["subscription"]["status"], "canceled");
    assert_eq!(b["tier"], "free");
}

async fn older_update_does_not_overwrite_newer_state(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let t = now() - 100;
    subscribe(&app, &c, "sub_1", PRO, t).await;
    app.deliver(
        &c.subscription("customer.subscription.updated", "sub_1", PRO, "past_due", t, t, false, t + 30),
        "applied",
    )
    .await;
    let older = c.subscription("customer.subscription.updated", "sub_1", PRO, "active", t, t, true, t + 20);
    app.post_event(&older).await;
    let b = app.billing("alice").await;
    assert_eq!(b["subscription"]["status"], "past_due");
    assert_eq!(b["subscription"]["cancel_at_period_end"], false);
}

async fn late_invoice_of_a_deleted_subscription_grants_nothing(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let t = now() - MONTH;
    subscribe(&app, &c, "sub_1", PRO, t).await;
    app.deliver(
        &c.subscription("customer.subscription.deleted", "sub_1", PRO, "canceled", t, t, false, t + 50),
        "applied",
    )
    .await;
    let late = c.invoice("invoice.paid", "in_2", "sub_1", PRO, "subscription_cycle", t + MONTH, t + MONTH);
    app.post_event(&late).await;
    assert_eq!(app.balance("alice").await, ("free".into(), 100, 0));
    app.assert_books_balance().await;
}

async fn user_is_found_by_stored_customer_id(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let t = now() - MONTH;
    app.deliver(&c.checkout("cs_1", "sub_1", "pro", "paid", t), "applied").await;
    // A renewal of another subscription of the same customer names neither user nor
    // a known subscription: the stored customer id finds alice.
    let renewal = c.invoice("invoice.paid", "in_9", "sub_other", PRO, "subscription_cycle", t + MONTH, t + MONTH);
    let (_, body) = app.post_event(&renewal).await;
    assert_eq!(body["user_id"], "alice", "{body}");
}

async fn full_lifecycle(shape: Shape, db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", shape);
    let t = now() - 2 * MONTH;
    subscribe(&app, &c, "sub_1", PRO, t).await;
    app.deliver(&c.invoice("invoice.paid", "in_1", "sub_1", PRO, "subscription_create", t, t), "ignored").await;
    app.deliver(&c.topup("checkout.session.completed", "cs_top", "pi_top", "paid", t + 10), "applied").await;
    app.spend("alice", 3_000, "k1").await;
    assert_eq!(app.balance("alice").await, ("pro".into(), 0, 500));
    let up = c.subscription("customer.subscription.updated", "sub_1", ENTERPRISE, "active", t, t, false, t + 20);
    app.deliver(&up, "applied").await;
    assert_eq!(app.balance("alice").await, ("enterprise".into(), 7_500, 500));
    let renewal = c.invoice("invoice.paid", "in_2", "sub_1", ENTERPRISE, "subscription_cycle", t + MONTH, t + MONTH);
    app.deliver(&renewal, "applied").await;
    assert_eq!(app.balance("alice").await, ("enterprise".into(), 10_000, 500));
    app.deliver(&c.refund("ch_1", "pi_top", 2_000, t + MONTH + 5), "applied").await;
    assert_eq!(app.balance("alice").await, ("enterprise".into(), 10_000, 0));
    let deleted = c.subscription(
        "customer.subscription.deleted",
        "sub_1",
        ENTERPRISE,
        "canceled",
        t,
        t + MONTH,
        false,
        t + MONTH + 9,
    );
    app.deliver(&deleted, "applied").await;
    assert_eq!(app.balance("alice").await, ("free".into(), 100, 0));
    app.assert_books_balance().await;
}

async fn full_lifecycle_reads_the_2023_shape(db: Db) {
    full_lifecycle(Shape::V2023, db).await;
}

async fn full_lifecycle_reads_the_2026_shape(db: Db) {
    full_lifecycle(Shape::V2026, db).await;
}
