//! Bad input gets its contract answer and stores nothing; unknown, unmatched and
//! unreadable events are stored for later.

use reqwest::StatusCode;
use serde_json::json;
use tally_stripe::fake::Shape;

use crate::helpers::{Customer, Db, PRO, SECRET, TestApp, now, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    a_bad_signature_is_400_and_stores_nothing,
    malformed_json_with_a_valid_signature_is_400,
    json_that_is_not_an_event_is_400,
    a_body_over_1_mib_is_413,
    a_wrong_content_type_is_400,
    an_unknown_event_type_is_stored_as_ignored,
    an_event_without_a_user_is_stored_as_unmatched_and_applied_when_redelivered,
    an_unreadable_object_is_stored_as_failed,
    ids_past_the_input_limits_in_a_signed_event_are_400_and_store_nothing,
);

async fn post_signed(app: &TestApp, body: &[u8], content_type: &str) -> (StatusCode, serde_json::Value) {
    let signature = tally_stripe::sign(body, SECRET, now());
    app.post_webhook(body.to_vec(), Some(&signature), content_type).await
}

async fn a_bad_signature_is_400_and_stores_nothing(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026, app.shop);
    let body = c.checkout("cs_1", "sub_1", "pro", "paid", now()).to_string();
    let wrong = tally_stripe::sign(body.as_bytes(), "whsec_not_ours", now());
    let old = tally_stripe::sign(body.as_bytes(), SECRET, now() - 301);
    for signature in [None, Some(wrong.as_str()), Some(old.as_str()), Some("t=1,v1=zz"), Some("nonsense")] {
        let (status, answer) = app.post_webhook(body.clone().into_bytes(), signature, "application/json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{signature:?}");
        assert_eq!(answer["error"], "invalid_signature");
    }
    let tampered = body.replace("cs_1", "cs_2");
    let signature = tally_stripe::sign(body.as_bytes(), SECRET, now());
    let (status, _) = app.post_webhook(tampered.into_bytes(), Some(&signature), "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(app.stored_count().await, 0);
    assert_eq!(app.balance("alice").await, ("free".into(), 100, 0));
}

async fn malformed_json_with_a_valid_signature_is_400(db: Db) {
    let app = spawn_app(db).await;
    let (status, answer) = post_signed(&app, br#"{"id":"evt_1","type":"invoice.paid",#"#, "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "not_an_event");
    assert_eq!(app.stored_count().await, 0);
}

async fn json_that_is_not_an_event_is_400(db: Db) {
    let app = spawn_app(db).await;
    for body in [
        json!([1, 2, 3]),
        json!({"hello": "world"}),
        json!({"id":"cus_1","object":"customer","type":"x","created":1,"data":{"object":{}}}),
    ] {
        let (status, answer) = post_signed(&app, body.to_string().as_bytes(), "application/json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["error"], "not_an_event");
    }
    assert_eq!(app.stored_count().await, 0);
}

async fn a_body_over_1_mib_is_413(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026, app.shop);
    let mut event = c.checkout("cs_1", "sub_1", "pro", "paid", now());
    event["data"]["object"]["padding"] = json!("x".repeat(1024 * 1024));
    let (status, answer) = app.post_event(&event).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"], "payload_too_large");
    assert_eq!(app.stored_count().await, 0);
}

async fn a_wrong_content_type_is_400(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026, app.shop);
    let body = c.checkout("cs_1", "sub_1", "pro", "paid", now()).to_string();
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let (status, answer) = post_signed(&app, body.as_bytes(), content_type).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer["error"], "unsupported_content_type");
    }
    assert_eq!(app.stored_count().await, 0);
    let (status, _) = post_signed(&app, body.as_bytes(), "application/json; charset=utf-8").await;
    assert_eq!(status, StatusCode::OK);
}

async fn an_unknown_event_type_is_stored_as_ignored(db: Db) {
    let app = spawn_app(db).await;
    let event = json!({"id":"evt_unknown","object":"event","type":"customer.tax_id.created","created":now(),
        "api_version":"2026-09-30.endive","livemode":false,"data":{"object":{"id":"txi_1","object":"tax_id"}}});
    app.deliver(&event, "ignored").await;
    let stored = app.stored("evt_unknown").await.unwrap();
    assert_eq!((stored.outcome.as_str(), stored.event_type.as_str()), ("ignored", "customer.tax_id.created"));
}

async fn an_event_without_a_user_is_stored_as_unmatched_and_applied_when_redelivered(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026, app.shop);
    let t = now() - 100;
    // A first invoice that names no user, of a subscription and customer tally has not seen.
    let invoice = c.invoice("invoice.paid", "in_1", "sub_1", PRO, "subscription_create", t, t);
    app.deliver(&invoice, "unmatched").await;
    assert_eq!(app.stored(invoice["id"].as_str().unwrap()).await.unwrap().outcome, "unmatched");
    assert_eq!(app.balance("alice").await, ("free".into(), 100, 0));
    // The subscription's own event names the user; the invoice then finds alice.
    let created = c.subscription("customer.subscription.created", "sub_1", PRO, "incomplete", t, t, false, t);
    app.deliver(&created, "applied").await;
    app.deliver(&invoice, "applied").await;
    assert_eq!(app.balance("alice").await, ("pro".into(), 2_500, 0));
    app.deliver(&invoice, "duplicate").await;
    app.assert_books_balance().await;
}

async fn an_unreadable_object_is_stored_as_failed(db: Db) {
    let app = spawn_app(db).await;
    let event = json!({"id":"evt_bad_object","object":"event","type":"invoice.paid","created":now(),
        "data":{"object":{"object":"invoice","lines":"not a list"}}});
    app.deliver(&event, "failed").await;
    let stored = app.stored("evt_bad_object").await.unwrap();
    assert_eq!(stored.outcome, "failed");
    assert!(stored.note.unwrap().contains("invoice.paid"));
}

/// A NUL byte or a 10 KB id or type in a signed event: refused at the edge (400), not sent to
/// the database, where Postgres refused it with an error that read as an outage (503,
/// and Stripe would retry for days).
async fn ids_past_the_input_limits_in_a_signed_event_are_400_and_store_nothing(db: Db) {
    let app = spawn_app(db).await;
    let c = Customer::new("alice", Shape::V2026, app.shop);
    let event = c.checkout("cs_1", "sub_1", "pro", "paid", now());
    let mut hostile = Vec::new();
    let mut nul_customer = event.clone();
    nul_customer["data"]["object"]["customer"] = json!("cus_\u{0}x");
    hostile.push((nul_customer, "data.object.customer"));
    let mut long_user = event.clone();
    long_user["data"]["object"]["metadata"]["user_id"] = json!("u".repeat(10_000));
    hostile.push((long_user, "data.object.metadata.user_id"));
    let mut nul_id = event.clone();
    nul_id["id"] = json!("evt_\u{0}");
    hostile.push((nul_id, "id"));
    // Types of events tally does not handle are stored too (fuzzing found a DEL byte).
    for hostile_type in ["i\u{7f}voice.paid", "x\u{0}", &"t".repeat(10_000)] {
        let mut bad_type = event.clone();
        bad_type["type"] = json!(hostile_type);
        hostile.push((bad_type, "type"));
    }
    for (body, field) in hostile {
        let (status, answer) = post_signed(&app, body.to_string().as_bytes(), "application/json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {answer}");
        assert_eq!(answer["error"], "invalid_event");
        assert!(answer["message"].as_str().unwrap().starts_with(&format!("{field}:")), "{answer}");
    }
    assert_eq!(app.stored_count().await, 0);
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}
