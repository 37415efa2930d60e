//! Who is calling: the host app, by its bearer key.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::{ApiError, AppState};

/// Proof that the request carries `Authorization: Bearer $TALLY_API_KEY`.
pub struct HostApp;

impl FromRequestParts<AppState> for HostApp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<HostApp, ApiError> {
        let Some(expected) = state.api_key.as_deref() else {
            return Err(ApiError::Unauthorized("TALLY_API_KEY is not set, so host-app routes are closed"));
        };
        let given = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized("missing bearer token"))?;
        if constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
            Ok(HostApp)
        } else {
            Err(ApiError::Unauthorized("wrong API key"))
        }
    }
}

/// Compares without stopping at the first difference, so timing tells nothing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
