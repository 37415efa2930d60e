//! `tally sync`: events that webhooks never delivered are pulled from Stripe and applied,
//! then every subscription is compared with tally's record and repaired.

use serde_json::{Value, json};
use tally_stripe::fake::Shape;
use tally_stripe::{ClientOptions, StripeClient};

use tally_server::sync::{Quiet, SyncOptions, SyncReport};

use crate::fake_stripe::FakeStripe;
use crate::helpers::{Customer, Db, ENTERPRISE, MONTH, PRO, TestApp, now, spawn_app_with_stripe};
use crate::on_both_backends;

on_both_backends!(
    missed_webhooks_are_repaired_by_sync_once,
    sync_counts_events_past_the_input_limits_and_stores_none,
    sync_repairs_subscriptions_webhooks_never_reported_2023_shape,
    sync_repairs_subscriptions_webhooks_never_reported_2026_shape,
    a_dry_run_lists_the_differences_and_writes_nothing,
    sync_backs_off_on_429_and_resumes_after_an_interruption,
    an_active_period_with_an_unpaid_invoice_is_reported_not_granted,
    an_event_listed_before_the_customer_that_names_its_user_still_applies,
);

fn client(stripe: &FakeStripe) -> StripeClient {
    let options = ClientOptions { backoff: std::time::Duration::from_millis(5), ..ClientOptions::default() };
    StripeClient::new(&stripe.url, "sk_test_fake", options)
}

async fn sync(stripe: &FakeStripe, app: &TestApp, dry_run: bool) -> SyncReport {
    let options = SyncOptions { since: Some(now() - 35 * 24 * 3600), dry_run };
    tally_server::sync::sync(&client(stripe), &app.store, options, &mut Quiet).await.unwrap()
}

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

    let report = sync(&stripe, &app, false).await;
    assert_eq!(report.events.get("applied"), Some(&2), "{report:?}");
    assert_eq!(report.events.get("duplicate"), Some(&1), "{report:?}");
    assert_eq!(app.balance("sam").await, ("pro".into(), 2_500, 1_000));

    let again = sync(&stripe, &app, false).await;
    assert_eq!(again.events.get("duplicate"), Some(&3), "{again:?}");
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

    let options = SyncOptions { since: Some(now() - 3600), dry_run: false };
    let report = tally_server::sync::sync(&client(&stripe), &app.store, options, &mut Quiet).await.unwrap();
    assert_eq!(report.events.get("invalid"), Some(&2), "{report:?}");
    assert_eq!(report.events.get("applied"), Some(&1), "{report:?}");
    assert!(app.stored(forever["id"].as_str().unwrap()).await.is_none());
    assert_eq!(app.balance("nia").await.2, app.shop.pack.credits);
    app.assert_books_balance().await;
}

/// The Stripe account after a week of lost webhooks (its events past the 30 days the
/// events API keeps), and what tally knew before it.
struct LostWeek {
    stripe: FakeStripe,
    app: TestApp,
}

/// - ana subscribed to Pro while tally was down: tally has never heard of it;
/// - ben's Pro was canceled at Stripe, but tally still has it active, with a top-up;
/// - cal scheduled a cancellation at period end, and moved to Enterprise, which tally missed;
/// - dee is on a price that is not in the catalogue (another product): not tally's.
async fn lost_week(db: Db, shape: Shape) -> LostWeek {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let t = now() - 10 * 24 * 3600;
    let [ana, ben, cal, dee] = ["ana", "ben", "cal", "dee"].map(|u| Customer::new(u, shape, app.shop));

    for (c, sub) in [(&ben, "sub_ben"), (&cal, "sub_cal")] {
        app.deliver(&c.subscription("customer.subscription.created", sub, PRO, "active", t, t, false, t), "applied")
            .await;
        app.deliver(&c.invoice("invoice.paid", &format!("in_{sub}"), sub, PRO, "subscription_create", t, t), "applied")
            .await;
    }
    app.deliver(&ben.topup("checkout.session.completed", "cs_ben", "pi_ben", "paid", t + 5), "applied").await;
    assert_eq!(app.balance("ben").await, ("pro".into(), 2_500, 1_000));

    let mut invoice = ana.invoice_object("in_ana", "sub_ana", PRO, "subscription_create", t + 60, "paid");
    invoice["created"] = (t + 60).into();
    stripe.add_invoice(invoice);
    let mut ana_sub = ana.subscription_object("sub_ana", PRO, "active", t + 60, t + 60, false);
    ana_sub["latest_invoice"] = "in_ana".into();
    let ben_sub = ben.subscription_object("sub_ben", PRO, "canceled", t, t, false);
    let cal_sub = cal.subscription_object("sub_cal", ENTERPRISE, "active", t, t, true);
    let dee_sub = dee.subscription_object("sub_dee", "price_other_product", "active", t, t, false);
    stripe.set_subscriptions(vec![ben_sub, cal_sub, ana_sub, dee_sub]);
    LostWeek { stripe, app }
}

