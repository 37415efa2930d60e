//! `POST /api/webhooks/stripe`: verify the signature on the raw body, then record and
//! apply the event in one transaction. 200 for anything stored (or already stored),
//! 400 for what is not a signed event, 413 over 1 MiB, 503 when the database cannot
//! commit, so that Stripe retries. Never 500 because of a payload.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tally_store::IngestOutcome;

use crate::{ApiError, AppState, IngestError, limits, metrics, request_log};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/webhooks/stripe", post(receive_webhook))
        .layer(DefaultBodyLimit::max(limits::WEBHOOK_BODY_BYTES))
}

async fn receive_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let answer = ingest(&state, &headers, body).await;
    let outcome = match &answer {
        Ok((_, result)) => result.outcome.as_str(),
        Err(ApiError::Unavailable) => "unavailable",
        Err(_) => "refused",
    };
    metrics::webhook(outcome, started.elapsed());
    let (id, result) = answer?;
    Ok(Json(json!({
        "received": true,
        "id": id,
        "outcome": result.outcome,
        "user_id": result.user_id,
        "note": result.note,
    })))
}

/// The event's id and what became of it.
async fn ingest(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, IngestOutcome), ApiError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::bad_request("unreadable_body", rejection.body_text()),
    })?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.trim_start().to_ascii_lowercase().starts_with("application/json") {
        return Err(ApiError::bad_request("unsupported_content_type", "Stripe events are application/json"));
    }
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    state.verifier.verify(&body, signature, tally_store::now()).map_err(|e| {
        // Kept for `tally doctor`; counted in memory and written later, never awaited.
        state.store.note_signature_failure();
        ApiError::bad_request("invalid_signature", e.to_string())
    })?;
    let parsed = tally_stripe::parse_event(&body).map_err(|e| ApiError::bad_request("not_an_event", e.to_string()))?;
    request_log::event(&parsed.id);
    // parse_event has read the body as JSON, which is UTF-8.
    let payload = std::str::from_utf8(&body).map_err(|e| ApiError::bad_request("not_an_event", e.to_string()))?;
    let result = crate::ingest_parsed(&state.store, &parsed, payload).await.map_err(|e| {
        tracing::warn!(event = %parsed.id, error = %e, "webhook not stored");
        match e {
            // Ids past the input limits (a NUL byte, 10 KB) and times past the calendar,
            // refused before the database.
            IngestError::Invalid(e) => ApiError::bad_request("invalid_event", e.to_string()),
            // Mapped like every store error: an outage is a 503 (Stripe retries), a
            // refusal that retrying cannot change is not reported as one.
            IngestError::Store(e) => ApiError::from(e),
        }
    })?;
    if let Some(user_id) = &result.user_id {
        request_log::user(user_id);
    }
    tracing::info!(event = %parsed.id, kind = %parsed.event_type, outcome = result.outcome.as_str(), "webhook");
    Ok((parsed.id, result))
}
