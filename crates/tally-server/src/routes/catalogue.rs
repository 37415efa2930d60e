//! `GET /api/catalogue`: the plans, packs and prices on offer, for pricing pages.
//! Legacy prices are honoured in webhooks but never offered, so they are not here.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/catalogue", get(show_catalogue))
}

async fn show_catalogue(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.catalogue_json)
}
