//! The HTTP routes, one module per area.

mod billing;
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

use crate::{ApiError, AppState, limits};

/// Every route, with the body limit and the deadline of a request (`request_timeout`).
pub fn router(request_timeout: Duration) -> Router<AppState> {
    routes()
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
