//! `tally sync`: events that webhooks never delivered are pulled from Stripe and applied.

use tally_stripe::fake::Shape;

use crate::fake_stripe::FakeStripe;
use crate::helpers::{Customer, Db, MONTH, PRO, now, spawn_app_with_stripe};
use crate::on_both_backends;

on_both_backends!(missed_webhooks_are_repaired_by_sync_once, sync_counts_events_past_the_input_limits_and_stores_none);

async fn missed_webhooks_are_repaired_by_sync_once(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let c = Customer::new("sam", Shape::V2026, app.shop);
    let t = now() - MONTH - 100;
    let checkout = c.checkout("cs_1", "sub_1", "pro", "paid", t);
    let topup = c.topup("checkout.session.completed", "cs_2", "pi_2", "paid", t + 10);
    let renewal = c.invoice("invoice.paid", "in_2", "sub_1", PRO, "subscription_cycle", t + MONTH, t + MONTH);
    let old = c.topup("checkout.session.completed", "cs_old", "pi_old", "paid", now() - 40 * 24 * 3600);
    // Only the top-up's webhook got through.
    app.deliver(&topup, "applied").await;
    app.spend("sam", 50, "k1").await;
    stripe.set_events(vec![old, checkout, topup, renewal]);

    let client = tally_stripe::StripeClient::new(&stripe.url, "sk_test_fake", tally_stripe::ClientOptions::default());
    let since = now() - 35 * 24 * 3600;
    let report = tally_server::sync::sync(&client, &app.store, since).await.unwrap();
    assert_eq!(report.get("applied"), Some(&2), "{report:?}");
    assert_eq!(report.get("duplicate"), Some(&1), "{report:?}");
    assert_eq!(app.balance("sam").await, ("pro".into(), 2_500, 1_000));

    let again = tally_server::sync::sync(&client, &app.store, since).await.unwrap();
    assert_eq!(again.get("duplicate"), Some(&3), "{again:?}");
    assert_eq!(app.balance("sam").await, ("pro".into(), 2_500, 1_000));
    app.assert_books_balance().await;
}

/// `tally sync` goes through the webhook's own checks: an event from the API whose id
/// holds a NUL, or whose period ends at i64::MAX (which stopped the grant clock on
/// Postgres), is counted as invalid and stored nowhere, and the rest still applies.
async fn sync_counts_events_past_the_input_limits_and_stores_none(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let c = Customer::new("nia", Shape::V2026, app.shop);
    let t = now() - 100;
    let mut nul = c.topup("checkout.session.completed", "cs_n1", "pi_n1", "paid", t);
    nul["id"] = "evt_bad\u{0}id".into();
    let mut forever = c.invoice("invoice.paid", "in_n2", "sub_n", PRO, "subscription_create", t, t);
    forever["data"]["object"]["lines"]["data"][0]["period"]["end"] = i64::MAX.into();
    let fine = c.topup("checkout.session.completed", "cs_n3", "pi_n3", "paid", t + 1);
    stripe.set_events(vec![nul.clone(), forever.clone(), fine]);

    let client = tally_stripe::StripeClient::new(&stripe.url, "sk_test_fake", tally_stripe::ClientOptions::default());
    let report = tally_server::sync::sync(&client, &app.store, now() - 3600).await.unwrap();
    assert_eq!(report.get("invalid"), Some(&2), "{report:?}");
    assert_eq!(report.get("applied"), Some(&1), "{report:?}");
    assert!(app.stored(forever["id"].as_str().unwrap()).await.is_none());
    assert_eq!(app.balance("nia").await.2, app.shop.pack.credits);
    app.assert_books_balance().await;
}
