//! Checkout, the Customer Portal and the Stripe client, against a local fake of Stripe.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use tally_stripe::fake::Shape;

use crate::fake_stripe::FakeStripe;
use crate::helpers::{Customer, Db, ENTERPRISE, PRO, TOPUP, TestApp, now, spawn_app, spawn_app_with_stripe};
use crate::on_both_backends;

on_both_backends!(
    checkout_sends_stripes_documented_parameters,
    topup_checkout_is_a_payment_with_metadata_on_the_payment_intent,
    a_price_sent_by_the_client_is_ignored,
    a_form_post_is_redirected_to_stripe,
    every_post_carries_an_idempotency_key_kept_across_retries,
    a_stripe_400_is_not_retried,
    a_stalled_stripe_times_out_with_a_clear_error,
    concurrent_checkouts_of_one_user_make_one_customer,
    an_active_subscriber_is_sent_to_the_portal,
    the_portal_returns_to_the_billing_page,
    success_page_before_the_webhook_fulfils_once,
    success_page_after_the_webhook_grants_nothing_more,
    a_success_page_session_id_that_is_not_a_session_reaches_neither_stripe_nor_the_inbox,
    without_a_stripe_key_checkout_is_503_and_the_rest_works,
);

async fn checkout(app: &TestApp, user: &str, item: &str) -> (StatusCode, serde_json::Value) {
    app.post_as(user, "/api/checkout", &json!({ "item": item })).await
}

async fn checkout_sends_stripes_documented_parameters(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let (status, body) = checkout(&app, "alice", "pro").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["url"].as_str().unwrap().starts_with("https://checkout.stripe.com/"));
    let customers = stripe.seen("/v1/customers");
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].param("metadata[user_id]"), Some("alice"));
    let sessions = stripe.seen("/v1/checkout/sessions");
    let s = &sessions[0];
    let expected = [
        ("mode", "subscription"),
        ("customer", "cus_fake1"),
        ("client_reference_id", "alice"),
        ("line_items[0][price]", PRO),
        ("line_items[0][quantity]", "1"),
        ("metadata[user_id]", "alice"),
        ("metadata[item]", "pro"),
        ("subscription_data[metadata][user_id]", "alice"),
        ("success_url", "http://localhost:3000/dashboard/billing?success=true&session_id={CHECKOUT_SESSION_ID}"),
        ("cancel_url", "http://localhost:3000/dashboard/billing?canceled=true"),
    ];
    for (name, value) in expected {
        assert_eq!(s.param(name), Some(value), "{name}");
    }
    assert_eq!(s.form.len(), expected.len(), "nothing else is sent: {:?}", s.form);
    assert_eq!(app.store.stripe_customer("alice").await.unwrap().as_deref(), Some("cus_fake1"));
}

async fn topup_checkout_is_a_payment_with_metadata_on_the_payment_intent(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let (status, _) = checkout(&app, "bob", "topup").await;
    assert_eq!(status, StatusCode::OK);
    let s = &stripe.seen("/v1/checkout/sessions")[0];
    assert_eq!(s.param("mode"), Some("payment"));
    assert_eq!(s.param("line_items[0][price]"), Some(TOPUP));
    assert_eq!(s.param("payment_intent_data[metadata][user_id]"), Some("bob"));
    assert_eq!(s.param("subscription_data[metadata][user_id]"), None);
    assert_eq!(s.param("metadata[item]"), Some("topup"));
}

async fn a_price_sent_by_the_client_is_ignored(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let body = json!({ "item": "enterprise", "price": "price_one_cent", "line_items": [{"price": "price_one_cent"}] });
    let (status, _) = app.post_as("carol", "/api/checkout", &body).await;
    assert_eq!(status, StatusCode::OK);
    let s = &stripe.seen("/v1/checkout/sessions")[0];
    assert_eq!(s.param("line_items[0][price]"), Some(ENTERPRISE));
    let (status, body) = checkout(&app, "carol", "platinum").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an item not in the catalogue: {body}");
    assert_eq!(body["error"], "unknown_item");
}

