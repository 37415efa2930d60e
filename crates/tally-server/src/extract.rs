//! Request extractors whose rejections are tally's own 400s.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::{Form, Json};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A JSON body; a missing field, an unknown field or a wrong type is a 400 naming it.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge),
            Err(rejection) => Err(ApiError::bad_request("invalid_request", rejection_text(&rejection))),
        }
    }
}

/// A query string; one that does not parse is a 400 in tally's JSON error shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::bad_request("invalid_query", rejection.body_text())),
        }
    }
}

/// A path parameter; one that does not decode to UTF-8 (`%ff`) is a 400 in tally's
/// JSON error shape, not axum's plain-text rejection.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::bad_request("invalid_path", rejection.body_text())),
        }
    }
}

/// A body sent as JSON or as an HTML form; `form` says which, so the answer can match.
pub struct JsonOrForm<T> {
    pub value: T,
    pub form: bool,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if content_type.starts_with("application/x-www-form-urlencoded") {
            let Form(value) = Form::<T>::from_request(req, state).await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::bad_request("invalid_request", e.body_text())
                }
            })?;
            Ok(JsonOrForm { value, form: true })
        } else {
            let ApiJson(value) = ApiJson::<T>::from_request(req, state).await?;
            Ok(JsonOrForm { value, form: false })
        }
    }
}

fn rejection_text(rejection: &JsonRejection) -> String {
    rejection.body_text()
}

/// Checks that a number is within `range`, naming the field when it is not (422).
pub fn within(field: &str, value: i64, range: std::ops::RangeInclusive<i64>) -> Result<i64, ApiError> {
    Ok(tally_core::input::check_range(field, value, range)?)
}
