//! Every error a handler returns, mapped once to a status and a stable JSON body:
//! `{"error": code, "message": text}`. Causes are logged here, not shown.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tally_core::CoreError;
use tally_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Well-formed, but naming something that is not there (an item not in the catalogue).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("Stripe is not configured")]
    StripeNotConfigured,
    /// Stripe refused or failed; the cause is logged, the user gets a stable message.
    #[error("the payment provider could not be reached; try again")]
    Stripe,
    #[error("insufficient credits: needed {needed}, available {available}")]
    InsufficientCredits { needed: i64, available: i64 },
    #[error("{0}")]
    Conflict(String),
    /// An idempotency key used before for another user, amount or kind of request.
    #[error("the idempotency key was used for {0}")]
    KeyReused(&'static str),
    #[error("{0} not found")]
    NotFound(String),
    #[error("this route does not take that method")]
    MethodNotAllowed,
    /// A reservation that is no longer held.
    #[error("the reservation is already {0}")]
    Settled(String),
    #[error("the body is larger than this route takes")]
    PayloadTooLarge,
    /// The request (its body, mostly) took longer than the server allows.
    #[error("the request took too long")]
    RequestTimeout,
    /// The database cannot commit now: callers (Stripe included) should retry.
    #[error("the database is unavailable; retry later")]
    Unavailable,
    /// The database answers but lacks the newest migration this binary knows.
    #[error("the database schema lacks migration {expected} (newest applied: {}); run `tally migrate`", .found.map_or("none".to_owned(), |v| v.to_string()))]
    NotMigrated { expected: i64, found: Option<i64> },
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest { code, message: message.into() }
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Unprocessable { code, message: message.into() }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::StripeNotConfigured => (StatusCode::SERVICE_UNAVAILABLE, "stripe_not_configured"),
            ApiError::Stripe => (StatusCode::BAD_GATEWAY, "stripe_error"),
            ApiError::InsufficientCredits { .. } => (StatusCode::PAYMENT_REQUIRED, "insufficient_credits"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::KeyReused(_) => (StatusCode::CONFLICT, "idempotency_key_reused"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Settled(_) => (StatusCode::CONFLICT, "reservation_closed"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::NotMigrated { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_migrated"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// A value outside the input limits: 422 naming the field.
impl From<tally_core::input::InvalidField> for ApiError {
    fn from(e: tally_core::input::InvalidField) -> ApiError {
        ApiError::unprocessable("invalid_field", e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                ApiError::Unavailable
            }
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::KeyReused(what) => ApiError::KeyReused(what),
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::Settled(status) => ApiError::Settled(status),
            StoreError::Invalid(message) => ApiError::bad_request("invalid_amount", message),
            StoreError::Refused(CoreError::InsufficientCredits { needed, available }) => {
                ApiError::InsufficientCredits { needed, available }
            }
            StoreError::Refused(e @ CoreError::InvalidAmount(_)) => {
                ApiError::bad_request("invalid_amount", e.to_string())
            }
            e @ (StoreError::BadUrl(_) | StoreError::Database(_)) => {
                tracing::error!(error = %e, "database error");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut body = json!({ "error": code, "message": self.to_string() });
        match &self {
            ApiError::InsufficientCredits { needed, available } => {
                body["needed"] = json!(needed);
                body["available"] = json!(available);
            }
            ApiError::Settled(status) => body["status"] = json!(status),
            ApiError::NotMigrated { expected, found } => {
                body["expected_migration"] = json!(expected);
                body["found_migration"] = json!(found);
            }
            _ => {}
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

impl From<tally_stripe::StripeError> for ApiError {
    fn from(e: tally_stripe::StripeError) -> ApiError {
        // The client has logged Stripe's type, code and message.
        tracing::warn!(error = %e, "Stripe call failed");
        crate::metrics::stripe_error();
        ApiError::Stripe
    }
}
