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

use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
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
