//! User routes that send the user to Stripe: Checkout and the Customer Portal. Prices
//! come from configuration only; a subscriber asking for a plan gets the portal.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;
use tally_core::Item;
use tally_store::SubscriptionView;
use tally_stripe::StripeClient;
use tally_stripe::api::CheckoutRequest;

use crate::auth::SignedInUser;
use crate::extract::JsonOrForm;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/checkout", post(create_checkout_session))
        .route("/api/portal", post(create_portal_session))
}

/// Only the item is read: any price the client sends is ignored.
#[derive(Deserialize)]
struct CheckoutBody {
    item: String,
}

async fn create_checkout_session(
    State(state): State<AppState>,
    SignedInUser(user): SignedInUser,
    body: JsonOrForm<CheckoutBody>,
) -> Result<Response, ApiError> {
    let stripe = state.stripe.as_ref().ok_or(ApiError::StripeNotConfigured)?;
    let item = Item::parse(body.value.item.trim())
        .ok_or_else(|| ApiError::bad_request("invalid_request", "item: one of pro, enterprise, topup"))?;
    let price_id = state.catalog.offer(item).price_id.clone().ok_or_else(|| {
        tracing::error!(item = item.as_str(), "no price configured");
        ApiError::StripeNotConfigured
    })?;
    let customer = stripe_customer(&state, stripe, &user).await?;
    if item.plan().is_some() {
        let billing = state.store.billing(&user, &state.catalog).await?;
        let subscribed = billing.subscription.as_ref().is_some_and(SubscriptionView::is_live);
        if subscribed {
            let portal = stripe.create_portal_session(&customer, &billing_page(&state)).await?;
            return Ok(answer(portal.url, body.form));
        }
    }
    let success_url = format!("{}?success=true&session_id={{CHECKOUT_SESSION_ID}}", billing_page(&state));
    let cancel_url = format!("{}?canceled=true", billing_page(&state));
    let request = CheckoutRequest {
        user_id: &user,
        item,
        price_id: &price_id,
        customer: &customer,
        success_url: &success_url,
        cancel_url: &cancel_url,
        allow_promotion_codes: state.allow_promotion_codes,
    };
    let session = stripe.create_checkout_session(&request).await?;
    Ok(answer(session.url, body.form))
}

async fn create_portal_session(
    State(state): State<AppState>,
    SignedInUser(user): SignedInUser,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let stripe = state.stripe.as_ref().ok_or(ApiError::StripeNotConfigured)?;
    let customer = stripe_customer(&state, stripe, &user).await?;
    let portal = stripe.create_portal_session(&customer, &billing_page(&state)).await?;
    let form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    Ok(answer(portal.url, form))
}

/// The user's Stripe customer, made on first use. Concurrent first clicks agree on one:
/// Stripe answers the same idempotency key (derived from the user) with the same
/// customer, and the database keeps the first one recorded.
async fn stripe_customer(state: &AppState, stripe: &StripeClient, user: &str) -> Result<String, ApiError> {
    if let Some(customer) = state.store.stripe_customer(user).await? {
        return Ok(customer);
    }
    let created = stripe.create_customer(user).await?;
    Ok(state.store.link_stripe_customer(user, &created.id, &state.catalog).await?)
}

fn billing_page(state: &AppState) -> String {
    format!("{}/dashboard/billing", state.public_url)
}

/// A form post is sent on with 303; a JSON caller gets the URL.
fn answer(url: String, form: bool) -> Response {
    if form {
        Redirect::to(&url).into_response()
    } else {
        (StatusCode::OK, Json(json!({ "url": url }))).into_response()
    }
}
