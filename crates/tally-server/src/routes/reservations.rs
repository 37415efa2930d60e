//! Host-app routes for metered calls: hold credits before, commit the cost after.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use tally_core::input::{Id, MAX_AMOUNT, check_amount, check_id};
use tally_store::{ReservationState, Reserve};

use crate::auth::HostApp;
use crate::extract::{ApiJson, ApiPath, within};
use crate::{ApiError, AppState, metrics};

/// How long a hold lasts when the caller does not say, and at most.
const DEFAULT_TTL: i64 = 300;
const MAX_TTL: i64 = 24 * 3600;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/credits/reserve", post(reserve_credits))
        .route("/api/credits/reservations/{id}/commit", post(commit_reservation))
        .route("/api/credits/reservations/{id}/release", post(release_reservation))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveRequest {
    user_id: String,
    amount: i64,
    idempotency_key: String,
    ttl_seconds: Option<i64>,
}

async fn reserve_credits(
    _: HostApp,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ReserveRequest>,
) -> Result<Json<ReservationState>, ApiError> {
    let answer = async {
        let user_id = Id::parse("user_id", &req.user_id)?;
        let idempotency_key = Id::parse("idempotency_key", &req.idempotency_key)?;
        let reserve = Reserve {
            user_id: user_id.as_str(),
            amount: check_amount("amount", req.amount)?,
            idempotency_key: idempotency_key.as_str(),
            ttl_seconds: within("ttl_seconds", req.ttl_seconds.unwrap_or(DEFAULT_TTL), 1..=MAX_TTL)?,
        };
        Ok(state.store.reserve(reserve).await?)
    }
    .await;
    metrics::credits("reserve", &answer);
    answer.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitRequest {
    /// The actual cost: at most what is held; the rest is freed.
    amount: i64,
}

async fn commit_reservation(
    _: HostApp,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CommitRequest>,
) -> Result<Json<ReservationState>, ApiError> {
    let answer = async {
        let amount = within("amount", req.amount, 0..=MAX_AMOUNT)?;
        Ok(state.store.commit_reservation(check_id("id", &id)?, amount).await?)
    }
    .await;
    metrics::credits("commit", &answer);
    answer.map(Json)
}

async fn release_reservation(
    _: HostApp,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ReservationState>, ApiError> {
    let answer = async { Ok(state.store.release_reservation(check_id("id", &id)?).await?) }.await;
    metrics::credits("release", &answer);
    answer.map(Json)
}
