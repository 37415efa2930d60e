//! Host-app routes: a user's billing state and ledger, and spending credits.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tally_store::{Billing, LedgerRow, Spend};

use crate::auth::HostApp;
use crate::extract::{ApiJson, non_empty, within};
use crate::{ApiError, AppState, metrics};

/// The most credits one call may move; anything larger is a bug in the caller.
pub const MAX_AMOUNT: i64 = 1_000_000_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users/{id}/billing", get(show_billing))
        .route("/api/users/{id}/ledger", get(list_ledger))
        .route("/api/credits/spend", post(spend_credits))
}

async fn show_billing(
    _: HostApp,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Json<Billing>, ApiError> {
    Ok(Json(state.store.billing(&user_id).await?))
}

#[derive(Deserialize)]
struct LedgerQuery {
    limit: Option<i64>,
    /// A row id from an earlier page: only older rows are listed.
    before: Option<i64>,
}

async fn list_ledger(
    _: HostApp,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    Query(query): Query<LedgerQuery>,
) -> Result<Json<Vec<LedgerRow>>, ApiError> {
    let limit = within("limit", query.limit.unwrap_or(50), 1..=500)?;
    Ok(Json(state.store.ledger(&user_id, limit, query.before).await?))
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
    ApiJson(req): ApiJson<SpendRequest>,
) -> Result<Json<Billing>, ApiError> {
    let answer = spend(&state, &req).await;
    metrics::credits("spend", &answer);
    answer.map(Json)
}

async fn spend(state: &AppState, req: &SpendRequest) -> Result<Billing, ApiError> {
    let spend = Spend {
        user_id: non_empty("user_id", &req.user_id, 255)?,
        amount: within("amount", req.amount, 1..=MAX_AMOUNT)?,
        idempotency_key: non_empty("idempotency_key", &req.idempotency_key, 255)?,
        reason: req.reason.as_deref().unwrap_or("spend"),
    };
    Ok(state.store.spend(spend).await?)
}
