//! A small Stripe API client: form-encoded requests with an idempotency key on every
//! POST (the same key on each retry), bounded exponential backoff with jitter on 429,
//! 5xx and connection failures, no retry on other 4xx, and a timeout on every call.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// How a [`StripeClient`] waits and retries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Per attempt, connect to last byte.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff; each retry doubles it, up to [`MAX_BACKOFF`], with jitter.
    pub backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { timeout: Duration::from_secs(20), max_retries: 3, backoff: Duration::from_millis(500) }
    }
}

pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    /// Stripe refused the request; `kind`, `code` and `message` are Stripe's.
    #[error("Stripe answered {status}: {kind} {code}: {message}", code = code.as_deref().unwrap_or("-"))]
    Api { status: u16, kind: String, code: Option<String>, message: String },
    #[error("Stripe did not answer within the timeout")]
    Timeout,
    #[error("cannot reach Stripe: {0}")]
    Network(String),
    #[error("unexpected answer from Stripe: {0}")]
    Decode(String),
}

impl StripeError {
    /// Worth another attempt: rate limits, Stripe's own failures, and the network.
    fn retryable(&self) -> bool {
        match self {
            StripeError::Api { status, .. } => *status == 429 || *status >= 500,
            StripeError::Timeout | StripeError::Network(_) => true,
            StripeError::Decode(_) => false,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

/// Talks to the Stripe API at `base` (https://api.stripe.com, or a local peer in tests).
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    secret_key: String,
    options: ClientOptions,
}

impl StripeClient {
    pub fn new(base: &str, secret_key: &str, options: ClientOptions) -> StripeClient {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with a timeout and rustls builds");
        StripeClient { http, base: base.trim_end_matches('/').to_owned(), secret_key: secret_key.to_owned(), options }
    }

    /// POSTs a form; `idempotency_key` makes a retried or repeated call safe.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<T, StripeError> {
        self.send(|| self.request(Method::POST, path).header("Idempotency-Key", idempotency_key).form(form)).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, StripeError> {
        self.send(|| self.request(Method::GET, path).query(query)).await
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.secret_key)
    }

    async fn send<T: DeserializeOwned>(&self, build: impl Fn() -> RequestBuilder) -> Result<T, StripeError> {
        let mut attempt = 0;
        loop {
            let result = self.attempt(build()).await;
            match result {
                Err(e) if e.retryable() && attempt < self.options.max_retries => {
                    let wait = backoff(self.options.backoff, attempt);
                    tracing::warn!(error = %e, attempt, wait_ms = wait.as_millis() as u64, "retrying Stripe call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(error = %e, "Stripe call failed");
                    return Err(e);
                }
                Ok(value) => return Ok(value),
            }
        }
    }

    async fn attempt<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, StripeError> {
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| StripeError::Decode(e.to_string()));
        }
        let detail = serde_json::from_slice::<ErrorBody>(&body).ok().map(|b| b.error);
        Err(StripeError::Api {
            status: status.as_u16(),
            kind: detail.as_ref().and_then(|d| d.kind.clone()).unwrap_or_else(|| reason(status)),
            code: detail.as_ref().and_then(|d| d.code.clone()),
            message: detail.and_then(|d| d.message).unwrap_or_default(),
        })
    }
}

fn transport_error(e: reqwest::Error) -> StripeError {
    if e.is_timeout() { StripeError::Timeout } else { StripeError::Network(e.to_string()) }
}

fn reason(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_")
}

/// `base * 2^attempt`, capped, with "full jitter" over its upper half so that many
/// clients retrying together spread out.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF);
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        for attempt in 0..6 {
            let wait = backoff(Duration::from_millis(100), attempt);
            let ceiling = Duration::from_millis(100 << attempt).min(MAX_BACKOFF);
            assert!(wait >= ceiling / 2 && wait <= ceiling, "{attempt}: {wait:?}");
        }
        assert!(backoff(Duration::from_secs(1), 30) <= MAX_BACKOFF);
    }
}
