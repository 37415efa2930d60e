//! User tokens checked against a JWKS (`AUTH_JWKS_URL`), through HTTP: a Supabase-style
//! ES256 token signs its user in, rotated keys are picked up and dropped ones refused,
//! made-up kids do not make tally hammer the endpoint, and tally starts and serves
//! HS256 and host-app routes when the endpoint is down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tally_auth::JwksTimings;

use crate::helpers::{API_KEY, Db, JWT_SECRET, TestApp, host_token, now, spawn_app_configured};
use crate::on_both_backends;

on_both_backends!(
    a_supabase_es256_token_signs_its_user_in_and_rotated_keys_are_followed,
    made_up_kids_make_no_fetch_within_the_minute,
    tally_serves_hs256_and_host_app_routes_when_the_jwks_is_down,
    dev_login_is_off_with_only_a_jwks_url,
);

/// `https://<ref>.supabase.co/auth/v1`, as Supabase names its tokens' issuer.
const ISSUER: &str = "https://abcdefghijklmnopqrst.supabase.co/auth/v1";
const JWKS_PATH: &str = "/auth/v1/.well-known/jwks.json";

/// An ES256 signing key as a Supabase project has one, and its public JWK.
struct ProjectKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl ProjectKey {
    fn new(kid: &str) -> ProjectKey {
        use p256::elliptic_curve::Generate;
        use p256::pkcs8::EncodePrivateKey;
        let der = p256::SecretKey::generate().to_pkcs8_der().unwrap();
        let encoding = EncodingKey::from_ec_der(der.as_bytes());
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap()).unwrap();
        // What Supabase publishes: {"alg","crv","ext","key_ops","kid","kty","x","y"}.
        jwk["kid"] = json!(kid);
        jwk["key_ops"] = json!(["verify"]);
        jwk["ext"] = json!(true);
        ProjectKey { kid: kid.to_owned(), encoding, jwk }
    }

    /// An access token as Supabase Auth issues it for `user`.
    fn token(&self, user: &str) -> String {
        let claims = json!({
            "iss": ISSUER, "sub": user, "aud": "authenticated", "exp": now() + 3600, "iat": now(),
            "email": format!("{}@example.com", &user[..8]), "phone": "", "role": "authenticated",
            "app_metadata": { "provider": "email", "providers": ["email"] }, "user_metadata": {},
            "aal": "aal1", "amr": [{ "method": "password", "timestamp": now() }], "session_id": "0d6c",
            "is_anonymous": false,
        });
        let header = Header { kid: Some(self.kid.clone()), ..Header::new(Algorithm::ES256) };
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

/// A Supabase project's JWKS endpoint, serving the set the test says and counting GETs.
#[derive(Clone)]
struct FakeJwks {
    keys: Arc<Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
    url: String,
}

impl FakeJwks {
    async fn start(keys: &[&ProjectKey]) -> FakeJwks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{JWKS_PATH}", listener.local_addr().unwrap());
        let fake = FakeJwks { keys: Arc::new(Mutex::new(Vec::new())), hits: Arc::new(AtomicUsize::new(0)), url };
        fake.publish(keys);
        let app = Router::new().route(JWKS_PATH, get(serve_jwks)).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    fn publish(&self, keys: &[&ProjectKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve_jwks(State(fake): State<FakeJwks>) -> axum::Json<Value> {
    fake.hits.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({ "keys": *fake.keys.lock().unwrap() }))
}

async fn spawn_with_jwks(db: Db, jwks: &FakeJwks, extra: &[(&str, &str)], timings: JwksTimings) -> TestApp {
    let mut vars = vec![("AUTH_JWKS_URL", jwks.url.as_str()), ("AUTH_JWT_ISSUER", ISSUER)];
    vars.extend_from_slice(extra);
    spawn_app_configured(db, &vars, |config| config.jwks_timings = timings).await
}

/// `GET /api/billing` with `token`: the status, and the user id it answered for.
async fn billing_as(app: &TestApp, token: &str) -> (StatusCode, Option<String>) {
    let response = app.client.get(format!("{}/api/billing", app.address)).bearer_auth(token).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    (status, body["user_id"].as_str().map(str::to_owned))
}

/// Issue: "Done when: a Supabase-style ES256 token signs a user in, and the rotation
/// tests pass". Here the set is fetched again for every token (a refetch interval and a
/// maximum age of zero), so each step shows what a fetch of the set brings.
async fn a_supabase_es256_token_signs_its_user_in_and_rotated_keys_are_followed(db: Db) {
    let (first, second) = (ProjectKey::new("b1f6c0de-first"), ProjectKey::new("7a3e9f21-second"));
    let jwks = FakeJwks::start(&[&first]).await;
    let every_time = JwksTimings { min_refetch: Duration::ZERO, max_age: Duration::ZERO };
    let app = spawn_with_jwks(db, &jwks, &[], every_time).await;
    assert_eq!(jwks.hits(), 1, "fetched at start");
    let user = "4d1c2a7e-0c55-4f0e-9d43-8d2a5b9e7c11";

    let (status, id) = billing_as(&app, &first.token(user)).await;
    assert_eq!((status, id.as_deref()), (StatusCode::OK, Some(user)));
    let page = app
        .client
        .get(format!("{}/dashboard/billing", app.address))
        .bearer_auth(first.token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("4d1c2a7e@example.com"), "the page names the token's email");

    // Not yet published: refused.
    assert_eq!(billing_as(&app, &second.token(user)).await.0, StatusCode::UNAUTHORIZED);
    // The project rotates: the new key is published beside the old one and signs new tokens.
    jwks.publish(&[&first, &second]);
    assert_eq!(billing_as(&app, &second.token(user)).await, (StatusCode::OK, Some(user.to_owned())));
    assert_eq!(billing_as(&app, &first.token(user)).await.0, StatusCode::OK, "tokens signed before still work");
    // Then the old key is revoked: its tokens stop working, the new key's go on.
    jwks.publish(&[&second]);
    assert_eq!(billing_as(&app, &first.token(user)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(billing_as(&app, &second.token(user)).await.0, StatusCode::OK);
}

/// With the default timings a token with a kid the set does not hold, just after the
/// start-up fetch, is refused without a fetch, however many arrive.
async fn made_up_kids_make_no_fetch_within_the_minute(db: Db) {
    let key = ProjectKey::new("real");
    let jwks = FakeJwks::start(&[&key]).await;
    let app = spawn_with_jwks(db, &jwks, &[], JwksTimings::default()).await;
    let user = "9b0f5c1e-77aa-4a3b-8e1f-2c4d6e8f0a1b";
    for _ in 0..5 {
        assert_eq!(billing_as(&app, &key.token(user)).await.0, StatusCode::OK);
    }
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..100 {
        let forged = ProjectKey { kid: format!("made-up-{i}"), ..ProjectKey::new("x") };
        let (client, url) = (app.client.clone(), format!("{}/api/billing", app.address));
        burst.spawn(
            async move { client.get(url).bearer_auth(forged.token("victim-0000")).send().await.unwrap().status() },
        );
    }
    for status in burst.join_all().await {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(jwks.hits(), 1, "only the start-up fetch");
    assert_eq!(billing_as(&app, &key.token(user)).await.0, StatusCode::OK);
}

/// The JWKS endpoint is down at start: tally starts anyway (a warning), HS256 tokens
/// (configured beside it, as during a migration) and host-app routes work, and JWKS
/// tokens are refused.
async fn tally_serves_hs256_and_host_app_routes_when_the_jwks_is_down(db: Db) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = FakeJwks { keys: Arc::default(), hits: Arc::default(), url: format!("http://{closed}{JWKS_PATH}") };
    let app = spawn_with_jwks(db, &down, &[("AUTH_JWT_SECRET", JWT_SECRET)], JwksTimings::default()).await;
    let hs256 = host_token(&json!({ "sub": "legacy-user", "iss": ISSUER }));
    assert_eq!(billing_as(&app, &hs256).await, (StatusCode::OK, Some("legacy-user".to_owned())));
    let es256 = ProjectKey::new("k").token("a1b2c3d4-user");
    assert_eq!(billing_as(&app, &es256).await.0, StatusCode::UNAUTHORIZED);
    let host = app
        .client
        .get(format!("{}/api/users/legacy-user/billing", app.address))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(host.status(), StatusCode::OK);
}

async fn dev_login_is_off_with_only_a_jwks_url(db: Db) {
    let jwks = FakeJwks::start(&[]).await;
    let app = spawn_with_jwks(db, &jwks, &[], JwksTimings::default()).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = client.get(format!("{}/dev/login?user=mallory", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get("set-cookie").is_none());
}
