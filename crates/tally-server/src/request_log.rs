//! One log line per request: the route (its template, never the raw path or query,
//! which may carry ids or a token someone put in a URL), the status, the latency, and
//! the user and Stripe event it concerned, for log shippers to index.
//!
//! The line's span is open while the handler runs, so a handler that learns who the
//! request is for records it with [`user`] or [`event`] and every line it logs carries
//! it too.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing::field::Empty;

/// Wraps a request in its span and logs its line when it is answered.
pub async fn log_request(route: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!("request", method = %request.method(), route, user_id = Empty, event_id = Empty);
    let response = next.run(request).instrument(span.clone()).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = response.status().as_u16();
    span.in_scope(|| tracing::info!(status, latency_ms, "request"));
    response
}

/// The request is for this user (checked already against the input limits).
pub fn user(user_id: &str) {
    tracing::Span::current().record("user_id", user_id);
}

/// The request delivered this Stripe event.
pub fn event(event_id: &str) {
    tracing::Span::current().record("event_id", event_id);
}
