//! The billing page, its success/cancel banners and fulfilment on return from
//! Checkout; signing in to it (a one-time code from the host app, or the dev-mode
//! login) and out of it.

use askama::Template;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{self, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use tally_auth::User;
use tally_store::{Handoff, now as unix_now};

use crate::auth::{SESSION_COOKIE, SignedInUser, same_origin};
use crate::extract::ApiQuery;
use crate::fulfil::{self, Fulfilment};
use crate::routes::billing_view::{ActionError, BillingPage, Look, PageInput, Success};
use crate::{ApiError, AppState};

/// How long a billing-page session lasts.
const SESSION_SECS: i64 = 7 * 24 * 3600;

/// How long a sign-in code works (once).
const HANDOFF_SECS: i64 = 60;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/billing", get(show_billing_page))
        .route("/dashboard/billing.js", get(serve_billing_script))
        .route("/api/billing/handoff", post(create_handoff))
        .route("/dashboard/sign-in", get(sign_in_with_code))
        .route("/dashboard/sign-out", post(sign_out))
        .route("/dev/login", get(dev_login))
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    look: Look,
    message: &'static str,
    dev_login: bool,
}

#[derive(Deserialize)]
struct PageQuery {
    success: Option<String>,
    canceled: Option<String>,
    session_id: Option<String>,
    /// The newest ledger row when the success page was first shown: a grant after it
    /// means the payment arrived (by webhook, perhaps for another session id).
    since: Option<i64>,
    error: Option<String>,
}

/// How many ledger rows the page lists.
const HISTORY_ROWS: i64 = 10;

async fn show_billing_page(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
    user: Result<SignedInUser, ApiError>,
) -> Result<Response, ApiError> {
    // A token in the address (`?token=`, as tally once took) signs nobody in: a link
    // could sign a victim in as whoever made it.
    let Ok(SignedInUser(user)) = user else {
        return Ok(sign_in(&state, StatusCode::UNAUTHORIZED, "Open this page from your account to see your billing."));
    };
    let success = query.success.as_deref() == Some("true");
    // Only a Checkout Session id goes to Stripe (and into an event id); anything else is
    // not one of ours and is ignored.
    let session_id = query.session_id.as_deref().filter(|id| tally_stripe::api::is_checkout_session_id(id));
    let confirmed = match (success, session_id) {
        (true, Some(session_id)) => match fulfil::checkout_session(&state, &user.id, session_id).await {
            Ok(outcome) => outcome == Fulfilment::Done,
            Err(e) => {
                tracing::warn!(error = %e, session_id, "fulfilment on return from Checkout failed");
                false
            }
        },
        _ => true,
    };
    let billing = state.store.billing(&user.id).await?;
    let ledger = state.store.ledger(&user.id, HISTORY_ROWS, None).await?;
    let price_id = match &billing.subscription {
        Some(sub) => state.store.subscription_price(&sub.id).await?,
        None => None,
    };
    let newest = ledger.first().map_or(0, |row| row.id);
    let since = query.since.unwrap_or(newest);
    let arrived = ledger.iter().any(|row| row.id > since && row.delta > 0);
    let success = match (success, session_id) {
        (false, _) => Success::None,
        (true, Some(session_id)) if !confirmed && !arrived => {
            Success::Pending { poll: format!("/dashboard/billing?success=true&session_id={session_id}&since={since}") }
        }
        (true, _) => Success::Confirmed,
    };
    let input = PageInput {
        account: user.display_name(),
        billing: &billing,
        catalogue: state.store.catalogue(),
        price_id: price_id.as_deref(),
        has_customer: state.store.stripe_customer(&user.id).await?.is_some(),
        ledger: &ledger,
        stripe_ready: state.stripe.is_some(),
        success,
        canceled: query.canceled.as_deref() == Some("true"),
        error: query.error.as_deref().and_then(ActionError::parse),
    };
    Ok(render(StatusCode::OK, BillingPage::new(input, Look::of(&state.brand)).render()))
}

/// The page's script: it only refreshes the numbers while a payment is being confirmed.
async fn serve_billing_script() -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    (headers, include_str!("../../templates/billing.js")).into_response()
}

/// A one-time sign-in link to the billing page, for the signed-in user.
#[derive(Serialize)]
struct HandoffLink {
    url: String,
    expires_at: i64,
}

