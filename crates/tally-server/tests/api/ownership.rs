//! Who owns a Stripe customer (CONTRACT §1): the first link wins. Metadata naming
//! another user in a later event of that customer never moves that user's credits or
//! tier; the event is applied to the owner and listed by `tally audit`.

use serde_json::json;
use tally_stripe::fake::Shape;

use crate::helpers::{Customer, Db, now, spawn_app};
use crate::on_both_backends_and_catalogues;

on_both_backends_and_catalogues!(
    a_refund_naming_another_user_takes_credits_from_the_owner_only,
    a_renewal_naming_another_user_grants_the_owner_only,
);

async fn a_refund_naming_another_user_takes_credits_from_the_owner_only(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let (owner, victim) = (Customer::new("olga", Shape::V2026, s), Customer::new("vic", Shape::V2026, s));
    let t = now();
    app.deliver(&owner.topup("checkout.session.completed", "cs_o", "pi_o", "paid", t), "applied").await;
    app.deliver(&victim.topup("checkout.session.completed", "cs_v", "pi_v", "paid", t), "applied").await;
    // A refund of olga's pack whose charge names vic in its metadata.
    let mut refund = owner.refund("ch_o", "pi_o", s.pack.amount, t + 10);
    refund["data"]["object"]["metadata"] = json!({ "user_id": "vic" });
    app.deliver(&refund, "applied").await;
    assert_eq!(app.balance("olga").await, ("free".into(), s.free, 0), "the owner's pack is refunded");
    assert_eq!(app.balance("vic").await, ("free".into(), s.free, s.pack.credits), "vic keeps his");
    let audit = app.store.audit().await.unwrap();
    assert!(audit.notices.iter().any(|n| n.contains("names user vic") && n.contains("olga")), "{audit:?}");
    app.assert_books_balance().await;
}

async fn a_renewal_naming_another_user_grants_the_owner_only(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let alice = Customer::new("alice", Shape::V2026, s);
    let t = now() - 2 * crate::helpers::MONTH;
    app.deliver(&alice.checkout("cs_a", "sub_a", s.low.id, "paid", t), "applied").await;
    let created = alice.subscription("customer.subscription.created", "sub_a", s.low.price, "active", t, t, false, t);
    app.deliver(&created, "applied").await;
    app.spend("alice", 1, "k1").await;
    // The renewal of alice's subscription, naming bob in its subscription metadata.
    let start = t + crate::helpers::MONTH;
    let mut renewal = alice.invoice("invoice.paid", "in_2", "sub_a", s.low.price, "subscription_cycle", start, start);
    renewal["data"]["object"]["parent"]["subscription_details"]["metadata"] = json!({ "user_id": "bob" });
    app.deliver(&renewal, "applied").await;
    assert_eq!(app.balance("alice").await, (s.low.id.into(), s.low.credits, 0), "alice's period is renewed");
    assert_eq!(app.balance("bob").await, ("free".into(), s.free, 0), "bob gets no tier");
    let deleted = alice.subscription(
        "customer.subscription.deleted",
        "sub_a",
        s.low.price,
        "canceled",
        t,
        start,
        false,
        start + 5,
    );
    app.deliver(&deleted, "applied").await;
    assert_eq!(app.balance("alice").await, ("free".into(), s.free, 0));
    let audit = app.store.audit().await.unwrap();
    assert_eq!(audit.violations, Vec::<String>::new(), "the books hold after the cancellation");
    assert!(audit.notices.iter().any(|n| n.contains("names user bob")), "{audit:?}");
}
