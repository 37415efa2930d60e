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
use tally_core::{Interval, Product};
use tally_store::SubscriptionView;
use tally_stripe::StripeClient;
use tally_stripe::api::CheckoutRequest;

use crate::auth::SignedInUser;
use crate::extract::JsonOrForm;
use crate::routes::billing_view::ActionError;
use crate::{ApiError, AppState};
use tally_auth::User;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/checkout", post(create_checkout_session))
        .route("/api/portal", post(create_portal_session))
}

/// Only the item and interval are read: any price the client sends is ignored.
#[derive(Deserialize)]
struct CheckoutBody {
    item: String,
    interval: Option<String>,
}

async fn create_checkout_session(
    State(state): State<AppState>,
    SignedInUser(User { id: user, .. }): SignedInUser,
    body: JsonOrForm<CheckoutBody>,
) -> Result<Response, ApiError> {
    let form = body.form;
    back_to_page_if_stripe_fails(checkout(&state, &user, body).await, form)
}

async fn checkout(state: &AppState, user: &str, body: JsonOrForm<CheckoutBody>) -> Result<Response, ApiError> {
    let stripe = state.stripe.as_ref().ok_or(ApiError::StripeNotConfigured)?;
    let catalogue = state.store.catalogue();
    let item = catalogue.item(body.value.item.trim()).ok_or_else(|| {
        let ids: Vec<&str> = catalogue
            .plans
            .iter()
            .map(|p| p.id.as_str())
            .chain(catalogue.packs.iter().map(|p| p.id.as_str()))
            .collect();
        ApiError::unprocessable("unknown_item", format!("item: one of {}", ids.join(", ")))
    })?;
    let interval = match body.value.interval.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
        None => None,
        Some(text) => Some(
            Interval::parse(text)
                .ok_or_else(|| ApiError::unprocessable("invalid_interval", "interval: month or year"))?,
        ),
    };
    let price = item.price_for(interval).ok_or_else(|| {
        ApiError::unprocessable("invalid_interval", format!("interval: {} has no such price", item.id()))
    })?;
    let price_id = price.id.clone().ok_or_else(|| {
        tracing::error!(item = item.id(), "the price has no Stripe id: run `tally stripe-setup`");
        ApiError::StripeNotConfigured
    })?;
    let subscription = matches!(item, Product::Plan(_));
    let customer = stripe_customer(state, stripe, user).await?;
    if subscription {
        let billing = state.store.billing(user).await?;
        let subscribed = billing.subscription.as_ref().is_some_and(SubscriptionView::is_live);
        if subscribed {
            let portal = stripe.create_portal_session(&customer, &billing_page(state)).await?;
            return Ok(answer(portal.url, body.form));
        }
    }
    let success_url = format!("{}?success=true&session_id={{CHECKOUT_SESSION_ID}}", billing_page(state));
    let cancel_url = format!("{}?canceled=true", billing_page(state));
    let request = CheckoutRequest {
        user_id: user,
        item: item.id(),
        subscription,
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
    SignedInUser(User { id: user, .. }): SignedInUser,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let portal = async {
        let stripe = state.stripe.as_ref().ok_or(ApiError::StripeNotConfigured)?;
        let customer = stripe_customer(&state, stripe, &user).await?;
        Ok(stripe.create_portal_session(&customer, &billing_page(&state)).await?.url)
    };
    back_to_page_if_stripe_fails(portal.await.map(|url| answer(url, form)), form)
}

/// A form post from the billing page that Stripe cannot serve returns to the page, which
/// says why in words; an API caller gets the error as JSON.
fn back_to_page_if_stripe_fails(result: Result<Response, ApiError>, form: bool) -> Result<Response, ApiError> {
    let error = match result {
        Err(ApiError::StripeNotConfigured) if form => ActionError::StripeNotConfigured,
        Err(ApiError::Stripe) if form => ActionError::StripeUnreachable,
        other => return other,
    };
    Ok(Redirect::to(&format!("/dashboard/billing?error={}", error.code())).into_response())
}

/// The user's Stripe customer, made on first use. Concurrent first clicks agree on one:
/// Stripe answers the same idempotency key (derived from the user) with the same
/// customer, and the database keeps the first one recorded.
async fn stripe_customer(state: &AppState, stripe: &StripeClient, user: &str) -> Result<String, ApiError> {
    if let Some(customer) = state.store.stripe_customer(user).await? {
        return Ok(customer);
    }
    let created = stripe.create_customer(user).await?;
    Ok(state.store.link_stripe_customer(user, &created.id).await?)
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
