//! Hostile input on every route (issue 11): oversized and malformed bodies, headers
//! and ids, wrong methods and content types, path traversal, SQL metacharacters,
//! unicode edge cases, absurd amounts, replayed signatures, forged and borrowed
//! tokens. Each request gets its documented 4xx, never a 500 or 503; afterwards
//! nothing was stored and the server still serves.
//!
//! Requests go out as raw bytes on a fresh connection, so that a path like
//! `/api/users/../healthz` or a byte that is not UTF-8 reaches tally as written: an
//! HTTP client would normalise or refuse them first.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::{AnyConnection, AssertSqlSafe, Connection};
use tally_stripe::fake::Shape;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::checkout::dev_token;
use crate::fake_stripe::FakeStripe;
use crate::helpers::{
    API_KEY, Customer, Db, JWT_SECRET, SECRET, TestApp, now, spawn_app, spawn_app_with, spawn_app_with_stripe,
};
use crate::on_both_backends;

on_both_backends!(
    hostile_requests_to_every_route_get_their_documented_4xx_and_store_nothing,
    hostile_dev_logins_are_refused_and_sign_no_one_in,
    algorithm_confusion_and_unsigned_tokens_are_401_over_http,
    cookie_posts_to_the_portal_and_checkout_from_other_sites_are_refused_and_same_origin_ones_pass,
    redirects_and_stripe_return_urls_never_take_a_host_from_the_request,
    a_signed_webhook_nested_10k_levels_deep_is_answered_without_a_crash,
    signed_webhooks_with_huge_numbers_are_refused_or_stored_never_a_500,
    a_signed_webhook_with_duplicate_keys_grants_nothing,
    a_signed_webhook_with_bytes_that_are_not_utf8_is_400_and_stores_nothing,
    an_id_with_a_right_to_left_override_is_refused_on_every_route,
    a_path_id_that_is_not_utf8_is_400_in_the_json_error_shape,
    a_host_app_body_past_the_limit_is_413_not_400,
    a_refused_spend_or_hold_for_an_unseen_user_leaves_no_account,
);

// --- raw HTTP ---------------------------------------------------------------------

/// What tally answered one raw request: status (0: no answer at all), the header
/// section as text, and the JSON body (null when it is not JSON).
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A request as bytes: `Host` and `Connection: close` unless `headers` name them, and
/// a `Content-Length` for every body (and every POST).
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str("host: 127.0.0.1\r\n");
    }
    head.push_str("connection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length")) && (!body.is_empty() || method == "POST")
    {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends `bytes` on a new connection and reads the answer to the end.
async fn send(app: &TestApp, bytes: Vec<u8>) -> Answer {
    let address = app.address.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(address).await.expect("tally accepts connections");
    let (mut reader, mut writer) = stream.into_split();
    // tally may answer (413) before it has read a large body: keep writing meanwhile,
    // and keep the write half open until the answer is read (a half-closed connection
    // may be dropped unanswered).
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&bytes).await;
        writer
    });
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut raw)).await;
    drop(writing);
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    Answer { status, head: head.to_owned(), body: serde_json::from_str(&body).unwrap_or(Value::Null) }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

// --- tokens ---------------------------------------------------------------------

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A JWT with any header, HMAC-SHA256-signed with `key` whatever the header says.
fn jwt(header: Value, claims: Value, key: &[u8]) -> String {
    let input = format!("{}.{}", b64(&header), b64(&claims));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// The claims of a good token for `sub`, as Supabase writes them.
fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": now() + 3600, "aud": "authenticated", "role": "authenticated" })
}

/// A token signed with the right secret whose header names `alg`.
fn signed_as(alg: &str, sub: &str) -> String {
    jwt(json!({ "alg": alg, "typ": "JWT" }), claims(sub), JWT_SECRET.as_bytes())
}