async fn a_form_post_is_redirected_to_stripe(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = client
        .post(format!("{}/api/checkout", app.address))
        .bearer_auth(app.token("dan"))
        .form(&[("item", "topup")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(location.starts_with("https://checkout.stripe.com/c/pay/cs_test_"), "{location}");
}

async fn every_post_carries_an_idempotency_key_kept_across_retries(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    stripe.fail_next("/v1/checkout/sessions", &[500, 429]);
    let (status, body) = checkout(&app, "erin", "pro").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let attempts = stripe.seen("/v1/checkout/sessions");
    assert_eq!(attempts.len(), 3, "a 500 and a 429 are retried");
    let key = attempts[0].idempotency_key.clone().expect("an Idempotency-Key");
    assert!(attempts.iter().all(|a| a.idempotency_key.as_ref() == Some(&key)), "the same key on every retry");
    let customer = &stripe.seen("/v1/customers")[0];
    assert_eq!(customer.idempotency_key.as_deref(), Some("tally-customer-erin"));
}

async fn a_stripe_400_is_not_retried(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    stripe.fail_next("/v1/checkout/sessions", &[400]);
    let (status, body) = checkout(&app, "fay", "pro").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"], "stripe_error");
    assert!(!body["message"].as_str().unwrap().contains("fake"), "Stripe's own text stays in the log: {body}");
    assert_eq!(stripe.seen("/v1/checkout/sessions").len(), 1);
}

async fn a_stalled_stripe_times_out_with_a_clear_error(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    stripe.stall(Some(Duration::from_secs(3)));
    let started = std::time::Instant::now();
    let (status, body) = checkout(&app, "gus", "pro").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(stripe.seen("/v1/customers").len(), 3, "a timeout is retried, then given up");
    assert!(started.elapsed() < Duration::from_secs(3), "bounded by the timeouts, not the stall");
    assert_eq!(app.store.stripe_customer("gus").await.unwrap(), None);
}

async fn concurrent_checkouts_of_one_user_make_one_customer(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let answers = join_all((0..8).map(|_| checkout(&app, "hana", "topup"))).await;
    assert!(answers.iter().all(|(s, _)| *s == StatusCode::OK), "{answers:?}");
    let sessions = stripe.seen("/v1/checkout/sessions");
    let customers: std::collections::BTreeSet<_> =
        sessions.iter().map(|s| s.param("customer").unwrap().to_owned()).collect();
    assert_eq!(customers.len(), 1, "{customers:?}");
    let stored = app.store.stripe_customer("hana").await.unwrap().unwrap();
    assert!(customers.contains(&stored));
}

async fn an_active_subscriber_is_sent_to_the_portal(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let c = Customer::new("ivan", Shape::V2026, app.shop);
    app.deliver(&c.checkout("cs_1", "sub_1", "pro", "paid", now()), "applied").await;
    let (status, body) = checkout(&app, "ivan", "enterprise").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["url"].as_str().unwrap().starts_with("https://billing.stripe.com/"), "{body}");
    assert!(stripe.seen("/v1/checkout/sessions").is_empty(), "no second subscription");
    // A top-up is still a checkout.
    let (_, body) = checkout(&app, "ivan", "topup").await;
    assert!(body["url"].as_str().unwrap().starts_with("https://checkout.stripe.com/"));
}

async fn the_portal_returns_to_the_billing_page(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let (status, body) = app.post_as("jane", "/api/portal", &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let portal = &stripe.seen("/v1/billing_portal/sessions")[0];
    assert_eq!(portal.param("return_url"), Some("http://localhost:3000/dashboard/billing"));
    assert_eq!(portal.param("customer"), app.store.stripe_customer("jane").await.unwrap().as_deref());
}

/// Starts a checkout, has the fake mark it paid, and returns its session id.
async fn paid_session(app: &TestApp, stripe: &FakeStripe, user: &str, item: &str) -> String {
    let url = checkout(app, user, item).await.1["url"].as_str().unwrap().to_owned();
    let id = url.rsplit('/').next().unwrap().to_owned();
    stripe.pay(&id);
    id
}

async fn visit_success_page(app: &TestApp, user: &str, session_id: &str) -> String {
    let response = app
        .client
        .get(format!("{}/dashboard/billing?success=true&session_id={session_id}", app.address))
        .bearer_auth(app.token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

async fn success_page_before_the_webhook_fulfils_once(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let session = paid_session(&app, &stripe, "kim", "pro").await;
    let page = visit_success_page(&app, "kim", &session).await;
    assert!(page.contains("id=\"success\"") && page.contains("2,500"), "{page}");
    assert_eq!(app.balance("kim").await, ("pro".into(), 2_500, 0));
    visit_success_page(&app, "kim", &session).await;
    app.spend("kim", 100, "k1").await;
    // Then the webhook of the same session arrives.
    let c = Customer::new("kim", Shape::V2026, app.shop);
    let sub = format!("sub_fake{}", session.trim_start_matches("cs_test_fake"));
    app.post_event(&c.checkout(&session, &sub, "pro", "paid", now())).await;
    assert_eq!(app.balance("kim").await, ("pro".into(), 2_400, 0));
    app.assert_books_balance().await;
}

async fn success_page_after_the_webhook_grants_nothing_more(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let session = paid_session(&app, &stripe, "lee", "topup").await;
    let c = Customer::new("lee", Shape::V2023, app.shop);
    let payment_intent = format!("pi_fake{}", session.trim_start_matches("cs_test_fake"));
    app.deliver(&c.topup("checkout.session.completed", &session, &payment_intent, "paid", now()), "applied").await;
    visit_success_page(&app, "lee", &session).await;
    visit_success_page(&app, "lee", &session).await;
    assert_eq!(app.balance("lee").await, ("free".into(), 100, 1_000));
    // Someone else's session on my success page grants me nothing.
    let theirs = paid_session(&app, &stripe, "mia", "topup").await;
    visit_success_page(&app, "lee", &theirs).await;
    assert_eq!(app.balance("lee").await, ("free".into(), 100, 1_000));
    assert_eq!(app.balance("mia").await, ("free".into(), 100, 0));
    app.assert_books_balance().await;
}

async fn without_a_stripe_key_checkout_is_503_and_the_rest_works(db: Db) {
    let app = spawn_app(db).await;
    let response = app
        .client
        .post(format!("{}/api/checkout", app.address))
        .header("cookie", format!("tally_session={}", dev_token(&app, "ned").await))
        .header("origin", "http://localhost:3000")
        .json(&json!({ "item": "pro" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Stripe is not configured");
    assert_eq!(app.balance("ned").await, ("free".into(), 100, 0));
}

/// Signs in through `/dev/login` and returns the session cookie's token.
pub async fn dev_token(app: &TestApp, user: &str) -> String {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = client.get(format!("{}/dev/login?user={user}", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    cookie.split(';').next().unwrap().trim_start_matches("tally_session=").to_owned()
}

#[tokio::test]
async fn stripe_setup_creates_the_default_catalogue_once() {
    let stripe = FakeStripe::start().await;
    let client = tally_stripe::StripeClient::new(&stripe.url, "sk_test_fake", tally_stripe::ClientOptions::default());
    let first = client.ensure_catalogue(&tally_core::Catalogue::default()).await.unwrap();
    let items: Vec<_> = first.iter().map(|p| p.item.as_str()).collect();
    assert_eq!(items, ["pro", "enterprise", "topup"]);
    let prices = stripe.seen("/v1/prices");
    let pro = prices.iter().find(|p| p.param("lookup_key") == Some("tally_pro")).unwrap();
    assert_eq!(
        (pro.param("unit_amount"), pro.param("currency"), pro.param("recurring[interval]")),
        (Some("4900"), Some("usd"), Some("month"))
    );
    let topup = prices.iter().find(|p| p.param("lookup_key") == Some("tally_topup")).unwrap();
    assert_eq!((topup.param("unit_amount"), topup.param("recurring[interval]")), (Some("2000"), None));
    let again = client.ensure_catalogue(&tally_core::Catalogue::default()).await.unwrap();
    let ids = |v: &[tally_stripe::api::EnsuredPrice]| v.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&again), "a rerun finds the same prices");
    assert!(again.iter().all(|p| !p.created));
    assert_eq!(stripe.seen("/v1/products").len(), 3, "and creates nothing more");
}

#[tokio::test]
async fn stripe_setup_creates_only_the_prices_without_an_id_and_reuses_the_items_product() {
    let stripe = FakeStripe::start().await;
    let client = tally_stripe::StripeClient::new(&stripe.url, "sk_test_fake", tally_stripe::ClientOptions::default());
    let mut catalogue = tally_core::Catalogue::from_toml(crate::helpers::STUDIO_TOML).unwrap();
    // Only hobby's yearly and the bulk pack are new.
    catalogue.plans.iter_mut().flat_map(|p| p.prices.iter_mut()).for_each(|p| {
        if p.id.as_deref() == Some("price_hobby_y") {
            p.id = None;
        }
    });
    catalogue.packs[1].prices[0].id = None;
    let made = client.ensure_catalogue(&catalogue).await.unwrap();
    let made: Vec<_> = made.iter().map(|p| (p.item.as_str(), p.index, p.created)).collect();
    assert_eq!(made, [("hobby", 1, true), ("bulk", 0, true)]);
    let prices = stripe.seen("/v1/prices");
    let yearly = prices.iter().find(|p| p.param("lookup_key") == Some("tally_hobby_year")).unwrap();
    assert_eq!((yearly.param("unit_amount"), yearly.param("recurring[interval]")), (Some("9000"), Some("year")));
    let bulk = prices.iter().find(|p| p.param("lookup_key") == Some("tally_bulk")).unwrap();
    assert_eq!((bulk.param("currency"), bulk.param("recurring[interval]")), (Some("eur"), None));
}

/// `?session_id=../..` once reached other Stripe GET endpoints with the secret key, and
/// every spelling stored an event row. Only a Checkout Session's shape is looked up.
async fn a_success_page_session_id_that_is_not_a_session_reaches_neither_stripe_nor_the_inbox(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    for hostile in ["..%2F..%2Fv1%2Fcustomers%2Fcus_1", "cs_1%2F..%2F..%2Fv1%2Fcharges", "pi_123", "cs_%00"] {
        let page = visit_success_page(&app, "kim", hostile).await;
        assert!(!page.contains("being confirmed"), "{hostile}: nothing was looked up");
    }
    assert_eq!(app.stored_count().await, 0, "no event rows");
    assert_eq!(app.balance("kim").await, ("free".into(), app.shop.free, 0));
}
