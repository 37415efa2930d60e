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
use crate::{ApiError, AppState, fulfil};

/// How long a billing-page session lasts.
const SESSION_SECS: i64 = 7 * 24 * 3600;

/// How long a sign-in code works (once).
const HANDOFF_SECS: i64 = 60;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/billing", get(show_billing_page))
        .route("/api/billing/handoff", post(create_handoff))
        .route("/dashboard/sign-in", get(sign_in_with_code))
        .route("/dashboard/sign-out", post(sign_out))
        .route("/dev/login", get(dev_login))
}

#[derive(Template)]
#[template(path = "billing.html")]
struct BillingPage {
    /// Whose account this is: the email, or else the user id.
    account: String,
    success: bool,
    canceled: bool,
    notes: Vec<String>,
    tier: String,
    credits: i64,
    plan_credits: i64,
    topup_credits: i64,
    reserved_credits: i64,
    subscription_lines: Vec<(&'static str, String)>,
    subscribed: bool,
    has_customer: bool,
    stripe_ready: bool,
    /// One button per plan price (hidden while subscribed: the portal changes plans).
    plan_offers: Vec<Offer>,
    /// One button per pack price.
    pack_offers: Vec<Offer>,
}

/// A checkout button: the item and interval it posts, and what it says.
struct Offer {
    item: String,
    interval: &'static str,
    label: String,
}

/// The catalogue's buttons, in the file's order.
fn offers(catalogue: &tally_core::Catalogue) -> (Vec<Offer>, Vec<Offer>) {
    let offer = |item: &str, name: &str, credits: String, price: &tally_core::Price| Offer {
        item: item.to_owned(),
        interval: price.interval.map_or("", |i| i.as_str()),
        label: format!("{name}: {}, {credits}", price.label()),
    };
    let plans = catalogue
        .plans
        .iter()
        .flat_map(|p| p.prices.iter().map(|x| offer(&p.id, &p.name, format!("{} credits a month", p.credits), x)))
        .collect();
    let packs = catalogue
        .packs
        .iter()
        .flat_map(|p| p.prices.iter().map(|x| offer(&p.id, &p.name, format!("{} credits", p.credits), x)))
        .collect();
    (plans, packs)
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    message: &'static str,
    dev_login: bool,
}

#[derive(Deserialize)]
struct PageQuery {
    success: Option<String>,
    canceled: Option<String>,
    session_id: Option<String>,
}

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
    let account = user.display_name().to_owned();
    let user = user.id;
    let mut notes = Vec::new();
    let success = query.success.as_deref() == Some("true");
    // Only a Checkout Session id goes to Stripe (and into an event id); anything else is
    // not one of ours and is ignored.
    let session_id = query.session_id.as_deref().filter(|id| tally_stripe::api::is_checkout_session_id(id));
    if let (true, Some(session_id)) = (success, session_id)
        && let Err(e) = fulfil::checkout_session(&state, &user, session_id).await
    {
        tracing::warn!(error = %e, session_id, "fulfilment on return from Checkout failed");
        notes.push("Your payment is being confirmed; this page will show it shortly.".to_owned());
    }
    if state.stripe.is_none() {
        notes.push("Stripe is not configured, so purchases are off.".to_owned());
    }
    let billing = state.store.billing(&user).await?;
    let catalogue = state.store.catalogue();
    let has_customer = state.store.stripe_customer(&user).await?.is_some();
    let mut subscription_lines = Vec::new();
    let mut subscribed = false;
    if let Some(sub) = &billing.subscription {
        subscribed = sub.is_live();
        let plan = sub.plan.as_deref().map_or("unknown plan", |p| catalogue.tier_name(p));
        subscription_lines.push(("Subscription", format!("{plan} ({})", sub.status)));
        if let Some(end) = sub.current_period_end {
            let label = if sub.cancel_at_period_end { "Ends on" } else { "Renews on" };
            subscription_lines.push((label, date(end)));
        }
        if sub.status == "past_due" {
            notes.push("Your last payment failed. Update your payment method to keep your plan.".to_owned());
        }
    }
    let (plan_offers, pack_offers) = offers(catalogue);
    let page = BillingPage {
        account,
        success,
        canceled: query.canceled.as_deref() == Some("true"),
        notes,
        tier: catalogue.tier_name(&billing.tier).to_owned(),
        credits: billing.credits,
        plan_credits: billing.plan_credits,
        topup_credits: billing.topup_credits,
        reserved_credits: billing.reserved_credits,
        subscription_lines,
        subscribed,
        has_customer,
        stripe_ready: state.stripe.is_some(),
        plan_offers,
        pack_offers,
    };
    Ok(render(StatusCode::OK, page.render()))
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
    render(status, SignInPage { message, dev_login: state.dev_login }.render())
}

/// What every page is served with: never framed (clickjacking), never cached (it shows
/// a balance), and only its own inline styles; its forms post to tally, whose answers
/// redirect to Stripe's Checkout and portal.
const PAGE_HEADERS: [(header::HeaderName, &str); 4] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CACHE_CONTROL, "no-store"),
    (header::REFERRER_POLICY, "no-referrer"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'; \
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

/// `YYYY-MM-DD` of a unix time (UTC), from the days since 1970 (Howard Hinnant's algorithm).
fn date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(super::date(0), "1970-01-01");
        assert_eq!(super::date(1_795_780_800), "2026-11-27");
        assert_eq!(super::date(951_782_400), "2000-02-29");
    }
}