/// The host app sends its user to the billing page without putting a token in a URL:
/// it asks for a code with the user's token and sends the user to the link, which
/// works once, within a minute.
async fn create_handoff(
    State(state): State<AppState>,
    SignedInUser(user): SignedInUser,
) -> Result<Json<HandoffLink>, ApiError> {
    let code = hex::encode(rand::random::<[u8; 32]>());
    let now = unix_now();
    let expires_at = now + HANDOFF_SECS;
    let handoff = Handoff { user_id: user.id, email: user.email };
    state.store.create_handoff(&code_hash(&code), &handoff, now, expires_at).await?;
    Ok(Json(HandoffLink { url: format!("{}/dashboard/sign-in?code={code}", state.public_url), expires_at }))
}

#[derive(Deserialize)]
struct SignInQuery {
    code: String,
}

async fn sign_in_with_code(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<SignInQuery>,
) -> Result<Response, ApiError> {
    let taken = match is_code(&query.code) {
        true => state.store.take_handoff(&code_hash(&query.code), unix_now()).await?,
        false => None,
    };
    let Some(handoff) = taken else {
        return Ok(sign_in(&state, StatusCode::UNAUTHORIZED, "That sign-in link was used already or has expired."));
    };
    tracing::info!(user = %handoff.user_id, "signed in by a one-time code");
    Ok(start_session(&state, &User { id: handoff.user_id, email: handoff.email }))
}

/// Ends the billing page's session. Only our own page may ask (as for every cookie post).
async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !same_origin(&headers, &state.public_url) {
        return Err(ApiError::Forbidden("cross-site request refused"));
    }
    let mut response = Redirect::to("/dashboard/billing").into_response();
    response.headers_mut().insert(SET_COOKIE, session_cookie(&state, "", 0));
    Ok(response)
}

#[derive(Deserialize)]
struct DevLoginQuery {
    user: String,
}

async fn dev_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<DevLoginQuery>,
) -> Result<Response, ApiError> {
    if !state.dev_login {
        return Err(ApiError::Forbidden(
            "dev login is off: it needs no AUTH_JWT_SECRET nor AUTH_JWKS_URL, a loopback TALLY_BIND \
             (or TALLY_DEV_LOGIN=1) and no live Stripe key",
        ));
    }
    // Behind a reverse proxy on the same host the bind is loopback, yet the caller is
    // anyone: a proxied request never signs in as someone.
    if ["forwarded", "x-forwarded-for", "x-real-ip"].iter().any(|name| headers.contains_key(*name)) {
        return Err(ApiError::Forbidden("dev login is local only: refused through a proxy"));
    }
    let user = tally_core::input::check_id("user", query.user.trim())?;
    Ok(start_session(&state, &User { id: user.to_owned(), email: None }))
}

/// Signs the browser in as `user` with a session of tally's own, and opens the page.
fn start_session(state: &AppState, user: &User) -> Response {
    let now = unix_now();
    let token = state.sessions.issue(user, now, now + SESSION_SECS);
    let mut response = Redirect::to("/dashboard/billing").into_response();
    response.headers_mut().insert(SET_COOKIE, session_cookie(state, &token, SESSION_SECS));
    response
}

fn session_cookie(state: &AppState, token: &str, max_age: i64) -> HeaderValue {
    let secure = if state.secure_cookies() { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What tally's codes look like (64 hex digits); anything else is not looked up.
fn is_code(code: &str) -> bool {
    code.len() == 64 && code.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Codes are kept as hashes: whoever reads the table cannot sign in with them.
fn code_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}

fn sign_in(state: &AppState, status: StatusCode, message: &'static str) -> Response {
    render(status, SignInPage { look: Look::of(&state.brand), message, dev_login: state.dev_login }.render())
}

/// What every page is served with: never framed (clickjacking), never cached (it shows
/// a balance), nothing from elsewhere (only its inline styles and its own script, which
/// asks only tally); its forms post to tally, whose answers redirect to Stripe's
/// Checkout and portal.
const PAGE_HEADERS: [(header::HeaderName, &str); 5] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CACHE_CONTROL, "no-store"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; frame-ancestors 'none'; \
         form-action 'self' https://checkout.stripe.com https://billing.stripe.com",
    ),
];

fn render(status: StatusCode, html: Result<String, askama::Error>) -> Response {
    match html {
        Ok(html) => (status, PAGE_HEADERS.map(|(name, value)| (name, HeaderValue::from_static(value))), Html(html))
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            ApiError::Internal.into_response()
        }
    }
}
