//! tally's HTTP service: configuration, shared state, routes, and errors mapped once
//! to stable answers.

mod auth;
pub mod brand;
mod clock;
pub mod config;
mod connections;
mod error;
mod extract;
mod fulfil;
mod jwks_source;
pub mod limits;
mod metrics;
mod request_log;
pub(crate) mod routes;
mod state;
pub mod sync;
pub mod waiting;

use std::net::SocketAddr;

use tokio::net::TcpListener;

pub use config::{Config, ConfigError, LogFormat};
pub use error::ApiError;
pub use state::AppState;
use tally_store::Store;

/// Connections the metrics listener holds at once: scrapers, not clients.
const METRICS_CONNECTIONS: usize = 16;

/// Where the dev-mode webhook secret is kept in the database.
pub const DEV_WEBHOOK_SECRET_KEY: &str = "dev_webhook_secret";

/// Where the key of tally's own sessions (the billing page's cookie) is kept, one for
/// every replica.
const SESSION_KEY: &str = "session_key";

/// Why an event was not recorded: it is past the input limits (CONTRACT §3), which
/// retrying cannot change, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Invalid(#[from] tally_core::input::InvalidField),
    #[error(transparent)]
    Store(#[from] tally_store::StoreError),
}

/// Checks an event read from `payload` against the input limits (ids, type, times),
/// then records and applies it: the one path of webhooks, `tally sync` and `tally
/// replay`, so that none of them stores what the limits refuse.
pub async fn ingest_parsed(
    store: &Store,
    parsed: &tally_stripe::ParsedEvent,
    payload: &str,
) -> Result<tally_store::IngestOutcome, IngestError> {
    parsed.check_limits()?;
    let event = tally_store::NewEvent {
        id: &parsed.id,
        event_type: &parsed.event_type,
        created: parsed.created,
        livemode: parsed.livemode,
        payload,
        event: parsed.event.as_ref().map_err(String::as_str),
    };
    Ok(store.ingest(event).await?)
}

/// A tally server bound to its port, ready to run.
pub struct Application {
    listener: TcpListener,
    /// TALLY_METRICS_BIND's, when `/metrics` is served apart.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    grant_clock: bool,
    max_connections: usize,
    timeouts: limits::Timeouts,
    notes: StartNotes,
}

/// What a person who has just started `tally serve` needs to know next.
struct StartNotes {
    public_url: String,
    dev_login: bool,
    api_key_set: bool,
    /// The dev webhook secret in use (none when STRIPE_WEBHOOK_SECRET is set), and
    /// where it is kept.
    dev_secret: Option<(String, String)>,
}

