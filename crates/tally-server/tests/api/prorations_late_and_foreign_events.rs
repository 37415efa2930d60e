//! Prorations, late deliveries and payments that are not tally's: the payloads and
//! orders that hand-written webhook handlers get wrong.

use tally_stripe::fake::{self, Shape};

use crate::helpers::{Customer, Db, MONTH, now, spawn_app};
use crate::on_both_backends_and_catalogues;

on_both_backends_and_catalogues!(
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
        let s = app.shop;
        let c = Customer::new("alice", shape, s);
        let t = now() - MONTH;
        app.deliver(&c.checkout("cs_1", "sub_1", s.low.id, "paid", t), "applied").await;
        let up = c.subscription("customer.subscription.updated", "sub_1", s.high.price, "active", t, t, false, t + 100);
        app.deliver(&up, "applied").await;
        let mut renewal =
            c.invoice("invoice.paid", "in_2", "sub_1", s.high.price, "subscription_cycle", t + MONTH, t + MONTH);
        // Its first line credits the unused time on the low plan, over the period before.
        let unused = -(s.low.amount * 4 / 5);
        fake::add_proration(shape, &mut renewal["data"]["object"], s.low.price, t + 100, t + MONTH, unused);
        app.deliver(&renewal, "applied").await;
        assert_eq!(app.balance("alice").await, (s.high.id.into(), s.high.credits, 0), "{shape:?}");
        // The period after it is the one the plan line started, not the proration's.
        let next = c.invoice(
            "invoice.paid",
            "in_3",
            "sub_1",
            s.high.price,
            "subscription_cycle",
            t + 2 * MONTH,
            t + 2 * MONTH,
        );
        app.spend("alice", 10, &format!("k{shape:?}")).await;
        app.deliver(&next, "applied").await;
        assert_eq!(app.balance("alice").await, (s.high.id.into(), s.high.credits, 0), "{shape:?}");
        app.assert_books_balance().await;
    }
}

async fn a_proration_invoice_does_not_roll_back_the_plan(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let t = now() - 1_000;
    app.deliver(&c.checkout("cs_1", "sub_1", s.low.id, "paid", t), "applied").await;
    let up = c.subscription("customer.subscription.updated", "sub_1", s.high.price, "active", t, t, false, t + 100);
    app.deliver(&up, "applied").await;
    // always_invoice: an invoice of prorations only, newer than the update.
    let mut prorations =
        c.invoice("invoice.paid", "in_p", "sub_1", s.high.price, "subscription_update", t + 100, t + 101);
    let unused = -(s.low.amount * 4 / 5);
    fake::add_proration(Shape::V2026, &mut prorations["data"]["object"], s.low.price, t + 100, t + MONTH, unused);
    prorations["data"]["object"]["lines"]["data"].as_array_mut().unwrap().pop();
    app.post_event(&prorations).await;
    let b = app.billing("alice").await;
    assert_eq!((b["tier"].as_str(), b["plan_credits"].as_i64()), (Some(s.high.id), Some(s.high.credits)));
    assert_eq!(b["subscription"]["plan"], s.high.id);
}

async fn an_upgrade_that_starts_a_new_period_grants_it_at_once(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2026, s);
    let t = now() - 1_000;
    app.deliver(&c.checkout("cs_1", "sub_1", s.low.id, "paid", t), "applied").await;
    app.spend("alice", 10, "k1").await;
    // billing_cycle_anchor=now: a full period of the high plan starts with the upgrade,
    // so its allowance resets the bucket rather than adding the difference.
    let invoice = c.invoice("invoice.paid", "in_u", "sub_1", s.high.price, "subscription_update", t + 500, t + 500);
    app.deliver(&invoice, "applied").await;
    assert_eq!(app.balance("alice").await, (s.high.id.into(), s.high.credits, 0));
}

async fn a_late_renewal_of_an_old_subscription_does_not_displace_a_newer_one(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("alice", Shape::V2023, s);
    let t = now() - 2 * MONTH;
    app.deliver(&c.checkout("cs_a", "sub_a", s.low.id, "paid", t), "applied").await;
    // sub_a renews at t+MONTH, but that delivery is late; sub_b is bought after it.
    app.deliver(&c.checkout("cs_b", "sub_b", s.high.id, "paid", t + MONTH + 300), "applied").await;
    let late = c.invoice("invoice.paid", "in_a2", "sub_a", s.low.price, "subscription_cycle", t + MONTH, t + MONTH);
    app.post_event(&late).await;
    assert_eq!(app.balance("alice").await, (s.high.id.into(), s.high.credits, 0));
    let deleted = c.subscription(
        "customer.subscription.deleted",
        "sub_a",
        s.low.price,
        "canceled",
        t,
        t + MONTH,
        false,
        t + MONTH + 200,
    );
    app.deliver(&deleted, "applied").await;
    assert_eq!(app.balance("alice").await, (s.high.id.into(), s.high.credits, 0), "sub_b still funds the plan");
    app.assert_books_balance().await;
}

async fn a_refund_before_its_topup_is_applied_when_redelivered(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("bob", Shape::V2026, s);
    let t = now();
    app.spend("bob", 1, "known").await;
    let refund = c.refund("ch_1", "pi_1", s.pack.amount, t + 10);
    app.deliver(&refund, "unmatched").await;
    app.deliver(&c.topup("checkout.session.completed", "cs_1", "pi_1", "paid", t), "applied").await;
    app.deliver(&refund, "applied").await;
    assert_eq!(app.balance("bob").await, ("free".into(), s.free - 1, 0));
    app.assert_books_balance().await;
}

async fn a_payment_checkout_that_is_not_a_topup_grants_nothing(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("bob", Shape::V2026, s);
    let mut event = c.topup("checkout.session.completed", "cs_link", "pi_9", "paid", now());
    event["data"]["object"]["metadata"] = serde_json::json!({"user_id": "bob"});
    app.deliver(&event, "ignored").await;
    assert_eq!(app.balance("bob").await, ("free".into(), s.free, 0));
}

async fn a_subscription_to_another_product_is_not_tracked(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("bob", Shape::V2026, s);
    let t = now();
    // A price in no entry of the catalogue grants nothing; it is kept for replay in case
    // the file should have named it, and `tally audit` lists it as a notice.
    let other = c.subscription("customer.subscription.created", "sub_x", "price_newsletter", "active", t, t, false, t);
    app.deliver(&other, "unmatched").await;
    let invoice = c.invoice("invoice.paid", "in_x", "sub_x", "price_newsletter", "subscription_create", t, t);
    app.deliver(&invoice, "unmatched").await;
    assert_eq!(app.stored(other["id"].as_str().unwrap()).await.unwrap().note.as_deref(), Some("unknown_price"));
    assert_eq!(app.store.audit().await.unwrap().notices.len(), 2);
    let b = app.billing("bob").await;
    assert_eq!(b["subscription"], serde_json::Value::Null);
    assert_eq!(b["tier"], "free");
    assert_eq!(b["plan_credits"], s.free);
}
