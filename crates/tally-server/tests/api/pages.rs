//! The billing page over HTTP: its headers and script, the host app's look, a payment
//! that Stripe has not confirmed yet, and what a form post says when Stripe fails.
//! Each state's wording is tested by rendering it (`routes::billing_view`).

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::json;
use tally_stripe::fake::Shape;

use crate::checkout::dev_token;
use crate::fake_stripe::FakeStripe;
use crate::helpers::{Customer, Db, STUDIO, TestApp, now, spawn_app_configured, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    the_page_is_never_framed_nor_cached_and_loads_nothing_from_elsewhere,
    the_page_wears_the_host_apps_name_link_and_colour,
    a_payment_not_confirmed_yet_is_pending_until_its_credits_arrive,
    a_form_post_that_stripe_cannot_serve_returns_to_the_page_with_a_message,
);

/// A tally on the studio catalogue, dev login on, Stripe at `stripe`.
async fn studio_app(db: Db, stripe: &FakeStripe, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("STRIPE_SECRET_KEY", "sk_test_fake"), ("STRIPE_API_BASE", stripe.url.as_str())];
    vars.extend_from_slice(extra);
    spawn_app_configured(db.with_shop(&STUDIO), &vars, |_| {}).await
}

/// GETs `path` with the session of `token`: status, headers and body.
async fn page(app: &TestApp, token: &str, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
    let response = client
        .get(format!("{}{path}", app.address))
        .header("cookie", format!("tally_session={token}"))
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

async fn the_page_is_never_framed_nor_cached_and_loads_nothing_from_elsewhere(db: Db) {
    let app = spawn_app_with(db, &[]).await;
    let token = dev_token(&app, "ida").await;
    let (status, headers, html) = page(&app, &token, "/dashboard/billing").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let csp = headers["content-security-policy"].to_str().unwrap();
    for part in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(part), "{csp}");
    }
    // No external assets: nothing on the page names another origin but Stripe's forms'.
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("@import"), "{html}");
    assert!(html.contains("Stripe is not configured, so purchases are off."), "{html}");
    let (status, headers, script) = page(&app, &token, "/dashboard/billing.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(script.contains("data-poll"));
}

async fn the_page_wears_the_host_apps_name_link_and_colour(db: Db) {
    let vars = [
        ("TALLY_APP_NAME", "Acme Notes"),
        ("TALLY_APP_URL", "https://notes.example.com/app"),
        ("TALLY_BRAND_COLOR", "#0a7d55"),
    ];
    let app = spawn_app_with(db, &vars).await;
    let token = dev_token(&app, "ida").await;
    let (_, _, html) = page(&app, &token, "/dashboard/billing").await;
    for part in [
        "<title>Billing · Acme Notes</title>",
        r#"<a class="app" href="https://notes.example.com/app">← Back to Acme Notes</a>"#,
        "--accent: #0a7d55;",
        r#"Signed in as <strong id="account">ida</strong>"#,
    ] {
        assert!(html.contains(part), "{part} in {html}");
    }
    let anonymous = app.client.get(format!("{}/dashboard/billing", app.address)).send().await.unwrap();
    assert!(anonymous.text().await.unwrap().contains("← Back to Acme Notes"), "the sign-in page too");
}

/// The user is back from Checkout before Stripe has settled the payment: the page says
/// it is being confirmed and gives its script a URL to ask again; that URL keeps
/// saying so until credits arrive, here by a webhook for the subscription.
async fn a_payment_not_confirmed_yet_is_pending_until_its_credits_arrive(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = studio_app(db, &stripe, &[]).await;
    let token = dev_token(&app, "ivy").await;
    let session = checkout_as(&app, &token, "studio").await;
    let (_, _, html) = page(&app, &token, &format!("/dashboard/billing?success=true&session_id={session}")).await;
    assert!(html.contains("Stripe is confirming your payment") && !html.contains("id=\"success\""), "{html}");
    let poll = html.split("data-poll=\"").nth(1).unwrap().split('"').next().unwrap().replace("&#38;", "&");
    assert!(poll.starts_with(&format!("/dashboard/billing?success=true&session_id={session}&since=")), "{poll}");
    let (_, _, again) = page(&app, &token, &poll).await;
    assert!(again.contains("data-poll"), "still unpaid: {again}");

    let c = Customer::new("ivy", Shape::V2026, app.shop);
    app.deliver(&c.checkout("cs_other", "sub_ivy", "studio", "paid", now()), "applied").await;
    let (_, _, done) = page(&app, &token, &poll).await;
    assert!(done.contains(r#"id="success">Thank you!"#) && !done.contains("data-poll"), "{done}");
    assert!(done.contains(r#"<h2 id="tier">Studio</h2>"#) && done.contains("1,500"), "{done}");
    assert!(done.contains("Subscribed to Studio"), "{done}");

    // Paid at Stripe: the first look fulfils it, and nothing is granted twice.
    let pack = checkout_as(&app, &token, "boost").await;
    stripe.pay(&pack);
    let (_, _, paid) = page(&app, &token, &format!("/dashboard/billing?success=true&session_id={pack}")).await;
    assert!(paid.contains(r#"id="success""#) && paid.contains("Top-up: 250 credits"), "{paid}");
    page(&app, &token, &format!("/dashboard/billing?success=true&session_id={pack}")).await;
    assert_eq!(app.balance("ivy").await, ("studio".into(), 1_500, 250));
    app.assert_books_balance().await;
}

async fn a_form_post_that_stripe_cannot_serve_returns_to_the_page_with_a_message(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = studio_app(db, &stripe, &[]).await;
    let token = dev_token(&app, "joy").await;
    stripe.fail_next("/v1/customers", &[500, 500, 500, 500]);
    let response = form_post(&app, &token, "/api/checkout", &[("item", "hobby"), ("interval", "year")]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, "/dashboard/billing?error=stripe_unreachable");
    let (_, _, html) = page(&app, &token, &location).await;
    assert!(html.contains("Stripe could not be reached, so nothing was charged."), "{html}");
    // A JSON caller still gets the error itself.
    stripe.fail_next("/v1/customers", &[500, 500, 500, 500]);
    let json = app
        .client
        .post(format!("{}/api/checkout", app.address))
        .header("cookie", format!("tally_session={token}"))
        .header("origin", "http://localhost:3000")
        .json(&json!({ "item": "hobby" }))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), StatusCode::BAD_GATEWAY);

    let unconfigured = spawn_app_with(Db::sqlite(&STUDIO), &[]).await;
    let token = dev_token(&unconfigured, "joy").await;
    let response = form_post(&unconfigured, &token, "/api/portal", &[]).await;
    assert_eq!(response.headers()["location"], "/dashboard/billing?error=stripe_not_configured");
}

async fn form_post(app: &TestApp, token: &str, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    let client = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
    client
        .post(format!("{}{path}", app.address))
        .header("cookie", format!("tally_session={token}"))
        .header("origin", "http://localhost:3000")
        .form(form)
        .send()
        .await
        .unwrap()
}

/// A form post of the page's button for `item`; the Checkout Session it made.
async fn checkout_as(app: &TestApp, token: &str, item: &str) -> String {
    let response = form_post(app, token, "/api/checkout", &[("item", item)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let url = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(url.starts_with("https://checkout.stripe.com/c/pay/cs_test_"), "{url}");
    url.rsplit('/').next().unwrap().to_owned()
}
