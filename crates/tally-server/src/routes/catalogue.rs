//! `GET /api/catalogue`: the plans, packs and prices on offer, for pricing pages.
//! Legacy prices are honoured in webhooks but never offered, so they are not here.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use tally_core::Catalogue;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/catalogue", get(show_catalogue))
}

async fn show_catalogue(State(state): State<AppState>) -> Json<Catalogue> {
    Json(state.store.catalogue().offered())
}
