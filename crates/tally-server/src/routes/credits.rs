//! Host-app routes: a user's billing state and ledger, and spending credits.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tally_core::input::check_id;
use tally_core::requests::SpendRequest;
use tally_store::{Billing, LedgerRow, Spend};

use crate::auth::HostApp;
use crate::extract::{ApiJson, ApiPath, ApiQuery, within};
use crate::{ApiError, AppState, metrics, request_log};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users/{id}/billing", get(show_billing))
        .route("/api/users/{id}/ledger", get(list_ledger))
        .route("/api/credits/spend", post(spend_credits))
}

async fn show_billing(
    _: HostApp,
    State(state): State<AppState>,
    ApiPath(user_id): ApiPath<String>,
) -> Result<Json<Billing>, ApiError> {
    let user_id = check_id("id", &user_id)?;
    request_log::user(user_id);
    Ok(Json(state.store.billing(user_id).await?))
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
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LedgerQuery>,
) -> Result<Json<Vec<LedgerRow>>, ApiError> {
    let limit = within("limit", query.limit.unwrap_or(50), 1..=500)?;
    let user_id = check_id("id", &user_id)?;
    request_log::user(user_id);
    Ok(Json(state.store.ledger(user_id, limit, query.before).await?))
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
    let checked = req.validate()?;
    request_log::user(checked.user_id.as_str());
    let spend = Spend {
        user_id: checked.user_id.as_str(),
        amount: checked.amount,
        idempotency_key: checked.idempotency_key.as_str(),
        reason: checked.reason.as_str(),
    };
    Ok(state.store.spend(spend).await?)
}
