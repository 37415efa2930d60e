//! Payloads and orders that hand-written webhook handlers get wrong.

use tally_stripe::fake::{self, Shape};

use crate::helpers::{Customer, Db, ENTERPRISE, MONTH, PRO, now, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    a_renewal_after_an_upgrade_reads_the_plan_line_not_the_proration,
    a_proration_invoice_does_not_roll_back_the_plan,
    an_upgrade_that_starts_a_new_period_grants_it_at_once,
    a_late_renewal_of_an_old_subscription_does_not_displace_a_newer_one,
    a_refund_before_its_topup_is_applied_when_redelivered,
    a_payment_checkout_that_is_not_a_topup_grants_nothing,
    a_subscription_to_another_product_is_not_tracked,
);

async fn a_renewal_after_an_upgrade_reads_the_plan_line_not_the_proration(db: Db) {
    for shape in [Shape::V2023, Shape::V2026] {
        let app = spawn_app(db.clone()).await;
        let c = Customer::new("alice", shape);
        let t = now() - MONTH;
        app.deliver(&c.checkout("cs_1", "sub_1", "pro", "paid", t), "applied").await;
        let up = c.subscription("customer.subscription.updated", "sub_1", ENTERPRISE, "active", t, t, false, t + 100);
        app.deliver(&up, "applied").await;
        let mut renewal =
            c.invoice("invoice.paid", "in_2", "sub_1", ENTERPRISE, "subscription_cycle", t + MONTH, t + MONTH);
        fake::add_proration(shape, &mut renewal["data"]["object"], PRO, t + 100, t + MONTH, -4_000);
        app.deliver(&renewal, "applied").await;
        assert_eq!(app.balance("alice").await, ("enterprise".into(), 10_000, 0), "{shape:?}");
        // The period after it is the one the plan line started, not the proration's.
        let next =
            c.invoice("invoice.paid", "in_3", "sub_1", ENTERPRISE, "subscription_cycle", t + 2 * MONTH, t + 2 * MONTH);
        app.spend("alice", 10, &format!("k{shape:?}")).await;
        app.deliver(&next, "applied").await;
        assert_eq!(app.balance("alice").await, ("enterprise".into(), 10_000, 0), "{shape:?}");
        app.assert_books_balance().await;
    }
}

async fn a_proration_invoice_does_not_roll_back_the_plan(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let t = now() - 1_000;
    app.deliver(&c.checkout("cs_1", "sub_1", "pro", "paid", t), "applied").await;
    let up = c.subscription("customer.subscription.updated", "sub_1", ENTERPRISE, "active", t, t, false, t + 100);
    app.deliver(&up, "applied").await;
    // always_invoice: an invoice of prorations only, newer than the update.
    let mut prorations =
        c.invoice("invoice.paid", "in_p", "sub_1", ENTERPRISE, "subscription_update", t + 100, t + 101);
    fake::add_proration(Shape::V2026, &mut prorations["data"]["object"], PRO, t + 100, t + MONTH, -4_000);
    prorations["data"]["object"]["lines"]["data"].as_array_mut().unwrap().pop();
    app.post_event(&prorations).await;
    let b = app.billing("alice").await;
    assert_eq!((b["tier"].as_str(), b["plan_credits"].as_i64()), (Some("enterprise"), Some(10_000)));
    assert_eq!(b["subscription"]["plan"], "enterprise");
}

async fn an_upgrade_that_starts_a_new_period_grants_it_at_once(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026);
    let t = now() - 1_000;
    app.deliver(&c.checkout("cs_1", "sub_1", "pro", "paid", t), "applied").await;
    app.spend("alice", 2_000, "k1").await;
    // billing_cycle_anchor=now: a full Enterprise period starts with the upgrade.
    let invoice = c.invoice("invoice.paid", "in_u", "sub_1", ENTERPRISE, "subscription_update", t + 500, t + 500);
    app.deliver(&invoice, "applied").await;
    assert_eq!(app.balance("alice").await, ("enterprise".into(), 10_000, 0));
}

async fn a_late_renewal_of_an_old_subscription_does_not_displace_a_newer_one(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2023);
    let t = now() - 2 * MONTH;
    app.deliver(&c.checkout("cs_a", "sub_a", "pro", "paid", t), "applied").await;
    // sub_a renews at t+MONTH, but that delivery is late; sub_b is bought after it.
    app.deliver(&c.checkout("cs_b", "sub_b", "enterprise", "paid", t + MONTH + 300), "applied").await;
    let late = c.invoice("invoice.paid", "in_a2", "sub_a", PRO, "subscription_cycle", t + MONTH, t + MONTH);
    app.post_event(&late).await;
    assert_eq!(app.balance("alice").await, ("enterprise".into(), 10_000, 0));
    let deleted =
        c.subscription("customer.subscription.deleted", "sub_a", PRO, "canceled", t, t + MONTH, false, t + MONTH + 200);
    app.deliver(&deleted, "applied").await;
    assert_eq!(app.balance("alice").await, ("enterprise".into(), 10_000, 0), "sub_b still funds the plan");
    app.assert_books_balance().await;
}

async fn a_refund_before_its_topup_is_applied_when_redelivered(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("bob", Shape::V2026);
    let t = now();
    app.spend("bob", 1, "known").await;
    let refund = c.refund("ch_1", "pi_1", 2_000, t + 10);
    app.deliver(&refund, "unmatched").await;
    app.deliver(&c.topup("checkout.session.completed", "cs_1", "pi_1", "paid", t), "applied").await;
    app.deliver(&refund, "applied").await;
    assert_eq!(app.balance("bob").await, ("free".into(), 99, 0));
    app.assert_books_balance().await;
}

async fn a_payment_checkout_that_is_not_a_topup_grants_nothing(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("bob", Shape::V2026);
    let mut event = c.topup("checkout.session.completed", "cs_link", "pi_9", "paid", now());
    event["data"]["object"]["metadata"] = serde_json::json!({"user_id": "bob"});
    app.deliver(&event, "ignored").await;
    assert_eq!(app.balance("bob").await, ("free".into(), 100, 0));
}

async fn a_subscription_to_another_product_is_not_tracked(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("bob", Shape::V2026);
    let t = now();
    let other = c.subscription("customer.subscription.created", "sub_x", "price_newsletter", "active", t, t, false, t);
    app.deliver(&other, "ignored").await;
    let invoice = c.invoice("invoice.paid", "in_x", "sub_x", "price_newsletter", "subscription_create", t, t);
    app.post_event(&invoice).await;
    let b = app.billing("bob").await;
    assert_eq!(b["subscription"], serde_json::Value::Null);
    assert_eq!(b["tier"], "free");
}
