//! Who is calling: the host app, by its bearer key, or a signed-in user: by the host
//! app's token in the Authorization header, or by tally's own session in the billing
//! page's cookie.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};

use tally_auth::User;

use crate::{ApiError, AppState};

/// The cookie the billing page keeps tally's session in.
pub const SESSION_COOKIE: &str = "tally_session";

/// The user a request is signed in as.
pub struct SignedInUser(pub User);

impl FromRequestParts<AppState> for SignedInUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<SignedInUser, ApiError> {
        let bearer =
            parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let verified = match bearer {
            Some(token) => state.user_tokens.verify(token).await,
            None => {
                let token = session_cookie(&parts.headers).ok_or(ApiError::Unauthorized("sign in first"))?;
                if !is_safe(&parts.method) && !same_origin(&parts.headers, &state.public_url) {
                    // A cookie rides along on cross-site form posts; only our own pages may post.
                    return Err(ApiError::Forbidden("cross-site request refused"));
                }
                state.sessions.verify(&token)
            }
        };
        // One answer for every reason (expired, forged, a subject past the input limits),
        // and no Stripe call or account for a token that is not good.
        let user = verified.map_err(|e| {
            tracing::info!(error = %e, "token refused");
            ApiError::Unauthorized("invalid or expired token")
        })?;
        crate::request_log::user(&user.id);
        Ok(SignedInUser(user))
    }
}

/// The session token from the `Cookie` header, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The browser says the request comes from our own pages: `Sec-Fetch-Site`, or else an
/// `Origin` equal to the public URL or to the host the request was sent to.
pub fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    let Some(origin) = header(ORIGIN.as_str()) else {
        return false;
    };
    let host_origin = header(HOST.as_str()).map(|host| format!("http://{host}"));
    origin == public_url.trim_end_matches('/') || Some(origin.to_owned()) == host_origin
}

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

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn the_api_key_compare_takes_only_the_whole_key() {
        let key = b"test-api-key";
        assert!(constant_time_eq(b"test-api-key", key));
        // Same length, one byte off at either end: refused (and compared to the end).
        assert!(!constant_time_eq(b"test-api-kez", key));
        assert!(!constant_time_eq(b"uest-api-key", key));
        // A prefix, an extension, nothing: refused, whatever they share with the key.
        assert!(!constant_time_eq(b"test-api-ke", key));
        assert!(!constant_time_eq(b"test", key));
        assert!(!constant_time_eq(b"test-api-key-and-more", key));
        assert!(!constant_time_eq(b"test-api-key\0", key));
        assert!(!constant_time_eq(b"", key));
    }
}
