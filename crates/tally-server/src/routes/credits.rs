//! Host-app routes: a user's billing state and ledger, and spending credits.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tally_store::{Billing, LedgerRow, Spend};

use crate::auth::HostApp;
use crate::{ApiError, AppState};

/// The most credits one call may move; anything larger is a bug in the caller.
const MAX_AMOUNT: i64 = 1_000_000_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users/{id}/billing", get(show_billing))
        .route("/api/users/{id}/ledger", get(list_ledger))
        .route("/api/credits/spend", post(spend_credits))
}

async fn show_billing(_: HostApp, State(state): State<AppState>, Path(user_id): Path<String>) -> Result<Json<Billing>, ApiError> {
    Ok(Json(state.store.billing(&user_id, &state.catalog).await?))
}

#[derive(Deserialize)]
struct LedgerQuery {
    limit: Option<i64>,
}

async fn list_ledger(
    _: HostApp,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    Query(query): Query<LedgerQuery>,
) -> Result<Json<Vec<LedgerRow>>, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(state.store.ledger(&user_id, limit).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpendRequest {
    user_id: String,
    amount: i64,
    idempotency_key: String,
    reason: Option<String>,
}

async fn spend_credits(
    _: HostApp,
    State(state): State<AppState>,
    body: Result<Json<SpendRequest>, JsonRejection>,
) -> Result<Json<Billing>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
    if req.user_id.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_request", "user_id: must not be empty"));
    }
    if !(1..=MAX_AMOUNT).contains(&req.amount) {
        return Err(ApiError::bad_request("invalid_amount", format!("amount: must be between 1 and {MAX_AMOUNT}")));
    }
    if req.idempotency_key.trim().is_empty() || req.idempotency_key.len() > 255 {
        return Err(ApiError::bad_request("invalid_request", "idempotency_key: 1 to 255 characters"));
    }
    let spend = Spend {
        user_id: &req.user_id,
        amount: req.amount,
        idempotency_key: &req.idempotency_key,
        reason: req.reason.as_deref().unwrap_or("spend"),
    };
    Ok(Json(state.store.spend(spend, &state.catalog).await?))
}
