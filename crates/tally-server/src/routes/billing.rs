//! `GET /api/billing`: the signed-in user's own billing state.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use tally_store::Billing;

use crate::auth::SignedInUser;
use crate::{ApiError, AppState};
use tally_auth::User;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/billing", get(show_own_billing))
}

async fn show_own_billing(
    State(state): State<AppState>,
    SignedInUser(User { id: user, .. }): SignedInUser,
) -> Result<Json<Billing>, ApiError> {
    Ok(Json(state.store.billing(&user).await?))
}