async fn sync_repairs_subscriptions_webhooks_never_reported(db: Db, shape: Shape) {
    let LostWeek { stripe, app } = lost_week(db, shape).await;
    let report = sync(&stripe, &app, false).await;
    assert_eq!((report.checked, report.skipped), (4, 1), "{report:?}");
    let differing: Vec<&str> = report.differences.iter().map(|d| d.subscription.as_str()).collect();
    assert_eq!(differing, ["sub_ana", "sub_cal", "sub_ben"], "newest first; dee's is not tally's");

    // ana: the subscription, then the invoice that paid its first period.
    let ana = &report.differences[0];
    assert_eq!(ana.user_id.as_deref(), Some("ana"));
    assert!(ana.period_unpaid);
    let repairs: Vec<(&str, &str, Option<&str>)> =
        ana.repairs.iter().map(|r| (r.event_type, r.object.as_str(), r.outcome)).collect();
    assert_eq!(
        repairs,
        [("customer.subscription.updated", "sub_ana", Some("applied")), ("invoice.paid", "in_ana", Some("applied"))]
    );
    assert_eq!(app.balance("ana").await, ("pro".into(), 2_500, 0));

    // cal: the upgrade in a granted period adds the difference; the cancellation is noted.
    let cal = &report.differences[1];
    let fields: Vec<(&str, &str, &str)> =
        cal.fields.iter().map(|f| (f.field, f.tally.as_str(), f.stripe.as_str())).collect();
    assert_eq!(fields, [("plan", "pro", "enterprise"), ("cancel_at_period_end", "no", "yes")]);
    assert_eq!(app.balance("cal").await, ("enterprise".into(), 10_000, 0));
    let billing = app.billing("cal").await;
    assert_eq!(billing["subscription"]["cancel_at_period_end"], true, "{billing}");

    // ben: canceled ends the tier; the top-up he bought stays.
    let ben = &report.differences[2];
    assert_eq!(ben.fields[0].field, "status");
    assert_eq!(ben.repairs[0].event_type, "customer.subscription.deleted");
    assert_eq!(app.balance("ben").await, ("free".into(), app.shop.free, 1_000));
    assert_eq!(app.balance("dee").await.0, "free");

    // A second sync finds nothing to repair and changes nothing.
    let before = app.stored_count().await;
    let again = sync(&stripe, &app, false).await;
    assert!(again.differences.is_empty(), "{:?}", again.differences);
    assert_eq!(app.stored_count().await, before);
    assert_eq!(app.balance("ana").await, ("pro".into(), 2_500, 0));
    assert_eq!(app.balance("cal").await, ("enterprise".into(), 10_000, 0));
    app.assert_books_balance().await;
    assert_eq!(app.store.sync_cursor().await.unwrap(), None);
}

async fn sync_repairs_subscriptions_webhooks_never_reported_2023_shape(db: Db) {
    sync_repairs_subscriptions_webhooks_never_reported(db, Shape::V2023).await
}

async fn sync_repairs_subscriptions_webhooks_never_reported_2026_shape(db: Db) {
    sync_repairs_subscriptions_webhooks_never_reported(db, Shape::V2026).await
}

async fn a_dry_run_lists_the_differences_and_writes_nothing(db: Db) {
    let LostWeek { stripe, app } = lost_week(db, Shape::V2026).await;
    let c = Customer::new("eve", Shape::V2026, app.shop);
    stripe.set_events(vec![c.topup("checkout.session.completed", "cs_eve", "pi_eve", "paid", now() - 60)]);
    let before = (app.stored_count().await, app.balance("ana").await, app.balance("ben").await);

    let report = sync(&stripe, &app, true).await;
    assert_eq!(report.events.get("new"), Some(&1), "{report:?}");
    let differing: Vec<&str> = report.differences.iter().map(|d| d.subscription.as_str()).collect();
    assert_eq!(differing, ["sub_ana", "sub_cal", "sub_ben"]);
    let ana: Vec<(&str, Option<&str>)> =
        report.differences[0].repairs.iter().map(|r| (r.event_type, r.outcome)).collect();
    assert_eq!(ana, [("customer.subscription.updated", None), ("invoice.paid", None)]);
    assert_eq!((app.stored_count().await, app.balance("ana").await, app.balance("ben").await), before);
    assert_eq!(app.balance("eve").await.2, 0);

    // The real run then repairs what the dry run listed.
    let report = sync(&stripe, &app, false).await;
    assert_eq!(report.differences.len(), 3);
    assert_eq!(app.balance("eve").await.2, app.shop.pack.credits);
    app.assert_books_balance().await;
}

