//! What every handler shares.

use std::sync::Arc;

use axum::body::Bytes;

use tally_auth::{Jwks, Sessions, UserTokens};
use tally_store::Store;
use tally_stripe::{StripeClient, Verifier};

use crate::Config;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub verifier: Arc<Verifier>,
    pub api_key: Option<Arc<str>>,
    /// `None` without STRIPE_SECRET_KEY: checkout and portal answer 503.
    pub stripe: Option<StripeClient>,
    /// The host app's user tokens (Bearer): HS256 and/or the JWKS's ES256 and RS256.
    pub user_tokens: UserTokens,
    /// tally's own sessions (the billing page's cookie).
    pub sessions: Sessions,
    /// `/dev/login` works: neither AUTH_JWT_SECRET nor AUTH_JWKS_URL, a loopback bind and
    /// no live key.
    pub dev_login: bool,
    pub public_url: Arc<str>,
    pub allow_promotion_codes: bool,
    /// The host app's name, link and colour on the billing page.
    pub brand: Arc<crate::brand::Brand>,
    /// `GET /api/catalogue` and `GET /openapi.json`, made once: the catalogue is fixed for
    /// the life of the process.
    pub catalogue_json: Bytes,
    pub openapi_json: Bytes,
}

impl AppState {
    pub fn new(config: Config, store: Store, webhook_secrets: &[String], session_secret: &str) -> AppState {
        let stripe = config
            .stripe_secret_key
            .as_deref()
            .map(|key| StripeClient::new(&config.stripe_api_base, key, config.stripe_client.clone()));
        let catalogue_json = Bytes::from(serde_json::to_vec(&store.catalogue().offered()).expect("JSON"));
        let openapi = crate::routes::openapi::document_for(store.catalogue());
        let openapi_json = Bytes::from(serde_json::to_vec(&openapi).expect("JSON"));
        let mut user_tokens = UserTokens::new(&config.token_settings());
        if let Some(url) = &config.jwks_url {
            let source = crate::jwks_source::HttpKeySource::new(url.clone());
            user_tokens = user_tokens.with_jwks(Arc::new(Jwks::new(source, config.jwks_timings)));
        }
        AppState {
            catalogue_json,
            openapi_json,
            store,
            dev_login: config.dev_login(),
            verifier: Arc::new(Verifier::new(webhook_secrets)),
            user_tokens,
            api_key: config.api_key.map(Arc::from),
            stripe,
            sessions: Sessions::new(session_secret),
            public_url: Arc::from(config.public_url.as_str()),
            allow_promotion_codes: config.allow_promotion_codes,
            brand: Arc::new(config.brand.clone()),
        }
    }

    /// Whether cookies must be Secure: the public URL is https.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}
