//! The host app's credit routes: spending, idempotency, auth, validation.

use reqwest::StatusCode;
use serde_json::json;
use tally_stripe::fake::Shape;

use crate::helpers::{API_KEY, Customer, Db, now, spawn_app};
use crate::on_both_backends_and_catalogues;

on_both_backends_and_catalogues!(
    spending_takes_plan_bucket_first_then_topup,
    spending_more_than_the_balance_is_402_and_changes_nothing,
    the_same_spend_key_twice_spends_once,
    a_spend_key_of_another_user_is_a_conflict,
    a_key_reused_with_another_amount_or_kind_is_409_and_moves_nothing,
    host_app_routes_need_the_api_key,
    spend_requests_are_validated,
    ledger_lists_newest_rows_first,
    healthz_checks_the_database,
    metrics_count_webhooks_and_credit_operations,
);

async fn spending_takes_plan_bucket_first_then_topup(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("carol", Shape::V2026, s);
    app.deliver(&c.topup("checkout.session.completed", "cs_1", "pi_1", "paid", now()), "applied").await;
    let (status, body) = app.spend("carol", s.free + 50, "k1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let left = s.pack.credits - 50;
    assert_eq!(
        (body["plan_credits"].as_i64(), body["topup_credits"].as_i64(), body["credits"].as_i64()),
        (Some(0), Some(left), Some(left))
    );
    app.assert_books_balance().await;
}

async fn spending_more_than_the_balance_is_402_and_changes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let free = app.shop.free;
    let (status, body) = app.spend("dave", free + 1, "k1").await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(body["error"], "insufficient_credits");
    assert_eq!((body["needed"].as_i64(), body["available"].as_i64()), (Some(free + 1), Some(free)));
    assert_eq!(app.balance("dave").await, ("free".into(), free, 0));
    app.assert_books_balance().await;
}

async fn the_same_spend_key_twice_spends_once(db: Db) {
    let app = spawn_app(db).await;
    let (first, _) = app.spend("erin", 10, "same").await;
    let (second, body) = app.spend("erin", 10, "same").await;
    assert_eq!((first, second), (StatusCode::OK, StatusCode::OK));
    assert_eq!(body["credits"], app.shop.free - 10);
    assert_eq!(app.balance("erin").await, ("free".into(), app.shop.free - 10, 0));
}

async fn a_spend_key_of_another_user_is_a_conflict(db: Db) {
    let app = spawn_app(db).await;
    let (status, body) = app.spend("erin", 10, "shared").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.spend("frank", 10, "shared").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(app.balance("frank").await, ("free".into(), app.shop.free, 0));
}

