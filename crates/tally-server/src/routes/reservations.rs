//! Host-app routes for metered calls: hold credits before, commit the cost after.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use tally_core::input::check_id;
use tally_core::requests::{CommitRequest, ReserveRequest};
use tally_store::{ReservationState, Reserve};

use crate::auth::HostApp;
use crate::extract::{ApiJson, ApiPath};
use crate::{ApiError, AppState, metrics, request_log};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/credits/reserve", post(reserve_credits))
        .route("/api/credits/reservations/{id}/commit", post(commit_reservation))
        .route("/api/credits/reservations/{id}/release", post(release_reservation))
}

async fn reserve_credits(
    _: HostApp,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ReserveRequest>,
) -> Result<Json<ReservationState>, ApiError> {
    let answer = async {
        let checked = req.validate()?;
        request_log::user(checked.user_id.as_str());
        let reserve = Reserve {
            user_id: checked.user_id.as_str(),
            amount: checked.amount,
            idempotency_key: checked.idempotency_key.as_str(),
            ttl_seconds: checked.ttl_seconds,
        };
        Ok(state.store.reserve(reserve).await?)
    }
    .await;
    metrics::credits("reserve", &answer);
    answer.map(Json)
}

async fn commit_reservation(
    _: HostApp,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CommitRequest>,
) -> Result<Json<ReservationState>, ApiError> {
    let answer = async {
        let amount = req.validate()?;
        Ok(state.store.commit_reservation(check_id("id", &id)?, amount).await?)
    }
    .await;
    metrics::credits("commit", &answer);
    log_user(&answer);
    answer.map(Json)
}

async fn release_reservation(
    _: HostApp,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ReservationState>, ApiError> {
    let answer = async { Ok(state.store.release_reservation(check_id("id", &id)?).await?) }.await;
    metrics::credits("release", &answer);
    log_user(&answer);
    answer.map(Json)
}

/// A reservation's id names its user only once the store has found it.
fn log_user(answer: &Result<ReservationState, ApiError>) {
    if let Ok(state) = answer {
        request_log::user(&state.reservation.user_id);
    }
}