/// Stripe rate-limits the first page (429, twice): the client backs off and goes on.
/// Then a later page fails past every retry: the sync stops with the cursor after the
/// last finished page, and the next run resumes there and finishes the rest.
async fn sync_backs_off_on_429_and_resumes_after_an_interruption(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let t = now() - 24 * 3600;
    let users = ["u1", "u2", "u3", "u4", "u5"];
    let mut subs: Vec<Value> = Vec::new();
    for user in users {
        let c = Customer::new(user, Shape::V2026, app.shop);
        let (sub, invoice) = (format!("sub_{user}"), format!("in_{user}"));
        let mut object = c.subscription_object(&sub, PRO, "active", t, t, false);
        object["latest_invoice"] = invoice.clone().into();
        subs.push(object);
        let mut invoice = c.invoice_object(&invoice, &sub, PRO, "subscription_create", t, "paid");
        invoice["created"] = t.into();
        stripe.add_invoice(invoice);
    }
    stripe.set_subscriptions(subs);
    stripe.fail_next("/v1/subscriptions", &[429, 429]);
    stripe.fail_next("/v1/subscriptions?starting_after", &[500, 500, 500, 500]);

    let options = SyncOptions { since: Some(now() - 3600), dry_run: false };
    let stopped = tally_server::sync::sync(&client(&stripe), &app.store, options, &mut Quiet).await;
    assert!(stopped.is_err(), "the second page failed past every retry");
    assert_eq!(stripe.seen("/v1/subscriptions").len(), 3, "two 429s, then the first page");
    // Newest first: the first page held u5 and u4, which are repaired; the rest are not yet.
    assert_eq!(app.store.sync_cursor().await.unwrap().as_deref(), Some("sub_u4"));
    assert_eq!(app.balance("u5").await.0, "pro");
    assert_eq!(app.balance("u3").await.0, "free");

    let resumed = sync(&stripe, &app, false).await;
    assert_eq!(resumed.resumed_after.as_deref(), Some("sub_u4"));
    assert_eq!(resumed.checked, 3, "{resumed:?}");
    for user in users {
        assert_eq!(app.balance(user).await, ("pro".into(), 2_500, 0), "{user}");
    }
    assert_eq!(app.store.sync_cursor().await.unwrap(), None);
    let full = sync(&stripe, &app, false).await;
    assert_eq!((full.resumed_after, full.checked, full.differences.len()), (None, 5, 0));
    app.assert_books_balance().await;
}

/// Stripe shows the subscription active but its invoice is still open (a retrying
/// payment): tally records the subscription, grants nothing, and says why.
async fn an_active_period_with_an_unpaid_invoice_is_reported_not_granted(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let t = now() - 3600;
    let c = Customer::new("fay", Shape::V2023, app.shop);
    stripe.add_invoice(c.invoice_object("in_fay", "sub_fay", PRO, "subscription_create", t, "open"));
    let mut sub = c.subscription_object("sub_fay", PRO, "active", t, t, false);
    sub["latest_invoice"] = "in_fay".into();
    stripe.set_subscriptions(vec![sub]);

    let report = sync(&stripe, &app, false).await;
    let fay = &report.differences[0];
    assert_eq!(fay.repairs.len(), 1, "{fay:?}");
    assert_eq!(fay.unrepaired.as_deref(), Some("its latest invoice, in_fay, is not paid"));
    assert_eq!(app.balance("fay").await, ("free".into(), app.shop.free, 0));
    // Still unpaid on the next run: reported again, nothing new applied.
    let before = app.stored_count().await;
    let again = sync(&stripe, &app, false).await;
    assert_eq!(again.differences.len(), 1);
    assert_eq!(app.stored_count().await, before);
    app.assert_books_balance().await;
}

/// The events API is read one type at a time, so an invoice whose only clue is its
/// customer comes before the customer.created that links that customer to a user, in
/// the same second. The pass gives what found no user a second round.
async fn an_event_listed_before_the_customer_that_names_its_user_still_applies(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let t = now() - 600;
    let c = Customer::new("gus", Shape::V2026, app.shop);
    let invoice = c.invoice("invoice.paid", "in_gus", "sub_gus", PRO, "subscription_create", t, t);
    assert!(invoice["data"]["object"]["parent"]["subscription_details"]["metadata"]["user_id"].is_null());
    let customer = json!({ "id": c.customer, "object": "customer", "metadata": { "user_id": "gus" } });
    stripe.set_events(vec![c.event("customer.created", t, customer), invoice]);

    let report = sync(&stripe, &app, false).await;
    assert_eq!(report.events.get("unmatched"), None, "{report:?}");
    assert_eq!(app.balance("gus").await, ("pro".into(), 2_500, 0));
    app.assert_books_balance().await;
}