/// An unsigned token (`alg` as given, empty signature).
fn unsigned(alg: &str, sub: &str) -> String {
    format!("{}.{}.", b64(&json!({ "alg": alg, "typ": "JWT" })), b64(&claims(sub)))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// --- what was stored ----------------------------------------------------------------

/// Rows of every table a request could have written money or state to.
async fn stored_rows(app: &TestApp) -> Vec<(&'static str, i64)> {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(&app.tables_url()).await.unwrap();
    let mut counts = Vec::new();
    for table in ["events", "ledger", "accounts", "reservations", "subscriptions", "topups"] {
        let sql = format!("select count(*) from {table}");
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(&mut conn).await.unwrap();
        counts.push((table, n));
    }
    conn.close().await.unwrap();
    counts
}

// --- the table ------------------------------------------------------------------------

/// One hostile request and the answer it must get.
struct Row {
    attack: String,
    request: Vec<u8>,
    status: u16,
    /// The `error` of the JSON body; `None` where the documented answer has no JSON
    /// body: hyper's own refusals, unknown routes (404) and wrong methods (405).
    code: Option<&'static str>,
}

fn row(attack: &str, request: Vec<u8>, status: u16, code: Option<&'static str>) -> Row {
    Row { attack: attack.to_owned(), request, status, code }
}

/// Sends every row; returns the rows that got another answer, described.
async fn run_table(app: &TestApp, rows: Vec<Row>) -> Vec<String> {
    let mut wrong = Vec::new();
    for row in rows {
        let answer = send(app, row.request).await;
        let code = answer.body.get("error").and_then(Value::as_str);
        if answer.status >= 500 || answer.status != row.status || (row.code.is_some() && code != row.code) {
            wrong.push(format!(
                "{}: got {} {}, want {} {:?}",
                row.attack, answer.status, answer.body, row.status, row.code
            ));
        }
    }
    wrong
}

const JSON: (&str, &str) = ("content-type", "application/json");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// `{"a":{"a":...}}`, `depth` levels.
fn nested_objects(depth: usize) -> String {
    format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
}

/// `[[...]]`, `depth` levels.
fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// The table: well over a hundred hostile requests across every route, each with its
/// documented 4xx and error code, against a production-like tally (host-app tokens,
/// Stripe configured). Afterwards no row was written, nothing reached Stripe, the
/// victim's balance and hold are as they were, and a legitimate spend goes through.
async fn hostile_requests_to_every_route_get_their_documented_4xx_and_store_nothing(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let shop = app.shop;
    // What a refused request must not disturb: a spend and a hold of a real user.
    let (status, _) = app.spend("victim", 5, "spent-before").await;
    assert_eq!(status, 200);
    let (status, hold) = app.reserve("victim", 10, "held-before", 300).await;
    assert_eq!(status, 200, "{hold}");
    let hold = hold["reservation_id"].as_str().unwrap().to_owned();
    let before = stored_rows(&app).await;
    let victim_before = app.billing("victim").await;

    let key = bearer(API_KEY);
    let key = key.as_str();
    let mallory = bearer(&app.token("mallory"));
    let victim_token = bearer(&app.token("victim"));
    let same_length_key = bearer(&"x".repeat(API_KEY.len()));
    let prefix_key = bearer(&API_KEY[..API_KEY.len() - 1]);
    let longer_key = bearer(&format!("{API_KEY}x"));
    let long_id = "u".repeat(256);
    let long_multibyte_id = "é".repeat(255);
    let long_multibyte_path = "%C3%A9".repeat(255);
    let three_mib =
        format!(r#"{{"user_id":"victim","amount":1,"idempotency_key":"k","reason":"{}"}}"#, "r".repeat(3 << 20));

    // Webhooks: every body below is refused before it is an event.
    let event =
        Customer::new("victim", Shape::V2026, shop).checkout("cs_hostile", "sub_hostile", shop.low.id, "paid", now());
    let body = event.to_string();
    let signed = |body: &str, t: i64| tally_stripe::sign(body.as_bytes(), SECRET, t);
    let hook = |attack: &str, body: &[u8], signature: Option<String>, content_type: Option<&str>, status, code| {
        let mut headers = Vec::new();
        if let Some(ct) = content_type {
            headers.push(("content-type", ct.to_owned()));
        }
        if let Some(sig) = signature {
            headers.push(("stripe-signature", sig));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        row(attack, request("POST", "/api/webhooks/stripe", &headers, body), status, code)
    };
    let json_ct = Some("application/json");
    let signed_hook = |attack: &str, body: &[u8], code| {
        let sig = tally_stripe::sign(body, SECRET, now());
        hook(attack, body, Some(sig), json_ct, 400, Some(code))
    };
    let with_id = |id: &str| {
        let mut e = event.clone();
        e["id"] = json!(id);
        e.to_string()
    };
    let mut invalid_utf8 = body.clone().into_bytes();
    let at = invalid_utf8.windows(10).position(|w| w == b"cs_hostile").unwrap();
    invalid_utf8[at + 3] = 0xff;
    let huge =
        |value: &str| body.replacen(&format!("\"created\":{}", event["created"]), &format!("\"created\":{value}"), 1);
    let dup_id = body.replacen("{", r#"{"id":"evt_first","#, 1);
    let mut rows = vec![
        hook("webhook without Stripe-Signature", body.as_bytes(), None, json_ct, 400, Some("invalid_signature")),
        hook(
            "webhook signed with another secret",
            body.as_bytes(),
            Some(tally_stripe::sign(body.as_bytes(), "whsec_attacker", now())),
            json_ct,
            400,
            Some("invalid_signature"),
        ),
        hook(
            "webhook replayed 301 s after signing",
            body.as_bytes(),
            Some(signed(&body, now() - 301)),
            json_ct,
            400,
            Some("invalid_signature"),
        ),
        hook(
            "webhook replayed a day later",
            body.as_bytes(),
            Some(signed(&body, now() - 86_400)),
            json_ct,
            400,
            Some("invalid_signature"),
        ),
        // A future time drifts into the tolerance while the table is sent; a past one
        // only drifts further out.
        hook(
            "webhook signed 330 s in the future",
            body.as_bytes(),
            Some(signed(&body, now() + 330)),
            json_ct,
            400,
            Some("invalid_signature"),
        ),
        hook(
            "webhook timestamp 0 (1970)",
            body.as_bytes(),
            Some(signed(&body, 0)),
            json_ct,
            400,
            Some("invalid_signature"),
        ),
        hook(
            "webhook timestamp i64::MAX",
            body.as_bytes(),
            Some(signed(&body, i64::MAX)),
            json_ct,
            400,
            Some("invalid_signature"),
        ),
        hook(
            "webhook timestamp i64::MIN",
            body.as_bytes(),
            Some(signed(&body, i64::MIN)),
            json_ct,
            400,
            Some("invalid_signature"),
        ),
        hook(
            "webhook timestamp past i64",
            body.as_bytes(),
            Some(signed(&body, now()).replacen("t=", "t=99999999999999999999", 1)),
            json_ct,
            400,
            Some("invalid_signature"),
        ),
        hook(
            "webhook signature of another body",
            body.replace("cs_hostile", "cs_hostilf").as_bytes(),
            Some(signed(&body, now())),
            json_ct,
            400,
            Some("invalid_signature"),
        ),
        hook(
            "webhook v1 of 8 KiB",
            body.as_bytes(),
            Some(format!("t={},v1={}", now(), "ab".repeat(4096))),
            json_ct,
            400,
            Some("invalid_signature"),
        ),
        hook(
            "webhook signed, as text/plain",
            body.as_bytes(),
            Some(signed(&body, now())),
            Some("text/plain"),
            400,
            Some("unsupported_content_type"),
        ),
        hook(
            "webhook signed, no content type",
            body.as_bytes(),
            Some(signed(&body, now())),
            None,
            400,
            Some("unsupported_content_type"),
        ),
        hook("webhook over 1 MiB", &vec![b' '; (1 << 20) + 1], None, json_ct, 413, Some("payload_too_large")),
        row(
            "webhook claiming a 10 GB body, sending past 1 MiB",
            request(
                "POST",
                "/api/webhooks/stripe",
                &[JSON, ("content-length", "10000000000")],
                &vec![b' '; (1 << 20) + 1],
            ),
            413,
            Some("payload_too_large"),
        ),
        signed_hook("signed webhook nested 10k objects deep", nested_objects(10_000).as_bytes(), "not_an_event"),
        signed_hook("signed webhook nested 10k arrays deep", nested_arrays(10_000).as_bytes(), "not_an_event"),
        signed_hook("signed webhook with two ids", dup_id.as_bytes(), "not_an_event"),
        signed_hook("signed webhook with a byte that is not UTF-8", &invalid_utf8, "not_an_event"),
        signed_hook("signed webhook created 1e300", huge("1e300").as_bytes(), "not_an_event"),
        signed_hook("signed webhook created 2^63", huge("9223372036854775808").as_bytes(), "not_an_event"),
        signed_hook("signed webhook created -1.5", huge("-1.5").as_bytes(), "not_an_event"),
        signed_hook("signed webhook id with NUL", with_id("evt_\u{0}").as_bytes(), "invalid_event"),
        signed_hook("signed webhook id of 256 bytes", with_id(&long_id).as_bytes(), "invalid_event"),
        signed_hook(
            "signed webhook id with a lone surrogate",
            with_id("evt_X").replace("evt_X", r"evt_\ud800").as_bytes(),
            "not_an_event",
        ),
        signed_hook(
            "signed webhook id with a right-to-left override",
            with_id("evt_\u{202e}lper").as_bytes(),
            "invalid_event",
        ),
        signed_hook("signed webhook, JSON null", b"null", "not_an_event"),
        signed_hook("signed webhook, empty body", b"", "not_an_event"),
        row("GET on the webhook", request("GET", "/api/webhooks/stripe", &[], b""), 405, None),
        row("PUT on the webhook", request("PUT", "/api/webhooks/stripe", &[JSON], body.as_bytes()), 405, None),
    ];

    // Checkout and portal: user routes.
    let user_post =
        |attack: &str, path: &str, authorization: &str, content_type: (&str, &str), body: &str, status, code| {
            row(
                attack,
                request("POST", path, &[("authorization", authorization), content_type], body.as_bytes()),
                status,
                code,
            )
        };
    let checkout = |attack: &str, body: &str, status, code| {
        user_post(attack, "/api/checkout", &mallory, JSON, body, status, Some(code))
    };
    let cookie = "tally_session=anything";
    rows.extend([
        row(
            "checkout without a token",
            request("POST", "/api/checkout", &[JSON], br#"{"item":"pro"}"#),
            401,
            Some("unauthorized"),
        ),
        user_post(
            "checkout with the host app's key",
            "/api/checkout",
            key,
            JSON,
            r#"{"item":"pro"}"#,
            401,
            Some("unauthorized"),
        ),
        user_post(
            "checkout with alg none",
            "/api/checkout",
            &bearer(&unsigned("none", "mallory")),
            JSON,
            r#"{"item":"pro"}"#,
            401,
            Some("unauthorized"),
        ),
        user_post(
            "checkout with HS256 signed by an empty key",
            "/api/checkout",
            &bearer(&jwt(json!({"alg":"HS256"}), claims("mallory"), b"")),
            JSON,
            r#"{"item":"pro"}"#,
            401,
            Some("unauthorized"),
        ),
        user_post(
            "checkout with a signed sub of 256 bytes",
            "/api/checkout",
            &bearer(&signed_as("HS256", &long_id)),
            JSON,
            r#"{"item":"pro"}"#,
            401,
            Some("unauthorized"),
        ),
        user_post(
            "checkout with a signed sub holding NUL",
            "/api/checkout",
            &bearer(&signed_as("HS256", "mallory\u{0}")),
            JSON,
            r#"{"item":"pro"}"#,
            401,
            Some("unauthorized"),
        ),
        checkout("checkout item with SQL", r#"{"item":"pro' or '1'='1"}"#, 422, "unknown_item"),
        checkout("checkout item NUL", r#"{"item":"\u0000"}"#, 422, "unknown_item"),
        checkout("checkout item lone surrogate", r#"{"item":"\ud800"}"#, 400, "invalid_request"),
        checkout(
            "checkout item of 255 two-byte chars",
            &json!({ "item": long_multibyte_id }).to_string(),
            422,
            "unknown_item",
        ),
        checkout("checkout item a number", r#"{"item":123}"#, 400, "invalid_request"),
        checkout("checkout body cut short", r#"{"item":"#, 400, "invalid_request"),
        checkout(
            "checkout interval a decade",
            &json!({ "item": shop.low.id, "interval": "decade" }).to_string(),
            422,
            "invalid_interval",
        ),
        checkout(
            "checkout interval 1e300",
            &json!({ "item": shop.low.id }).to_string().replace('}', r#","interval":1e300}"#),
            400,
            "invalid_request",
        ),
        checkout("checkout body of 3 MiB", &three_mib, 413, "payload_too_large"),
        user_post(
            "checkout as text/plain",
            "/api/checkout",
            &mallory,
            ("content-type", "text/plain"),
            "item=pro",
            400,
            Some("invalid_request"),
        ),
        user_post(
            "checkout form item traversal",
            "/api/checkout",
            &mallory,
            FORM,
            "item=..%2F..%2Fv1%2Fprices",
            422,
            Some("unknown_item"),
        ),
        row("GET on checkout", request("GET", "/api/checkout", &[("authorization", &mallory)], b""), 405, None),
        row(
            "checkout cookie from another site",
            request(
                "POST",
                "/api/checkout",
                &[FORM, ("cookie", cookie), ("origin", "https://evil.example")],
                b"item=topup",
            ),
            403,
            Some("forbidden"),
        ),
        row(
            "checkout cookie, Sec-Fetch-Site cross-site",
            request(
                "POST",
                "/api/checkout",
                &[FORM, ("cookie", cookie), ("sec-fetch-site", "cross-site")],
                b"item=topup",
            ),
            403,
            Some("forbidden"),
        ),
        row("portal without a token", request("POST", "/api/portal", &[JSON], b"{}"), 401, Some("unauthorized")),
        user_post(
            "portal with a token of another secret",
            "/api/portal",
            &bearer(&jwt(json!({"alg":"HS256"}), claims("mallory"), b"not-the-secret-of-the-host-app-32")),
            JSON,
            "{}",
            401,
            Some("unauthorized"),
        ),
        row(
            "portal cookie, Origin null",
            request("POST", "/api/portal", &[("cookie", cookie), ("origin", "null")], b""),
            403,
            Some("forbidden"),
        ),
        row(
            "portal cookie, Sec-Fetch-Site same-site",
            request("POST", "/api/portal", &[("cookie", cookie), ("sec-fetch-site", "same-site")], b""),
            403,
            Some("forbidden"),
        ),
        row("GET on the portal", request("GET", "/api/portal", &[("authorization", &mallory)], b""), 405, None),
    ]);

    // The caller's own billing.
    let own = |attack: &str, authorization: &str| {
        row(attack, request("GET", "/api/billing", &[("authorization", authorization)], b""), 401, Some("unauthorized"))
    };
    let mut obs_text = request("GET", "/api/billing", &[("authorization", "Bearer X")], b"");
    let x = obs_text.iter().position(|b| *b == b'X').unwrap();
    obs_text[x] = 0xff;
    rows.extend([
        row("own billing without a token", request("GET", "/api/billing", &[], b""), 401, Some("unauthorized")),
        own("own billing, token with a byte appended", &format!("{mallory}x")),
        own("own billing, 60 KB of token", &bearer(&"a".repeat(60_000))),
        own("own billing, Basic auth", "Basic bWFsbG9yeTpodW50ZXIy"),
        own("own billing, RS256 header signed with the secret", &bearer(&signed_as("RS256", "victim"))),
        own("own billing, hs256 in lower case", &bearer(&signed_as("hs256", "victim"))),
        own(
            "own billing, expired an hour ago",
            &bearer(&jwt(
                json!({"alg":"HS256"}),
                json!({"sub":"victim","exp":now() - 3600,"aud":"authenticated"}),
                JWT_SECRET.as_bytes(),
            )),
        ),
        own("own billing, sub with a right-to-left override", &bearer(&signed_as("HS256", "victim\u{202e}"))),
        row("own billing, a header byte that is not UTF-8", obs_text, 401, Some("unauthorized")),
        row("POST on own billing", request("POST", "/api/billing", &[("authorization", &mallory)], b""), 405, None),
    ]);

    // Host-app reads.
    let host_get = |attack: &str, path: &str, status, code| {
        row(attack, request("GET", path, &[("authorization", key)], b""), status, code)
    };
    let users = |id: &str| format!("/api/users/{id}/billing");
    rows.extend([
        row("user billing without a key", request("GET", &users("victim"), &[], b""), 401, Some("unauthorized")),
        row(
            "user billing, wrong key of the same length",
            request("GET", &users("victim"), &[("authorization", same_length_key.as_str())], b""),
            401,
            Some("unauthorized"),
        ),
        row(
            "user billing, a prefix of the key",
            request("GET", &users("victim"), &[("authorization", prefix_key.as_str())], b""),
            401,
            Some("unauthorized"),
        ),
        row(
            "user billing, the key and one byte more",
            request("GET", &users("victim"), &[("authorization", longer_key.as_str())], b""),
            401,
            Some("unauthorized"),
        ),
        row(
            "user billing with the victim's own user token",
            request("GET", &users("victim"), &[("authorization", &victim_token)], b""),
            401,
            Some("unauthorized"),
        ),
        row(
            "user billing with another user's token",
            request("GET", &users("victim"), &[("authorization", &mallory)], b""),
            401,
            Some("unauthorized"),
        ),
        host_get("user billing, id of 256 bytes", &users(&long_id), 422, Some("invalid_field")),
        host_get("user billing, id of 255 two-byte chars", &users(&long_multibyte_path), 422, Some("invalid_field")),
        host_get("user billing, id %00", &users("vic%00tim"), 422, Some("invalid_field")),
        host_get(
            "user billing, id with a right-to-left override",
            &users("%E2%80%AEmitciv"),
            422,
            Some("invalid_field"),
        ),
        host_get("user billing, id %ff", &users("%ff"), 400, Some("invalid_path")),
        host_get("user billing, id a lone surrogate in UTF-8", &users("%ED%A0%80"), 400, Some("invalid_path")),
        host_get("user billing, raw ../ traversal", "/api/users/../healthz", 404, None),
        host_get(
            "user billing, encoded traversal past the route",
            "/api/users/victim/billing/..%2F..%2Fledger",
            404,
            None,
        ),
        row("DELETE on user billing", request("DELETE", &users("victim"), &[("authorization", key)], b""), 405, None),
    ]);
    let ledger = |query: &str| format!("/api/users/victim/ledger?{query}");
    rows.extend([
        host_get("ledger limit -1", &ledger("limit=-1"), 422, Some("invalid_field")),
        host_get("ledger limit 0", &ledger("limit=0"), 422, Some("invalid_field")),
        host_get("ledger limit 501", &ledger("limit=501"), 422, Some("invalid_field")),
        host_get("ledger limit 1e300", &ledger("limit=1e300"), 400, Some("invalid_query")),
        host_get("ledger limit 2^63", &ledger("limit=9223372036854775808"), 400, Some("invalid_query")),
        host_get("ledger limit 1.5", &ledger("limit=1.5"), 400, Some("invalid_query")),
        host_get("ledger before SQL", &ledger("before=1%20or%201=1"), 400, Some("invalid_query")),
        host_get("ledger limit twice", &ledger("limit=1&limit=2"), 400, Some("invalid_query")),
        host_get("ledger id %00", "/api/users/%00/ledger", 422, Some("invalid_field")),
        row("ledger without a key", request("GET", &ledger("limit=1"), &[], b""), 401, Some("unauthorized")),
    ]);

    // Spending.
    let spend_body = |user: &str, amount: &str, idem: &str| {
        format!(
            r#"{{"user_id":{},"amount":{amount},"idempotency_key":{},"reason":"hostile"}}"#,
            json!(user),
            json!(idem)
        )
    };
    let post = |attack: &str, path: &str, body: &str, status, code| {
        row(attack, request("POST", path, &[("authorization", key), JSON], body.as_bytes()), status, Some(code))
    };
    let spend = |attack: &str, body: &str, status, code| post(attack, "/api/credits/spend", body, status, code);
    let amount = |attack: &str, amount: &str, status, code| {
        spend(attack, &spend_body("victim", amount, "fresh-key"), status, code)
    };
    let user = |attack: &str, user: &str, status, code| {
        spend(attack, &spend_body(user, "1000000000000", "fresh-key"), status, code)
    };
    let idem = |attack: &str, idem: &str, status, code| spend(attack, &spend_body("victim", "1", idem), status, code);
    rows.extend([
        amount("spend amount -1", "-1", 422, "invalid_field"),
        amount("spend amount 0", "0", 422, "invalid_field"),
        amount("spend amount 0.5", "0.5", 400, "invalid_request"),
        amount("spend amount 1e300", "1e300", 400, "invalid_request"),
        amount("spend amount 2^63", "9223372036854775808", 400, "invalid_request"),
        amount("spend amount i64::MIN", "-9223372036854775808", 422, "invalid_field"),
        amount("spend amount 10^12 + 1", "1000000000001", 422, "invalid_field"),
        amount("spend amount as a string", r#""10""#, 400, "invalid_request"),
        amount("spend amount null", "null", 400, "invalid_request"),
        user("spend user_id of 256 bytes", &long_id, 422, "invalid_field"),
        user("spend user_id of 255 two-byte chars", &long_multibyte_id, 422, "invalid_field"),
        user("spend user_id NUL", "vic\u{0}tim", 422, "invalid_field"),
        user("spend user_id with a right-to-left override", "\u{202e}mitciv", 422, "invalid_field"),
        spend(
            "spend user_id a lone surrogate",
            &spend_body("X", "1", "fresh-key").replace(r#""X""#, r#""\ud800""#),
            400,
            "invalid_request",
        ),
        user(
            "spend more than a new user has, user_id SQL",
            "victim'; delete from ledger; --",
            402,
            "insufficient_credits",
        ),
        user("spend more than a new user has, user_id emoji", "🙂‍↔️", 402, "insufficient_credits"),
        user("spend more than a new user has, user_id a path", "../../etc/passwd", 402, "insufficient_credits"),
        idem("spend idempotency_key of 256 bytes", &long_id, 422, "invalid_field"),
        idem("spend idempotency_key empty", "", 422, "invalid_field"),
        idem("spend idempotency_key BEL", "\u{7}", 422, "invalid_field"),
        spend(
            "spend reused key, another amount",
            &spend_body("victim", "6", "spent-before"),
            409,
            "idempotency_key_reused",
        ),
        spend(
            "spend reused key, another user",
            &spend_body("mallory", "5", "spent-before"),
            409,
            "idempotency_key_reused",
        ),
        spend("spend reused hold key", &spend_body("victim", "10", "held-before"), 409, "idempotency_key_reused"),
        spend(
            "spend reason of 501 chars",
            &spend_body("victim", "1", "fresh-key").replace("hostile", &"r".repeat(501)),
            422,
            "invalid_field",
        ),
        spend(
            "spend reason NUL",
            &spend_body("victim", "1", "fresh-key").replace("hostile", r"\u0000"),
            422,
            "invalid_field",
        ),
        spend(
            "spend unknown field bucket",
            &spend_body("victim", "1", "fresh-key").replace('}', r#","bucket":"topup"}"#),
            400,
            "invalid_request",
        ),
        spend(
            "spend amount twice",
            &spend_body("victim", "1", "fresh-key").replace('}', r#","amount":-5}"#),
            400,
            "invalid_request",
        ),
        spend(
            "spend without an amount",
            r#"{"user_id":"victim","idempotency_key":"fresh-key"}"#,
            400,
            "invalid_request",
        ),
        spend("spend body an array", "[]", 400, "invalid_request"),
        spend("spend body null", "null", 400, "invalid_request"),
        spend("spend nested 10k deep", &nested_objects(10_000), 400, "invalid_request"),
        spend("spend body of 3 MiB", &three_mib, 413, "payload_too_large"),
        row(
            "spend as text/plain",
            request(
                "POST",
                "/api/credits/spend",
                &[("authorization", key), ("content-type", "text/plain")],
                spend_body("victim", "1", "k").as_bytes(),
            ),
            400,
            Some("invalid_request"),
        ),
        row(
            "spend with a wrong key",
            request(
                "POST",
                "/api/credits/spend",
                &[("authorization", same_length_key.as_str()), JSON],
                spend_body("victim", "1", "k").as_bytes(),
            ),
            401,
            Some("unauthorized"),
        ),
        row(
            "spend with the victim's user token",
            request(
                "POST",
                "/api/credits/spend",
                &[("authorization", &victim_token), JSON],
                spend_body("victim", "1", "k").as_bytes(),
            ),
            401,
            Some("unauthorized"),
        ),
        row("GET on spend", request("GET", "/api/credits/spend", &[("authorization", key)], b""), 405, None),
        row("method FOO on spend", request("FOO", "/api/credits/spend", &[("authorization", key)], b""), 405, None),
    ]);

    // Holds.
    let reserve_body = |amount: &str, ttl: &str, idem: &str| {
        format!(r#"{{"user_id":"victim","amount":{amount},"idempotency_key":"{idem}","ttl_seconds":{ttl}}}"#)
    };
    let reserve = |attack: &str, body: String, status, code| post(attack, "/api/credits/reserve", &body, status, code);
    let commit = |id: &str| format!("/api/credits/reservations/{id}/commit");
    let release = |id: &str| format!("/api/credits/reservations/{id}/release");
    rows.extend([
        reserve("reserve ttl 0", reserve_body("1", "0", "fresh-hold"), 422, "invalid_field"),
        reserve("reserve ttl -1", reserve_body("1", "-1", "fresh-hold"), 422, "invalid_field"),
        reserve("reserve ttl a day and a second", reserve_body("1", "86401", "fresh-hold"), 422, "invalid_field"),
        reserve("reserve ttl 1e300", reserve_body("1", "1e300", "fresh-hold"), 400, "invalid_request"),
        reserve("reserve amount 2^63", reserve_body("9223372036854775808", "60", "fresh-hold"), 400, "invalid_request"),
        reserve("reserve amount -5", reserve_body("-5", "60", "fresh-hold"), 422, "invalid_field"),
        reserve(
            "reserve more than the balance",
            reserve_body("1000000000000", "60", "fresh-hold"),
            402,
            "insufficient_credits",
        ),
        reserve(
            "reserve reused key, another amount",
            reserve_body("11", "300", "held-before"),
            409,
            "idempotency_key_reused",
        ),
        reserve("reserve reused spend key", reserve_body("5", "300", "spent-before"), 409, "idempotency_key_reused"),
        row(
            "reserve without a key",
            request("POST", "/api/credits/reserve", &[JSON], reserve_body("1", "60", "k").as_bytes()),
            401,
            Some("unauthorized"),
        ),
        post("commit an unknown hold", &commit("res_nothing_here"), r#"{"amount":1}"#, 404, "not_found"),
        post("commit an id of 256 bytes", &commit(&long_id), r#"{"amount":1}"#, 422, "invalid_field"),
        post("commit an encoded traversal id", &commit("..%2F..%2Fspend"), r#"{"amount":1}"#, 404, "not_found"),
        post("commit an id %ff", &commit("%ff"), r#"{"amount":1}"#, 400, "invalid_path"),
        post("commit amount -1", &commit(&hold), r#"{"amount":-1}"#, 422, "invalid_field"),
        post("commit amount 1.5", &commit(&hold), r#"{"amount":1.5}"#, 400, "invalid_request"),
        post("commit amount 2^63", &commit(&hold), r#"{"amount":9223372036854775808}"#, 400, "invalid_request"),
        post("commit more than is held", &commit(&hold), r#"{"amount":11}"#, 400, "invalid_amount"),
        row(
            "commit without a key",
            request("POST", &commit(&hold), &[JSON], br#"{"amount":1}"#),
            401,
            Some("unauthorized"),
        ),
        row("GET on commit", request("GET", &commit(&hold), &[("authorization", key)], b""), 405, None),
        post("release an unknown hold", &release("res_nothing_here"), "{}", 404, "not_found"),
        post("release an id %00", &release("%00"), "{}", 422, "invalid_field"),
        row("release without a key", request("POST", &release(&hold), &[JSON], b"{}"), 401, Some("unauthorized")),
        row("DELETE on release", request("DELETE", &release(&hold), &[("authorization", key)], b""), 405, None),
    ]);

    // Pages, ops and the public documents.
    rows.extend([
        row("billing page without a session", request("GET", "/dashboard/billing", &[], b""), 401, None),
        row(
            "billing page, forged cookie",
            request("GET", "/dashboard/billing", &[("cookie", "tally_session=a.b.c")], b""),
            401,
            None,
        ),
        row(
            "billing page, alg none bearer",
            request("GET", "/dashboard/billing", &[("authorization", &bearer(&unsigned("none", "victim")))], b""),
            401,
            None,
        ),
        row("POST on the billing page", request("POST", "/dashboard/billing", &[], b""), 405, None),
        row(
            "dev login with a host app's secret set",
            request("GET", "/dev/login?user=mallory", &[], b""),
            403,
            Some("forbidden"),
        ),
        row(
            "dev login, next=//evil",
            request("GET", "/dev/login?user=victim&next=//evil.example", &[], b""),
            403,
            Some("forbidden"),
        ),
        row("dev login without a user", request("GET", "/dev/login", &[], b""), 400, Some("invalid_query")),
        row("POST on healthz", request("POST", "/healthz", &[], b""), 405, None),
        row("healthz, raw traversal to metrics", request("GET", "/healthz/../metrics", &[], b""), 404, None),
        row("POST on metrics", request("POST", "/metrics", &[], b""), 405, None),
        row("POST on the catalogue", request("POST", "/api/catalogue", &[JSON], b"{}"), 405, None),
        row("DELETE on the catalogue", request("DELETE", "/api/catalogue", &[], b""), 405, None),
        row("PUT on openapi.json", request("PUT", "/openapi.json", &[JSON], b"{}"), 405, None),
        row("openapi.json%00", request("GET", "/openapi.json%00", &[], b""), 404, None),
        row("an unknown route", request("GET", "/api/admin", &[("authorization", key)], b""), 404, None),
        row("a NUL in the request line", request("GET", "/healthz\0", &[], b""), 400, None),
        row(
            "a header section of 1 MiB",
            request("GET", "/healthz", &[("x-padding", &"p".repeat(1 << 20))], b""),
            431,
            None,
        ),
    ]);
    let count = rows.len();
    assert!(count >= 40, "{count} rows");
    let wrong = run_table(&app, rows).await;
    assert!(wrong.is_empty(), "{} of {count} hostile requests got another answer:\n{}", wrong.len(), wrong.join("\n"));

    assert_eq!(stored_rows(&app).await, before, "a refused request stored something");
    assert_eq!(app.billing("victim").await, victim_before);
    for path in ["/v1/customers", "/v1/checkout/sessions", "/v1/billing_portal/sessions"] {
        assert!(stripe.seen(path).is_empty(), "a refused request reached Stripe: {path}");
    }
    // A user route shows the signer's data whatever the request names.
    let answer = send(&app, request("GET", "/api/billing?user_id=victim", &[("authorization", &mallory)], b"")).await;
    assert_eq!((answer.status, answer.body["user_id"].as_str()), (200, Some("mallory")), "{}", answer.body);
    // Still healthy, and a legitimate spend goes through.
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, body) = app.spend("victim", 1, "after-the-storm").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credits"], victim_before["credits"].as_i64().unwrap() - 1);
    app.assert_books_balance().await;
}

/// In dev mode `/dev/login` signs anyone in locally: hostile ids and proxied requests
/// get their 4xx and no cookie.
async fn hostile_dev_logins_are_refused_and_sign_no_one_in(db: Db) {
    let app = spawn_app(db).await;
    let before = stored_rows(&app).await;
    let login = |attack: &str, query: &str, headers: &[(&str, &str)], status, code| {
        row(attack, request("GET", &format!("/dev/login?{query}"), headers, b""), status, code)
    };
    let rows = vec![
        login("dev login, user of 256 bytes", &format!("user={}", "u".repeat(256)), &[], 422, Some("invalid_field")),
        login(
            "dev login, user of 255 two-byte chars",
            &format!("user={}", "%C3%A9".repeat(255)),
            &[],
            422,
            Some("invalid_field"),
        ),
        login("dev login, user %00", "user=a%00b", &[], 422, Some("invalid_field")),
        login("dev login, user with a line break", "user=a%0D%0ASet-Cookie:%20x=1", &[], 422, Some("invalid_field")),
        login("dev login, user with a right-to-left override", "user=%E2%80%AEnimda", &[], 422, Some("invalid_field")),
        login("dev login, user blank", "user=%20%20", &[], 422, Some("invalid_field")),
        login("dev login, user empty", "user=", &[], 422, Some("invalid_field")),
        login("dev login, user twice", "user=a&user=b", &[], 400, Some("invalid_query")),
        login("dev login, no user", "", &[], 400, Some("invalid_query")),
        login(
            "dev login through X-Forwarded-For",
            "user=a",
            &[("x-forwarded-for", "203.0.113.9")],
            403,
            Some("forbidden"),
        ),
        login("dev login through X-Real-IP", "user=a", &[("x-real-ip", "203.0.113.9")], 403, Some("forbidden")),
        login("dev login through Forwarded", "user=a", &[("forwarded", "for=203.0.113.9")], 403, Some("forbidden")),
        row("POST on dev login", request("POST", "/dev/login?user=a", &[], b""), 405, None),
    ];
    let count = rows.len();
    let mut wrong = Vec::new();
    for row in rows {
        let answer = send(&app, row.request).await;
        let code = answer.body.get("error").and_then(Value::as_str);
        if answer.status != row.status || (row.code.is_some() && code != row.code) {
            wrong.push(format!(
                "{}: got {} {}, want {} {:?}",
                row.attack, answer.status, answer.body, row.status, row.code
            ));
        }
        if answer.header("set-cookie").is_some() {
            wrong.push(format!("{}: set a cookie", row.attack));
        }
    }
    assert!(wrong.is_empty(), "{} of {count} dev logins went wrong:\n{}", wrong.len(), wrong.join("\n"));
    assert_eq!(stored_rows(&app).await, before);
    let answer = send(&app, request("GET", "/dev/login?user=pat", &[], b"")).await;
    assert_eq!(answer.status, 303, "a plain local login still works");
}

/// Tokens that only a verifier trusting the header would take (issue 11): `alg: none`
/// in any case, HS256 signed with an empty key, an RS256, ES256 or HS512 header over an
/// HMAC with the secret, and a `kid` pointing anywhere. All 401 on every user route.
async fn algorithm_confusion_and_unsigned_tokens_are_401_over_http(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let mut tokens = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        tokens.push((format!("alg {alg}, unsigned"), unsigned(alg, "victim")));
        tokens.push((format!("alg {alg}, signed"), signed_as(alg, "victim")));
    }
    for alg in ["RS256", "ES256", "HS512", "hs256", "Hs256", "HS256 ", ""] {
        tokens.push((format!("alg {alg:?} over an HMAC with the secret"), signed_as(alg, "victim")));
    }
    tokens.push(("HS256 signed with an empty key".into(), jwt(json!({"alg":"HS256"}), claims("victim"), b"")));
    tokens.push((
        "a kid naming a file".into(),
        jwt(json!({"alg":"HS256","kid":"../../../../dev/null"}), claims("victim"), b""),
    ));
    tokens.push((
        "an embedded jwk".into(),
        jwt(json!({"alg":"HS256","jwk":{"kty":"oct","k":""}}), claims("victim"), b""),
    ));
    tokens.push(("no alg at all".into(), jwt(json!({"typ":"JWT"}), claims("victim"), JWT_SECRET.as_bytes())));
    let good = app.token("victim");
    let parts: Vec<&str> = good.split('.').collect();
    tokens.push(("a good token without its signature".into(), format!("{}.{}.", parts[0], parts[1])));
    tokens.push(("a good token with a second signature".into(), format!("{good}.{}", parts[2])));
    let mut wrong = Vec::new();
    for (attack, token) in &tokens {
        for (method, path, body) in [
            ("GET", "/api/billing", ""),
            ("POST", "/api/checkout", r#"{"item":"topup"}"#),
            ("POST", "/api/portal", "{}"),
        ] {
            let auth = bearer(token);
            let answer = send(&app, request(method, path, &[("authorization", &auth), JSON], body.as_bytes())).await;
            if answer.status != 401 || answer.body["error"] != "unauthorized" {
                wrong.push(format!("{attack} on {path}: {} {}", answer.status, answer.body));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(stripe.seen("/v1/customers").is_empty(), "no forged token reached Stripe");
    let answer = send(&app, request("GET", "/api/billing", &[("authorization", &bearer(&good))], b"")).await;
    assert_eq!((answer.status, answer.body["user_id"].as_str()), (200, Some("victim")), "the real token works");
}

/// The billing page's cookie rides along on any cross-site form post: only posts the
/// browser marks as our own (Sec-Fetch-Site same-origin, or an Origin equal to
/// TALLY_PUBLIC_URL) reach Stripe, on the portal as on checkout.
async fn cookie_posts_to_the_portal_and_checkout_from_other_sites_are_refused_and_same_origin_ones_pass(db: Db) {
    let stripe = FakeStripe::start().await;
    let app =
        spawn_app_with(db, &[("STRIPE_SECRET_KEY", "sk_test_fake"), ("STRIPE_API_BASE", stripe.url.as_str())]).await;
    let token = dev_token(&app, "pat").await;
    let cookie = format!("tally_session={token}");
    let refused: [&[(&str, &str)]; 6] = [
        &[],
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[("origin", "http://localhost:3000.evil.example")],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
    ];
    let allowed: [&[(&str, &str)]; 2] = [&[("sec-fetch-site", "same-origin")], &[("origin", "http://localhost:3000")]];
    for path in ["/api/portal", "/api/checkout"] {
        for extra in refused.iter().chain(&allowed) {
            let mut headers = vec![FORM, ("cookie", cookie.as_str())];
            headers.extend_from_slice(extra);
            let answer = send(&app, request("POST", path, &headers, b"item=topup")).await;
            let want = if allowed.contains(extra) { 303 } else { 403 };
            assert_eq!(answer.status, want, "{path} {extra:?}: {}", answer.body);
        }
    }
    assert_eq!(stripe.seen("/v1/billing_portal/sessions").len(), allowed.len());
    assert_eq!(stripe.seen("/v1/checkout/sessions").len(), allowed.len());
}

/// Success, cancel and return URLs come from TALLY_PUBLIC_URL, and every redirect goes
/// to it or to the URL Stripe returned: never to a host named by the request, whether
/// in `Host`, `X-Forwarded-Host`, the body or a `next=`.
async fn redirects_and_stripe_return_urls_never_take_a_host_from_the_request(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db.clone(), &stripe).await;
    let auth = bearer(&app.token("rita"));
    let spoofed = [
        ("host", "evil.example"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "host=evil.example;proto=https"),
        ("origin", "https://evil.example"),
        ("referer", "https://evil.example/"),
        ("authorization", auth.as_str()),
    ];
    let body = json!({
        "item": "topup",
        "success_url": "https://evil.example/",
        "cancel_url": "//evil.example",
        "return_url": "https://evil.example/",
        "next": "//evil.example",
    });
    let mut headers = spoofed.to_vec();
    headers.push(JSON);
    let answer = send(&app, request("POST", "/api/checkout", &headers, body.to_string().as_bytes())).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let mut headers = spoofed.to_vec();
    headers.push(FORM);
    let form = "item=topup&success_url=https%3A%2F%2Fevil.example&next=%2F%2Fevil.example";
    let answer = send(&app, request("POST", "/api/checkout?next=//evil.example", &headers, form.as_bytes())).await;
    assert_eq!(answer.status, 303);
    let location = answer.header("location").unwrap();
    assert!(location.starts_with("https://checkout.stripe.com/"), "{location}");
    for session in stripe.seen("/v1/checkout/sessions") {
        assert_eq!(
            session.param("success_url"),
            Some("http://localhost:3000/dashboard/billing?success=true&session_id={CHECKOUT_SESSION_ID}")
        );
        assert_eq!(session.param("cancel_url"), Some("http://localhost:3000/dashboard/billing?canceled=true"));
    }
    let answer = send(
        &app,
        request("POST", "/api/portal?return_url=https://evil.example", &headers, b"return_url=%2F%2Fevil.example"),
    )
    .await;
    assert_eq!(answer.status, 303);
    assert!(answer.header("location").unwrap().starts_with("https://billing.stripe.com/"));
    let portal = &stripe.seen("/v1/billing_portal/sessions")[0];
    assert_eq!(portal.param("return_url"), Some("http://localhost:3000/dashboard/billing"));
    let page = send(
        &app,
        request("GET", "/dashboard/billing?next=//evil.example&redirect=https://evil.example", &spoofed, b""),
    )
    .await;
    assert_eq!((page.status, page.header("location")), (200, None));

    // Dev mode's login redirects to the billing page, whatever it is asked.
    let dev = spawn_app(db).await;
    for query in ["next=//evil.example", "redirect=https://evil.example", "next=https:%2F%2Fevil.example"] {
        let answer =
            send(&dev, request("GET", &format!("/dev/login?user=rita&{query}"), &[("host", "evil.example")], b""))
                .await;
        assert_eq!((answer.status, answer.header("location")), (303, Some("/dashboard/billing")), "{query}");
    }
}

// --- hostile webhook bodies, validly signed -----------------------------------------

async fn post_signed(app: &TestApp, body: &[u8]) -> (u16, Value) {
    let signature = tally_stripe::sign(body, SECRET, now());
    let (status, answer) = app.post_webhook(body.to_vec(), Some(&signature), "application/json").await;
    (status.as_u16(), answer)
}

/// 10,000 levels of nesting, where the envelope is, in the event's object and in a
/// field tally never reads: no stack overflow; a body that is not an event is a 400,
/// an unreadable object is stored as failed for replay, an unread field changes nothing.
async fn a_signed_webhook_nested_10k_levels_deep_is_answered_without_a_crash(db: Db) {
    let app = spawn_app(db).await;
    let (status, answer) = post_signed(&app, nested_objects(10_000).as_bytes()).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("not_an_event")), "{answer}");
    let deep = nested_arrays(10_000);
    let object = format!(
        r#"{{"id":"evt_deep_object","object":"event","type":"invoice.paid","created":{},"data":{{"object":{deep}}}}}"#,
        now()
    );
    let (status, answer) = post_signed(&app, object.as_bytes()).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("failed")), "{answer}");
    let c = Customer::new("dora", Shape::V2026, app.shop);
    let topup = c.topup("checkout.session.completed", "cs_deep", "pi_deep", "paid", now());
    let text = topup.to_string().replacen('{', &format!(r#"{{"unread":{deep},"#), 1);
    let (status, answer) = post_signed(&app, text.as_bytes()).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("applied")), "{answer}");
    assert_eq!(app.balance("dora").await, ("free".into(), app.shop.free, app.shop.pack.credits));
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
    app.assert_books_balance().await;
}

/// Numbers past i64 in the envelope are a 400; in the object they make it unreadable
/// (stored as failed, nothing granted); times at the ends of i64 in a subscription are
/// refused at the edge (they broke the grant clock's query on Postgres) and the clock
/// still runs.
async fn signed_webhooks_with_huge_numbers_are_refused_or_stored_never_a_500(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("hugo", Shape::V2026, app.shop);
    let event = c.topup("checkout.session.completed", "cs_huge", "pi_huge", "paid", now());
    let created = format!("\"created\":{}", event["created"]);
    for huge in ["1e300", "9223372036854775808", "-9223372036854775809", "1e400"] {
        let body = event.to_string().replacen(&created, &format!("\"created\":{huge}"), 1);
        let (status, answer) = post_signed(&app, body.as_bytes()).await;
        assert_eq!((status, answer["error"].as_str()), (400, Some("not_an_event")), "created {huge}: {answer}");
    }
    // tally never reads `amount_total` (a pack's credits come from the catalogue), so
    // the session is granted as any other, once each.
    let mut granted = 0;
    for (n, huge) in ["1e300", "18446744073709551616", "-1e400"].into_iter().enumerate() {
        let e = c.topup("checkout.session.completed", &format!("cs_huge_{n}"), &format!("pi_huge_{n}"), "paid", now());
        let body = e.to_string().replace("\"amount_total\":", &format!("\"amount_total\":{huge},\"was\":"));
        let (status, answer) = post_signed(&app, body.as_bytes()).await;
        assert_eq!((status, answer["outcome"].as_str()), (200, Some("applied")), "amount_total {huge}: {answer}");
        granted += app.shop.pack.credits;
    }
    let t = now();
    for (n, (start, end)) in [(i64::MIN, i64::MAX), (0, i64::MAX), (i64::MIN, 0), (-1, t)].into_iter().enumerate() {
        let mut sub = c.subscription(
            "customer.subscription.created",
            &format!("sub_huge_{n}"),
            app.shop.low.price,
            "active",
            t,
            t,
            false,
            t,
        );
        set_every(&mut sub, "current_period_start", json!(start));
        set_every(&mut sub, "current_period_end", json!(end));
        set_every(&mut sub, "start_date", json!(start));
        let (status, answer) = post_signed(&app, sub.to_string().as_bytes()).await;
        assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_event")), "period {start}..{end}: {answer}");
    }
    app.store.grant_due(now() + 40 * 86_400).await.expect("the grant clock still runs");
    assert_eq!(app.balance("hugo").await, ("free".into(), app.shop.free, granted));
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
    app.assert_books_balance().await;
}

/// Sets `key` to `value` wherever it appears in `value`'s tree.
fn set_every(tree: &mut Value, key: &str, value: Value) {
    match tree {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == key {
                    *v = value.clone();
                } else {
                    set_every(v, key, value.clone());
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| set_every(v, key, value.clone())),
        _ => {}
    }
}

/// A signed body read two ways (two `id`s, two `user_id`s) is not guessed at: two ids
/// are a 400; an object naming two users is stored as failed and grants no one.
async fn a_signed_webhook_with_duplicate_keys_grants_nothing(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("dina", Shape::V2026, app.shop);
    let event = c.topup("checkout.session.completed", "cs_dup", "pi_dup", "paid", now());
    let body = event.to_string().replacen('{', r#"{"id":"evt_shadow","#, 1);
    let (status, answer) = post_signed(&app, body.as_bytes()).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("not_an_event")), "{answer}");
    let body = event.to_string().replace(r#""user_id":"dina""#, r#""user_id":"dina","user_id":"mallory""#);
    assert_ne!(body, event.to_string(), "the fake names the user in metadata");
    let (status, answer) = post_signed(&app, body.as_bytes()).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("failed")), "{answer}");
    for user in ["dina", "mallory"] {
        assert_eq!(app.balance(user).await, ("free".into(), app.shop.free, 0), "{user}");
    }
    app.assert_books_balance().await;
}

/// Bytes that are not UTF-8 (a stray 0xff, an overlong `/`, a surrogate encoded in
/// UTF-8) under a valid signature: 400, nothing stored.
async fn a_signed_webhook_with_bytes_that_are_not_utf8_is_400_and_stores_nothing(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("ulla", Shape::V2026, app.shop);
    let body = c.topup("checkout.session.completed", "cs_utf", "pi_utf", "paid", now()).to_string().into_bytes();
    let at = body.windows(6).position(|w| w == b"cs_utf").unwrap() + 3;
    for bad in [&[0xff][..], &[0xc0, 0xaf], &[0xed, 0xa0, 0x80], &[0xf8, 0x88, 0x80, 0x80, 0x80]] {
        let mut hostile = body.clone();
        hostile.splice(at..at, bad.iter().copied());
        let (status, answer) = post_signed(&app, &hostile).await;
        assert_eq!((status, answer["error"].as_str()), (400, Some("not_an_event")), "{bad:x?}: {answer}");
    }
    assert_eq!(app.stored_count().await, 0);
    assert_eq!(app.balance("ulla").await, ("free".into(), app.shop.free, 0));
}

// --- regressions -------------------------------------------------------------------------

/// U+202E and the other bidirectional controls are invisible: `\u{202e}nimda` reads as
/// `admin` in a log or a ledger export (Trojan Source). The contract's "printable"
/// excludes them; they were accepted as ids everywhere.
async fn an_id_with_a_right_to_left_override_is_refused_on_every_route(db: Db) {
    let app = spawn_app(db).await;
    let before = stored_rows(&app).await;
    for id in ["\u{202e}nimda", "ad\u{2066}min", "a\u{200f}"] {
        let (status, body) = app.spend(id, 1, "k-rtl").await;
        assert_eq!((status.as_u16(), body["error"].as_str()), (422, Some("invalid_field")), "{id:?} {body}");
        let (status, body) = app.spend("amy", 1, id).await;
        assert_eq!((status.as_u16(), body["error"].as_str()), (422, Some("invalid_field")), "key {id:?} {body}");
        let (status, body) = app.reserve(id, 1, "k-rtl", 60).await;
        assert_eq!(status.as_u16(), 422, "{id:?} {body}");
        let encoded: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
        let (status, body) = app.get(&format!("/api/users/{encoded}/billing")).await;
        assert_eq!(status.as_u16(), 422, "{id:?} {body}");
        let c = Customer::new(id, Shape::V2026, app.shop);
        let (status, body) =
            app.post_event(&c.topup("checkout.session.completed", "cs_rtl", "pi_rtl", "paid", now())).await;
        assert_eq!((status.as_u16(), body["error"].as_str()), (400, Some("invalid_event")), "{id:?} {body}");
    }
    assert_eq!(stored_rows(&app).await, before);
    let (status, _) = app.spend("🙂", 1, "emoji-are-printable").await;
    assert_eq!(status, 200, "emoji stay valid ids");
}

/// A path id that does not decode to UTF-8 (`%ff`, a surrogate) was answered by axum's
/// plain-text rejection; it is a 400 in tally's JSON error shape, as every other refusal.
async fn a_path_id_that_is_not_utf8_is_400_in_the_json_error_shape(db: Db) {
    let app = spawn_app(db).await;
    for path in [
        "/api/users/%ff/billing",
        "/api/users/%ED%A0%80/ledger",
        "/api/credits/reservations/%C0%AF/commit",
        "/api/credits/reservations/%fe/release",
    ] {
        let method = if path.contains("reservations") { "POST" } else { "GET" };
        let answer =
            send(&app, request(method, path, &[("authorization", &bearer(API_KEY)), JSON], br#"{"amount":1}"#)).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (400, Some("invalid_path")),
            "{path}: {}",
            answer.head
        );
    }
}

/// A host-app or user body past the body limit was a 400 `invalid_request` that read as
/// a client bug in the JSON; it is the 413 the webhook already answers.
async fn a_host_app_body_past_the_limit_is_413_not_400(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db, &stripe).await;
    let padding = "r".repeat(3 << 20);
    let spend = json!({ "user_id": "amy", "amount": 1, "idempotency_key": "big", "reason": padding });
    let (status, body) = app.post("/api/credits/spend", &spend).await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (413, Some("payload_too_large")), "{body}");
    let (status, body) = app.post_as("amy", "/api/checkout", &json!({ "item": "topup", "padding": padding })).await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (413, Some("payload_too_large")), "{body}");
    let form = format!("item=topup&padding={padding}");
    let answer = send(
        &app,
        request("POST", "/api/checkout", &[("authorization", &bearer(&app.token("amy"))), FORM], form.as_bytes()),
    )
    .await;
    assert_eq!((answer.status, answer.body["error"].as_str()), (413, Some("payload_too_large")), "{}", answer.body);
    assert!(stripe.seen("/v1/customers").is_empty());
}

/// A spend or hold refused (402 for want of credits, 409 for a reused key) for a user
/// tally had never seen left an account and its signup row behind: a loop of made-up
/// user ids grew the accounts table and the ledger without a credit moving. Also when
/// the refused job shares its batch with one that goes through.
async fn a_refused_spend_or_hold_for_an_unseen_user_leaves_no_account(db: Db) {
    let app = spawn_app(db).await;
    let (status, _) = app.spend("seen", 1, "taken").await;
    assert_eq!(status, 200);
    let before = stored_rows(&app).await;
    let too_much = 1_000_000_000_000;
    assert_eq!(app.spend("ghost-1", too_much, "k1").await.0, 402);
    assert_eq!(app.reserve("ghost-2", too_much, "k2", 60).await.0, 402);
    assert_eq!(app.spend("ghost-3", 1, "taken").await.0, 409);
    assert_eq!(app.reserve("ghost-4", 1, "taken", 60).await.0, 409);
    assert_eq!(stored_rows(&app).await, before);
    assert_eq!(app.balance("ghost-1").await, ("free".into(), app.shop.free, 0), "still a new user");

    let ghosts: Vec<(String, String)> = (0..8).map(|n| (format!("ghost-batch-{n}"), format!("kb{n}"))).collect();
    let refused = ghosts.iter().map(|(user, key)| app.spend(user, too_much, key));
    let (refused, (status, _)) = tokio::join!(futures::future::join_all(refused), app.spend("newcomer", 1, "kn"));
    assert!(refused.iter().all(|(status, _)| *status == 402));
    assert_eq!(status, 200);
    let after = stored_rows(&app).await;
    let accounts = |rows: &[(&str, i64)]| rows.iter().find(|(t, _)| *t == "accounts").unwrap().1;
    assert_eq!(accounts(&after), accounts(&before) + 1, "only the newcomer's account is opened");
    app.assert_books_balance().await;
}
