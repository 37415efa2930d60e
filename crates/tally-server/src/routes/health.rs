//! Liveness, with a database check, and the Prometheus metrics.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::{ApiError, AppState, metrics};

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(check_health)).route("/metrics", get(show_metrics))
}

async fn check_health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await?;
    Ok(Json(json!({ "status": "ok" })))
}

async fn show_metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::handle().render())
}
