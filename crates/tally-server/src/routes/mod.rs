//! The HTTP routes, one module per area.

mod billing;
pub(crate) mod billing_view;
mod catalogue;
mod checkout;
mod credits;
mod health;
pub(crate) mod openapi;
mod pages;
mod reservations;
mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use tower::ServiceBuilder;

use crate::{ApiError, AppState, limits, request_log};

/// Every route, with the body limit and the deadline of a request (`request_timeout`);
/// `/metrics` too unless it has a listener of its own.
pub fn router(request_timeout: Duration, with_metrics: bool) -> Router<AppState> {
    let routes = if with_metrics { routes().merge(health::metrics_router()) } else { routes() };
    routes
        // Unknown routes and methods answer in the JSON error shape too.
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Webhooks set their own, larger limit nearer the handler, which wins.
        .layer(DefaultBodyLimit::max(limits::API_BODY_BYTES))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async { ApiError::RequestTimeout }))
                .timeout(request_timeout),
        )
        // Outermost, so that the line's latency and status include a timeout's answer.
        .layer(axum::middleware::from_fn(request_log::log_request))
}

/// `/metrics` alone, for the listener of TALLY_METRICS_BIND.
pub fn metrics_only() -> Router {
    health::metrics_router()
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .layer(axum::middleware::from_fn(request_log::log_request))
}

fn routes() -> Router<AppState> {
    Router::new()
        .merge(webhooks::router())
        .merge(credits::router())
        .merge(reservations::router())
        .merge(billing::router())
        .merge(catalogue::router())
        .merge(checkout::router())
        .merge(pages::router())
        .merge(health::router())
        .merge(openapi::router())
}