async fn host_app_routes_need_the_api_key(db: Db) {
    let app = spawn_app(db).await;
    for key in [None, Some("wrong")] {
        let mut request = app.client.get(format!("{}/api/users/x/billing", app.address));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let spend = app
            .client
            .post(format!("{}/api/credits/spend", app.address))
            .bearer_auth(key.unwrap_or(""))
            .json(&json!({"user_id":"x","amount":1,"idempotency_key":"k"}))
            .send()
            .await
            .unwrap();
        assert_eq!(spend.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.balance("x").await, ("free".into(), app.shop.free, 0));
}

async fn spend_requests_are_validated(db: Db) {
    let app = spawn_app(db).await;
    // Values outside the input limits: 422 naming the field.
    let out_of_limits = [
        (json!({"user_id":"x","amount":0,"idempotency_key":"k"}), "amount"),
        (json!({"user_id":"x","amount":-5,"idempotency_key":"k"}), "amount"),
        (json!({"user_id":"x","amount":1_000_000_000_001_i64,"idempotency_key":"k"}), "amount"),
        (json!({"user_id":"","amount":1,"idempotency_key":"k"}), "user_id"),
        (json!({"user_id":"x\u{0}y","amount":1,"idempotency_key":"k"}), "user_id"),
        (json!({"user_id":"x".repeat(256),"amount":1,"idempotency_key":"k"}), "user_id"),
        (json!({"user_id":"x","amount":1,"idempotency_key":""}), "idempotency_key"),
        (json!({"user_id":"x","amount":1,"idempotency_key":"k\n"}), "idempotency_key"),
        (json!({"user_id":"x","amount":1,"idempotency_key":"k","reason":"r".repeat(501)}), "reason"),
        (json!({"user_id":"x","amount":1,"idempotency_key":"k","reason":"a\u{0}"}), "reason"),
    ];
    for (body, field) in out_of_limits {
        let (status, answer) = app.post("/api/credits/spend", &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(answer["error"], "invalid_field", "{answer}");
        assert!(answer["message"].as_str().unwrap().starts_with(&format!("{field}:")), "{answer}");
    }
    // Bodies that are not a spend request at all: 400.
    let bad = [
        json!({"user_id":"x","amount":1.5,"idempotency_key":"k"}),
        json!({"user_id":"x","amount":1}),
        json!({"user_id":"x","amount":1,"idempotency_key":"k","price":"free"}),
    ];
    for body in bad {
        let response = app
            .client
            .post(format!("{}/api/credits/spend", app.address))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    }
    assert_eq!(app.balance("x").await, ("free".into(), app.shop.free, 0));
}

async fn ledger_lists_newest_rows_first(db: Db) {
    let app = spawn_app(db).await;
    app.spend("gina", 3, "k1").await;
    app.spend("gina", 5, "k2").await;
    let (status, rows) = app.get("/api/users/gina/ledger?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0]["delta"].as_i64(), rows[0]["balance_after"].as_i64()), (Some(-5), Some(app.shop.free - 8)));
    assert_eq!(rows[0]["reference"], "spend:k2");
    assert_eq!(rows[1]["reference"], "spend:k1");
}

async fn healthz_checks_the_database(db: Db) {
    let app = spawn_app(db).await;
    let response = app.client.get(format!("{}/healthz", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.store.close().await;
    let response = app.client.get(format!("{}/healthz", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

async fn metrics_count_webhooks_and_credit_operations(db: Db) {
    let app = spawn_app(db).await;
    let s = app.shop;
    let c = Customer::new("mo", Shape::V2026, s);
    app.deliver(&c.topup("checkout.session.completed", "cs_1", "pi_1", "paid", now()), "applied").await;
    app.spend("mo", s.free + s.pack.credits + 1, "too-much").await;
    let response = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(text.contains("tally_webhooks_total{outcome=\"applied\"}"), "{text}");
    assert!(text.contains("tally_webhook_seconds_bucket"), "{text}");
    assert!(text.contains("tally_credit_operations_total{operation=\"spend\",result=\"insufficient\"}"), "{text}");
}

/// A retry is the same request again; the same key with another amount, or used for a
/// hold and then a spend, is a mistake of the caller: 409, and nothing moves.
async fn a_key_reused_with_another_amount_or_kind_is_409_and_moves_nothing(db: Db) {
    let app = spawn_app(db).await;
    let free = app.shop.free;
    let (status, _) = app.spend("kim", 5, "k1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.spend("kim", 5, "k1").await;
    assert_eq!((status, body["credits"].as_i64()), (StatusCode::OK, Some(free - 5)), "a retry: {body}");
    let (status, body) = app.spend("kim", 6, "k1").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::CONFLICT, Some("idempotency_key_reused")), "{body}");

    let (status, body) = app.reserve("kim", 3, "k1", 60).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::CONFLICT, Some("idempotency_key_reused")), "{body}");
    let (status, _) = app.reserve("kim", 3, "h1", 60).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.reserve("kim", 4, "h1", 60).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::CONFLICT, Some("idempotency_key_reused")), "{body}");
    let (status, body) = app.spend("kim", 3, "h1").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::CONFLICT, Some("idempotency_key_reused")), "{body}");

    let b = app.billing("kim").await;
    assert_eq!((b["credits"].as_i64(), b["reserved_credits"].as_i64()), (Some(free - 5), Some(3)));
    app.assert_books_balance().await;
}
