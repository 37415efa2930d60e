//! Who may see what: user tokens, the billing page's cookie, dev login, CSRF.

use reqwest::StatusCode;
use serde_json::json;
use tally_stripe::fake::Shape;

use crate::checkout::dev_token;
use crate::fake_stripe::FakeStripe;
use crate::helpers::{
    Customer, Db, JWT_SECRET, TestApp, host_token, now, spawn_app, spawn_app_with, spawn_app_with_stripe,
};
use crate::on_both_backends;

on_both_backends!(
    missing_expired_forged_and_unsigned_tokens_get_401,
    a_user_only_ever_sees_their_own_billing,
    the_billing_page_shows_the_signed_in_users_state,
    a_token_in_the_url_signs_nobody_in_and_a_one_time_code_signs_in_once,
    an_expired_sign_in_code_signs_nobody_in,
    dev_login_is_refused_on_a_public_bind_and_with_a_live_key,
    cookie_posts_from_other_sites_are_refused,
    a_token_whose_subject_is_past_the_input_limits_is_401_before_stripe,
    dev_login_is_refused_through_a_proxy_and_the_page_cannot_be_framed_or_cached,
);

async fn get_billing(app: &TestApp, authorization: Option<String>) -> (StatusCode, serde_json::Value) {
    let mut request = app.client.get(format!("{}/api/billing", app.address));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

async fn missing_expired_forged_and_unsigned_tokens_get_401(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let expired = host_token(&json!({ "sub": "amy", "exp": now() - 60 }));
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "amy", "exp": now() + 60, "aud": "authenticated" }),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-but-as-long-as-it").unwrap(),
    )
    .unwrap();
    let valid = host_token(&json!({ "sub": "amy" }));
    let claims = valid.split('.').nth(1).unwrap();
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    let unsigned = format!("{none_header}.{claims}.");
    // Issue 11 finding 8: each of these was accepted.
    let not_yet = host_token(&json!({ "sub": "amy", "nbf": now() + 600 }));
    let other_audience = host_token(&json!({ "sub": "amy", "aud": "service_role" }));
    let no_audience = {
        let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &json!({ "sub": "amy", "exp": now() + 60 }), &key)
            .unwrap()
    };
    let for_ever = host_token(&json!({ "sub": "amy", "exp": 1e308 }));
    let blank_subject = host_token(&json!({ "sub": "  " }));
    for bad in [
        None,
        Some(format!("Bearer {expired}")),
        Some(format!("Bearer {forged}")),
        Some(format!("Bearer {unsigned}")),
        Some(format!("Bearer {not_yet}")),
        Some(format!("Bearer {other_audience}")),
        Some(format!("Bearer {no_audience}")),
        Some(format!("Bearer {for_ever}")),
        Some(format!("Bearer {blank_subject}")),
        Some("Bearer x.y.z".into()),
    ] {
        let (status, body) = get_billing(&app, bad.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad:?}: {body}");
    }
    let (status, body) = get_billing(&app, Some(format!("Bearer {valid}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["user_id"], "amy");
    let (status, _) = app.post_as("amy", "/api/portal", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let response =
        app.client.post(format!("{}/api/checkout", app.address)).json(&json!({"item":"pro"})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

async fn a_user_only_ever_sees_their_own_billing(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let c = Customer::new("rich", Shape::V2026, app.shop);
    app.deliver(&c.checkout("cs_1", "sub_1", "enterprise", "paid", now()), "applied").await;
    let (_, mine) = get_billing(&app, Some(format!("Bearer {}", app.token("poor")))).await;
    assert_eq!((mine["user_id"].as_str(), mine["tier"].as_str()), (Some("poor"), Some("free")));
    // A user token is not the host app's key.
    let response = app
        .client
        .get(format!("{}/api/users/rich/billing", app.address))
        .bearer_auth(app.token("poor"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let page = app
        .client
        .get(format!("{}/dashboard/billing", app.address))
        .bearer_auth(app.token("poor"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<span id="credits">100</span>"#), "{page}");
    assert!(!page.contains(r#"<span id="credits">10000"#) && !page.contains(">Enterprise</p>"), "{page}");
}

async fn the_billing_page_shows_the_signed_in_users_state(db: Db) {
    let app = spawn_app(db).await;
    let token = dev_token(&app, "zoe").await;
    app.spend("zoe", 30, "k1").await;
    let page = app
        .client
        .get(format!("{}/dashboard/billing?canceled=true", app.address))
        .header("cookie", format!("tally_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("<span id=\"credits\">70</span>"), "{html}");
    assert!(html.contains("id=\"canceled\""));
    assert!(html.contains("Stripe is not configured"));
    let anonymous = app.client.get(format!("{}/dashboard/billing", app.address)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.text().await.unwrap().contains("/dev/login"));
}

/// Issue 11 finding 3 (login CSRF): `/dashboard/billing?token=<JWT>` signed the
/// browser in as whoever the token named. A token in a URL now signs nobody in; the host
/// app asks for a one-time code with the user's token instead, and the page says whose
/// account it shows.
async fn a_token_in_the_url_signs_nobody_in_and_a_one_time_code_signs_in_once(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let token = host_token(&json!({ "sub": "olga", "email": "olga@example.com" }));
    let linked = client.get(format!("{}/dashboard/billing?token={token}", app.address)).send().await.unwrap();
    assert_eq!(linked.status(), StatusCode::UNAUTHORIZED);
    assert!(linked.headers().get("set-cookie").is_none());

    let (status, link) = app.post_as_token(&token, "/api/billing/handoff", &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{link}");
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with("http://localhost:3000/dashboard/sign-in?code="), "{url}");
    assert!(!url.contains(&token));
    assert!(link["expires_at"].as_i64().unwrap() <= now() + 60);
    let path = url.trim_start_matches("http://localhost:3000");
    let signed_in = client.get(format!("{}{path}", app.address)).send().await.unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers()["location"], "/dashboard/billing");
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && !cookie.contains(&token), "tally's own session, not the token");
    let session = cookie.split(';').next().unwrap().to_owned();
    let page =
        client.get(format!("{}/dashboard/billing", app.address)).header("cookie", &session).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"Signed in as <strong id="account">olga@example.com</strong>"#), "{html}");

    let again = client.get(format!("{}{path}", app.address)).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED, "a code works once");
    assert!(again.headers().get("set-cookie").is_none());
    for bad in ["nothex", &"0".repeat(64), &"a".repeat(10_000)] {
        let response = client.get(format!("{}/dashboard/sign-in?code={bad}", app.address)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }

    // The host app's token is no session: as a cookie it signs nobody in.
    let as_cookie = client
        .get(format!("{}/dashboard/billing", app.address))
        .header("cookie", format!("tally_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_cookie.status(), StatusCode::UNAUTHORIZED);

    // Sign-out: only from our own page; then the page asks to sign in again.
    let cross_site = client
        .post(format!("{}/dashboard/sign-out", app.address))
        .header("cookie", &session)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let out = client
        .post(format!("{}/dashboard/sign-out", app.address))
        .header("cookie", &session)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
}

/// A sign-in code is dead after its minute, even unused.
async fn an_expired_sign_in_code_signs_nobody_in(db: Db) {
    let app = spawn_app(db).await;
    let code = "ab".repeat(32);
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(code.as_bytes()))
    };
    let handoff = tally_store::Handoff { user_id: "late".into(), email: None };
    app.store.create_handoff(&hash, &handoff, now() - 120, now() - 60).await.unwrap();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = client.get(format!("{}/dashboard/sign-in?code={code}", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get("set-cookie").is_none());
}

async fn dev_login_is_refused_on_a_public_bind_and_with_a_live_key(db: Db) {
    for vars in [
        vec![("TALLY_BIND", "0.0.0.0:0")],
        vec![("STRIPE_SECRET_KEY", "sk_live_real"), ("STRIPE_API_BASE", "http://127.0.0.1:9")],
    ] {
        let app = spawn_app_with(db.clone(), &vars).await;
        let url = format!("http://127.0.0.1:{}/dev/login?user=mallory", app.address.rsplit(':').next().unwrap());
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{vars:?}");
        assert!(response.headers().get("set-cookie").is_none());
    }
    let with_jwt = spawn_app_with(db, &[("AUTH_JWT_SECRET", JWT_SECRET)]).await;
    let response = with_jwt.client.get(format!("{}/dev/login?user=mallory", with_jwt.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

async fn cookie_posts_from_other_sites_are_refused(db: Db) {
    let stripe = FakeStripe::start().await;
    let app =
        spawn_app_with(db, &[("STRIPE_SECRET_KEY", "sk_test_fake"), ("STRIPE_API_BASE", stripe.url.as_str())]).await;
    let token = dev_token(&app, "pat").await;
    let post = |origin: Option<&'static str>, site: Option<&'static str>| {
        let mut request = app
            .client
            .post(format!("{}/api/checkout", app.address))
            .header("cookie", format!("tally_session={token}"))
            .form(&[("item", "topup")]);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        request.send()
    };
    for (origin, site) in [(None, None), (Some("https://evil.example"), None), (None, Some("cross-site"))] {
        let response = post(origin, site).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin:?} {site:?}");
    }
    assert!(stripe.seen("/v1/checkout/sessions").is_empty());
    let same_site = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = same_site
        .post(format!("{}/api/checkout", app.address))
        .header("cookie", format!("tally_session={token}"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("item", "topup")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

/// A validly signed token whose `sub` is 10 KB (or holds a control character) is no
/// user of ours: 401, and no Stripe customer is made for it (it was a 500 after one).
async fn a_token_whose_subject_is_past_the_input_limits_is_401_before_stripe(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    for sub in ["u".repeat(10_000), "line\nbreak".to_owned(), "   ".to_owned()] {
        let token = host_token(&json!({ "sub": sub }));
        let response = app
            .client
            .post(format!("{}/api/checkout", app.address))
            .bearer_auth(&token)
            .json(&json!({ "item": "pro" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{} bytes", sub.len());
    }
    assert!(stripe.seen("/v1/customers").is_empty(), "nothing reached Stripe");
}

/// Behind a reverse proxy on the same host the bind is loopback, so the proxy's
/// headers are what tell a remote caller: dev login refuses them (issue 11 finding 4).
/// The billing page is never framed nor cached (finding 11), and a query string that
/// does not parse is answered in the JSON error shape.
async fn dev_login_is_refused_through_a_proxy_and_the_page_cannot_be_framed_or_cached(db: Db) {
    let app = spawn_app(db).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (name, value) in [("x-forwarded-for", "203.0.113.9"), ("forwarded", "for=203.0.113.9")] {
        let response =
            client.get(format!("{}/dev/login?user=mallory", app.address)).header(name, value).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}");
        assert!(response.headers().get("set-cookie").is_none());
    }
    let local = client.get(format!("{}/dev/login?user=pat", app.address)).send().await.unwrap();
    assert_eq!(local.status(), StatusCode::SEE_OTHER, "a local request still signs in");

    let page = client.get(format!("{}/dashboard/billing", app.address)).send().await.unwrap();
    let headers = page.headers();
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));

    let (status, body) = app.get("/api/users/pat/ledger?limit=lots").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")), "{body}");
    let missing = client.get(format!("{}/dev/login", app.address)).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "invalid_query");
}