impl Application {
    /// Connects to the database, migrates it, settles the webhook secrets and binds.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        check_connection_cap(config.max_connections)?;
        let store = config.connect_store().await?;
        store.migrate().await?;
        warn_about_catalogue_drift(&store).await?;
        let (secrets, dev_secret) = webhook_secrets(&config, &store).await?;
        let session_secret = store.setting_or_insert(SESSION_KEY, &hex::encode(rand::random::<[u8; 32]>())).await?;
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|e| anyhow::anyhow!("TALLY_BIND: cannot listen on {}: {e}", config.bind))?;
        let metrics_listener = match config.metrics_bind {
            None => None,
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("TALLY_METRICS_BIND: cannot listen on {addr}: {e}"))?,
            ),
        };
        metrics::handle();
        let grant_clock = config.grant_clock;
        let (max_connections, timeouts) = (config.max_connections, config.timeouts);
        if config.jwks_over_plain_http() {
            tracing::warn!(
                "AUTH_JWKS_URL is plain http to another host: whoever is on the way can hand tally keys of their \
                 own and sign in as anyone; use https"
            );
        }
        let notes = StartNotes {
            public_url: config.public_url.trim_end_matches('/').to_owned(),
            dev_login: config.dev_login(),
            api_key_set: config.api_key.is_some(),
            dev_secret: dev_secret.map(|secret| (secret, database_place(&config.database_url, &config.store.schema))),
        };
        let state = AppState::new(config, store, &secrets, &session_secret);
        if state.dev_login {
            tracing::warn!(
                "DEV LOGIN IS ON: whoever reaches this server directly can sign in as any user at /dev/login. \
                 Set AUTH_JWT_SECRET or AUTH_JWKS_URL before it faces anyone"
            );
        }
        fetch_jwks(&state).await;
        Ok(Application { listener, metrics_listener, state, grant_clock, max_connections, timeouts, notes })
    }

    /// The lines `tally serve` prints once it listens: where the billing page and the
    /// dev sign-in are, what is still closed and how to open it, and where the dev
    /// webhook secret is kept. No secret of the operator's own is printed.
    pub fn start_up_notes(&self) -> Vec<String> {
        let addr = self.local_addr();
        let notes = &self.notes;
        let mut lines = vec![
            format!("tally listening on http://{addr}"),
            format!("  billing page:       {}/dashboard/billing", notes.public_url),
        ];
        if let Some(hint) = public_url_elsewhere(&notes.public_url, addr) {
            lines.push(hint);
        }
        if let Some(metrics) = self.metrics_addr() {
            lines.push(format!(
                "  metrics:            http://{metrics}/metrics  (TALLY_METRICS_BIND; not on the public port)"
            ));
        }
        if notes.dev_login {
            // Dev login is local only; the page it opens is on the same host, so its
            // cookie works.
            let host = if addr.ip().is_loopback() || addr.ip().is_unspecified() {
                "localhost".to_owned()
            } else {
                addr.ip().to_string()
            };
            lines.push(format!(
                "  dev sign-in:        http://{host}:{}/dev/login?user=alice  (dev mode: neither AUTH_JWT_SECRET nor \
                 AUTH_JWKS_URL is set; signs you in as alice and opens the billing page)",
                addr.port()
            ));
        }
        if !notes.api_key_set {
            lines.push(
                "  TALLY_API_KEY is unset, so the host-app routes (/api/users/..., /api/credits/...) are closed (401). \
                 To open them, start tally with a key:"
                    .to_owned(),
            );
            lines.push("      export TALLY_API_KEY=dev-key    # or a line TALLY_API_KEY=... in .env".to_owned());
        }
        if let Some((secret, place)) = &notes.dev_secret {
            lines.push(format!("  dev webhook secret: {secret}"));
            lines.push(format!(
                "      kept in {place} (settings key {DEV_WEBHOOK_SECRET_KEY}); `tally trigger` signs with it; \
                 set STRIPE_WEBHOOK_SECRET to use your own"
            ));
        }
        lines
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Where `/metrics` is served when TALLY_METRICS_BIND gives it a listener of its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until ctrl-c or SIGTERM, meanwhile granting what falls due with time and
    /// trying again the events that wait for another.
    pub async fn run(self) -> anyhow::Result<()> {
        let clock = self.grant_clock.then(|| tokio::spawn(clock::tick_every_minute(self.state.store.clone())));
        let waiting = self
            .grant_clock
            .then(|| tokio::spawn(waiting::sweep_every(self.state.store.clone(), waiting::SWEEP_EVERY)));
        // A scraper holds few connections; the same header and idle limits apply.
        let metrics = self.metrics_listener.map(|listener| {
            let serve = connections::serve(
                listener,
                routes::metrics_only(),
                METRICS_CONNECTIONS,
                self.timeouts,
                std::future::pending(),
            );
            tokio::spawn(serve)
        });
        let app = routes::router(self.timeouts.request, metrics.is_none()).with_state(self.state);
        connections::serve(self.listener, app, self.max_connections, self.timeouts, shutdown_signal()).await;
        for task in [clock, waiting, metrics].into_iter().flatten() {
            task.abort();
        }
        Ok(())
    }
}

