//! The HTTP routes, one module per area.

mod credits;
mod health;
mod openapi;
mod reservations;
mod webhooks;

use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(webhooks::router())
        .merge(credits::router())
        .merge(reservations::router())
        .merge(health::router())
        .merge(openapi::router())
}
