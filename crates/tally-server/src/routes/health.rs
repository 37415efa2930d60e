//! Liveness, with a database check; readiness, for load balancers and rolling deploys;
//! and the Prometheus metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use tally_store::Readiness;

use crate::{ApiError, AppState, metrics};

/// How long `/readyz` waits for the database: a probe that hangs on a database that
/// does not answer would hold the load balancer's check, so silence is an answer too.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(check_health)).route("/readyz", get(check_readiness))
}

/// `/metrics`: on the public listener, or alone on TALLY_METRICS_BIND's.
pub fn metrics_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/metrics", get(show_metrics))
}

async fn check_health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await?;
    Ok(Json(json!({ "status": "ok" })))
}

/// 200 while the database answers within [`READY_TIMEOUT`] and holds the newest
/// migration this binary knows; 503 otherwise, and 200 again by itself once it does.
async fn check_readiness(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, state.store.ready()).await {
        Ok(Ok(Readiness::Ready)) => Ok(Json(json!({ "status": "ready" }))),
        Ok(Ok(Readiness::NotMigrated { expected, found })) => {
            tracing::warn!(expected, ?found, "not ready: the database lacks the newest migration");
            Err(ApiError::NotMigrated { expected, found })
        }
        // Whatever the database said, it cannot serve now: never a 500 to a probe.
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the database is unavailable");
            Err(ApiError::Unavailable)
        }
        Err(_) => {
            tracing::warn!(timeout = ?READY_TIMEOUT, "not ready: the database did not answer in time");
            Err(ApiError::Unavailable)
        }
    }
}

async fn show_metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::handle().render())
}