/// Fetches the JWKS once at start. A failure is a warning, not a stop: HS256 tokens and
/// the host app's routes work without it, and the first ES256 or RS256 token fetches
/// again (within the once-a-minute budget).
async fn fetch_jwks(state: &AppState) {
    let Some(jwks) = state.user_tokens.jwks() else {
        return;
    };
    match jwks.refresh().await {
        Ok(set) if set.is_empty() => tracing::warn!(
            "AUTH_JWKS_URL: the JWKS holds no ES256 or RS256 key tally can use, so such tokens are refused until it does"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            error = %e,
            "AUTH_JWKS_URL: no keys at start, so ES256 and RS256 tokens are refused until a fetch succeeds \
             (tried again at most once a minute); HS256 tokens and host-app routes work"
        ),
    }
}

/// A cap the open-file limit cannot hold would run out of descriptors under load, the
/// very thing the cap is for: said at start, naming the setting.
fn check_connection_cap(max_connections: usize) -> anyhow::Result<()> {
    if let Some(limit) = limits::open_file_limit()
        && max_connections + limits::RESERVED_FDS > limit
    {
        anyhow::bail!(
            "TALLY_MAX_CONNECTIONS: {max_connections} connections and the {} descriptors tally needs itself exceed \
             the open-file limit ({limit}); lower it or raise `ulimit -n`",
            limits::RESERVED_FDS
        );
    }
    tracing::info!(max_connections, "connection cap");
    Ok(())
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
/// The second value is that dev secret, when it is the one in use.
async fn webhook_secrets(config: &Config, store: &Store) -> anyhow::Result<(Vec<String>, Option<String>)> {
    if !config.webhook_secrets.is_empty() {
        return Ok((config.webhook_secrets.clone(), None));
    }
    let fresh = format!("whsec_dev_{}", hex::encode(rand::random::<[u8; 24]>()));
    let secret = store.setting_or_insert(DEV_WEBHOOK_SECRET_KEY, &fresh).await?;
    tracing::warn!("STRIPE_WEBHOOK_SECRET is not set: using the dev secret kept in the database");
    Ok((vec![secret.clone()], Some(secret)))
}

/// A hint when TALLY_PUBLIC_URL names this machine on another port than tally listens
/// on (TALLY_BIND changed, the public URL left at its default): the page's links and
/// Stripe's return URLs would lead nowhere.
fn public_url_elsewhere(public_url: &str, addr: SocketAddr) -> Option<String> {
    let url = reqwest::Url::parse(public_url).ok()?;
    let host = url.host_str()?;
    let local = host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let port = url.port_or_known_default()?;
    (local && port != addr.port()).then(|| {
        format!(
            "      TALLY_PUBLIC_URL names port {port}, but tally listens on {}: set TALLY_PUBLIC_URL=http://localhost:{}",
            addr.port(),
            addr.port()
        )
    })
}

/// Where the database is, for a person, without the credentials a URL may carry:
/// SQLite's file, or Postgres' host, database and tally's schema.
pub fn database_place(url: &str, schema: &str) -> String {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let file = rest.trim_start_matches("//").split('?').next().unwrap_or_default();
        return format!("the SQLite file {file}");
    }
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let place = rest.split('?').next().unwrap_or_default();
    format!("the Postgres database {place}, schema {schema}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_named_without_its_credentials() {
        assert_eq!(database_place("sqlite://tally.db", "tally"), "the SQLite file tally.db");
        assert_eq!(
            database_place("sqlite:///var/lib/tally/t.db?mode=rwc", "tally"),
            "the SQLite file /var/lib/tally/t.db"
        );
        let place = database_place("postgres://tally:s3cret@db.internal:5432/app?sslmode=require", "billing");
        assert_eq!(place, "the Postgres database db.internal:5432/app, schema billing");
        assert!(!place.contains("s3cret"));
    }

    #[test]
    fn a_public_url_on_another_local_port_is_pointed_out() {
        let addr: SocketAddr = "127.0.0.1:3999".parse().unwrap();
        assert!(
            public_url_elsewhere("http://localhost:3000", addr)
                .unwrap()
                .contains("TALLY_PUBLIC_URL=http://localhost:3999")
        );
        assert_eq!(public_url_elsewhere("http://localhost:3999", addr), None);
        assert_eq!(
            public_url_elsewhere("https://billing.example.com", addr),
            None,
            "behind a proxy: not ours to judge"
        );
    }
}
