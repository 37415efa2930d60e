//! tally's HTTP service: configuration, shared state, routes, and errors mapped once
//! to stable answers.

mod auth;
mod clock;
pub mod config;
mod error;
mod extract;
mod fulfil;
mod metrics;
pub(crate) mod routes;
pub mod session;
mod state;
pub mod sync;

use std::net::SocketAddr;

use tokio::net::TcpListener;

pub use config::{Config, ConfigError};
pub use error::ApiError;
pub use state::AppState;
use tally_store::Store;

/// Where the dev-mode webhook secret is kept in the database.
pub const DEV_WEBHOOK_SECRET_KEY: &str = "dev_webhook_secret";

/// Where the secret of dev-mode sessions is kept (without AUTH_JWT_SECRET).
const DEV_SESSION_SECRET_KEY: &str = "dev_session_secret";

/// Records and applies an event read from `payload`: the one path of webhooks, `tally
/// sync` and `tally replay`.
pub async fn ingest_parsed(
    store: &Store,
    parsed: &tally_stripe::ParsedEvent,
    payload: &str,
) -> Result<tally_store::IngestOutcome, tally_store::StoreError> {
    let event = tally_store::NewEvent {
        id: &parsed.id,
        event_type: &parsed.event_type,
        created: parsed.created,
        livemode: parsed.livemode,
        payload,
        event: parsed.event.as_ref().map_err(String::as_str),
    };
    store.ingest(event).await
}

/// A tally server bound to its port, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    grant_clock: bool,
}

impl Application {
    /// Connects to the database, migrates it, settles the webhook secrets and binds.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let store = config.connect_store().await?;
        store.migrate().await?;
        warn_about_catalogue_drift(&store).await?;
        let secrets = webhook_secrets(&config, &store).await?;
        let session_secret = match &config.jwt_secret {
            Some(secret) => secret.clone(),
            None => {
                let fresh = hex::encode(rand::random::<[u8; 32]>());
                store.setting_or_insert(DEV_SESSION_SECRET_KEY, &fresh).await?
            }
        };
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|e| anyhow::anyhow!("TALLY_BIND: cannot listen on {}: {e}", config.bind))?;
        metrics::handle();
        let grant_clock = config.grant_clock;
        let state = AppState::new(config, store, &secrets, &session_secret);
        Ok(Application { listener, state, grant_clock })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until ctrl-c or SIGTERM, granting what falls due with time meanwhile.
    pub async fn run(self) -> anyhow::Result<()> {
        let clock = self.grant_clock.then(|| tokio::spawn(clock::tick_every_minute(self.state.store.clone())));
        let app = routes::router().with_state(self.state);
        let served = axum::serve(self.listener, app).with_graceful_shutdown(shutdown_signal()).await;
        if let Some(clock) = clock {
            clock.abort();
        }
        Ok(served?)
    }
}

/// Says at start what the catalogue no longer sells but the database still holds:
/// subscriptions on prices it does not name, and tiers it does not have. Nothing is
/// guessed about them; `tally audit` lists them too.
async fn warn_about_catalogue_drift(store: &Store) -> anyhow::Result<()> {
    let drift = store.catalogue_drift().await?;
    if !drift.unknown_prices.is_empty() {
        let prices: Vec<&str> = drift.unknown_prices.iter().map(|(p, _)| p.as_str()).collect();
        let count: i64 = drift.unknown_prices.iter().map(|(_, n)| n).sum();
        tracing::warn!(
            count,
            prices = prices.join(","),
            "{count} live subscriptions are on prices the catalogue does not name ({}); add them to a plan's legacy_prices to keep granting them",
            prices.join(", ")
        );
    }
    if !drift.unknown_tiers.is_empty() {
        let tiers: Vec<&str> = drift.unknown_tiers.iter().map(|(t, _)| t.as_str()).collect();
        tracing::warn!(
            tiers = tiers.join(","),
            "accounts hold tiers the catalogue does not have: {}",
            tiers.join(", ")
        );
    }
    Ok(())
}

/// The configured webhook secrets; without any (and without a live key), one made
/// once and kept in the database, so `tally trigger` and `stripe listen` work at once.
async fn webhook_secrets(config: &Config, store: &Store) -> anyhow::Result<Vec<String>> {
    if !config.webhook_secrets.is_empty() {
        return Ok(config.webhook_secrets.clone());
    }
    let fresh = format!("whsec_dev_{}", hex::encode(rand::random::<[u8; 24]>()));
    let secret = store.setting_or_insert(DEV_WEBHOOK_SECRET_KEY, &fresh).await?;
    tracing::warn!("STRIPE_WEBHOOK_SECRET is not set: using the dev secret kept in the database");
    println!("dev webhook secret: {secret}");
    Ok(vec![secret])
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
}
