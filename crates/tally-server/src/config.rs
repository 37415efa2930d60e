//! Configuration from the environment (or a `.env` file), with CONTRACT §2's names.
//! A missing or malformed setting is one line naming the variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tally_core::Catalogue;
use tally_core::catalogue::defaults;
use tally_stripe::ClientOptions;

use crate::brand::{Brand, Color};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    /// `TALLY_DB_SCHEMA` and `TALLY_SYNC_PROFILES` (Postgres).
    pub store: tally_store::StoreOptions,
    pub stripe_secret_key: Option<String>,
    /// Several during a rotation; empty means "use the dev secret".
    pub webhook_secrets: Vec<String>,
    pub catalogue: Catalogue,
    /// The catalogue file, when there is one (`tally stripe-setup` writes price ids into it).
    pub catalogue_path: Option<PathBuf>,
    pub bind: SocketAddr,
    pub public_url: String,
    pub api_key: Option<String>,
    /// `AUTH_JWT_SECRET`: the HS256 secret of the host app's user tokens.
    pub jwt_secret: Option<String>,
    /// `AUTH_JWKS_URL`: where the ES256 and RS256 keys of the host app's user tokens are
    /// published.
    pub jwks_url: Option<reqwest::Url>,
    /// How often that document may be fetched (tests shorten it).
    pub jwks_timings: tally_auth::JwksTimings,
    /// `AUTH_JWT_AUDIENCE`: the `aud` a user token must carry.
    pub jwt_audience: String,
    /// `AUTH_JWT_ISSUER`: the `iss` a user token must carry, when set.
    pub jwt_issuer: Option<String>,
    /// `TALLY_DEV_LOGIN=1`: dev login also on a bind that is not loopback (a container).
    pub dev_login_anywhere: bool,
    pub stripe_api_base: String,
    /// Offer promotion codes on the Checkout page.
    pub allow_promotion_codes: bool,
    /// Timeouts and retries of Stripe API calls (tests shorten them).
    pub stripe_client: ClientOptions,
    /// Grant what falls due with time once a minute, and try the events that wait for
    /// another every few seconds (tests turn it off and drive `Store::grant_due` and
    /// `waiting::retry_waiting` with a clock of their own).
    pub grant_clock: bool,
    /// `TALLY_MAX_CONNECTIONS`: open connections at most; past it, 503.
    pub max_connections: usize,
    /// How long a client may take (tests shorten them).
    pub timeouts: crate::limits::Timeouts,
    /// `TALLY_LOG_FORMAT`: lines for a person, or JSON for a log shipper.
    pub log_format: LogFormat,
    /// `TALLY_METRICS_BIND`: `/metrics` on a listener of its own (and not on the
    /// public one), so that it can stay on a private interface.
    pub metrics_bind: Option<SocketAddr>,
    /// `TALLY_APP_NAME`, `TALLY_APP_URL`, `TALLY_BRAND_COLOR`: the billing page's look.
    pub brand: Brand,
}

/// How log lines are written (`TALLY_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// Connects to the configured database, with the configured catalogue.
    pub async fn connect_store(&self) -> Result<tally_store::Store, tally_store::StoreError> {
        let catalogue = std::sync::Arc::new(self.catalogue.clone());
        tally_store::Store::connect_with(&self.database_url, catalogue, &self.store).await
    }

    /// What the host app's user tokens must be.
    pub fn token_settings(&self) -> tally_auth::TokenSettings {
        tally_auth::TokenSettings {
            hs256_secret: self.jwt_secret.clone(),
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
        }
    }

    /// Whether `/dev/login` works: no way to check user tokens (neither AUTH_JWT_SECRET
    /// nor AUTH_JWKS_URL), a loopback bind (or TALLY_DEV_LOGIN=1) and no live key.
    pub fn dev_login(&self) -> bool {
        self.jwt_secret.is_none()
            && self.jwks_url.is_none()
            && (self.bind.ip().is_loopback() || self.dev_login_anywhere)
            && !self.live()
    }

    /// Whether the JWKS is fetched without TLS from another machine, where anyone on the
    /// way could hand tally keys of their own (said at start).
    pub fn jwks_over_plain_http(&self) -> bool {
        self.jwks_url.as_ref().is_some_and(|url| {
            let host = url.host_str().unwrap_or_default();
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            url.scheme() == "http" && !loopback
        })
    }

    /// Whether the Stripe key is a live one (real money).
    pub fn live(&self) -> bool {
        self.stripe_secret_key.as_deref().is_some_and(is_live_key)
    }

    /// Reads the process environment, after loading `.env` from the working directory.
    pub fn from_env() -> Result<Config, ConfigError> {
        if let Err(e) = dotenvy::dotenv()
            && !e.not_found()
        {
            return Err(ConfigError { name: ".env", problem: e.to_string() });
        }
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`; an empty value counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let invalid = |name: &'static str, problem: String| ConfigError { name, problem };

        let database_url = get("DATABASE_URL").unwrap_or_else(|| "sqlite://tally.db".into());
        if !["postgres://", "postgresql://", "sqlite:"].iter().any(|p| database_url.starts_with(p)) {
            return Err(invalid(
                "DATABASE_URL",
                format!("expected postgres://... or sqlite://..., got {database_url:?}"),
            ));
        }

        let on_postgres = !database_url.starts_with("sqlite:");
        let schema = get("TALLY_DB_SCHEMA").unwrap_or_else(|| tally_store::postgres::DEFAULT_SCHEMA.to_owned());
        tally_store::postgres::check_identifier(&schema).map_err(|e| invalid("TALLY_DB_SCHEMA", e))?;
        let sync_profiles = get("TALLY_SYNC_PROFILES");
        if let Some(table) = &sync_profiles {
            let (table_schema, _) =
                tally_store::profiles::parse_table_name(table).map_err(|e| invalid("TALLY_SYNC_PROFILES", e))?;
            if !on_postgres {
                return Err(invalid("TALLY_SYNC_PROFILES", "needs a Postgres DATABASE_URL (the app's table)".into()));
            }
            if table_schema == schema {
                return Err(invalid(
                    "TALLY_SYNC_PROFILES",
                    format!("{table} is in tally's own schema {schema:?}; name the app's table"),
                ));
            }
        }

        let stripe_secret_key = get("STRIPE_SECRET_KEY");
        if let Some(key) = &stripe_secret_key
            && !(key.starts_with("sk_") || key.starts_with("rk_"))
        {
            return Err(invalid("STRIPE_SECRET_KEY", "expected a key starting with sk_ or rk_".into()));
        }

        let webhook_secrets: Vec<String> = match get("STRIPE_WEBHOOK_SECRET") {
            None => Vec::new(),
            Some(list) => {
                let secrets: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
                if secrets.iter().any(String::is_empty) {
                    return Err(invalid(
                        "STRIPE_WEBHOOK_SECRET",
                        "an entry of the comma-separated list is empty".into(),
                    ));
                }
                secrets
            }
        };
        if webhook_secrets.is_empty() && stripe_secret_key.as_deref().is_some_and(is_live_key) {
            return Err(invalid("STRIPE_WEBHOOK_SECRET", "required with a live STRIPE_SECRET_KEY".into()));
        }

        let catalogue_path = match get("TALLY_CONFIG") {
            Some(path) => Some(PathBuf::from(path)),
            None => Some(PathBuf::from(DEFAULT_CATALOGUE)).filter(|p| p.exists()),
        };
        let catalogue = match &catalogue_path {
            Some(path) => {
                if let Some(name) = PRICE_VARS.iter().find(|name| get(name).is_some()) {
                    return Err(invalid(
                        name,
                        format!("must not be set with a catalogue file ({}): its prices are there", path.display()),
                    ));
                }
                read_catalogue(path)?
            }
            None => {
                let mut ids = Vec::new();
                for (name, item) in PRICE_VARS.iter().zip([defaults::PRO, defaults::ENTERPRISE, defaults::TOPUP]) {
                    // Offline, placeholder prices let `tally trigger` tell the plans apart.
                    let id = get(name).or_else(|| stripe_secret_key.is_none().then(|| dev_price_id(item)));
                    if let Some(id) = &id
                        && id.contains(char::is_whitespace)
                    {
                        return Err(invalid(name, format!("a price id has no spaces, got {id:?}")));
                    }
                    ids.push(id);
                }
                let [pro, enterprise, topup]: [Option<String>; 3] = ids.try_into().expect("three price variables");
                Catalogue::default_with(pro, enterprise, topup)
            }
        };

        let bind_text = get("TALLY_BIND").unwrap_or_else(|| "127.0.0.1:3000".into());
        let bind = bind_text.parse::<SocketAddr>().map_err(|_| {
            invalid("TALLY_BIND", format!("expected host:port such as 127.0.0.1:3000, got {bind_text:?}"))
        })?;

        let public_url = get("TALLY_PUBLIC_URL").unwrap_or_else(|| "http://localhost:3000".into());
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(invalid("TALLY_PUBLIC_URL", format!("expected an http(s):// URL, got {public_url:?}")));
        }

        let stripe_api_base = get("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".into());
        if !(stripe_api_base.starts_with("http://") || stripe_api_base.starts_with("https://")) {
            return Err(invalid("STRIPE_API_BASE", format!("expected an http(s):// URL, got {stripe_api_base:?}")));
        }

        // Set but blank is a mistake, not dev mode (which would let anyone sign in locally).
        let jwt_secret = match lookup("AUTH_JWT_SECRET") {
            None => None,
            Some(secret) if secret.trim().is_empty() => {
                return Err(invalid("AUTH_JWT_SECRET", "is set but blank; unset it for dev mode".into()));
            }
            Some(secret) if secret.len() < 32 => {
                return Err(invalid("AUTH_JWT_SECRET", format!("at least 32 bytes for HS256, got {}", secret.len())));
            }
            Some(secret) => Some(secret),
        };
        let jwks_url = match lookup("AUTH_JWKS_URL") {
            None => None,
            Some(url) if url.trim().is_empty() => {
                return Err(invalid("AUTH_JWKS_URL", "is set but blank; unset it for dev mode".into()));
            }
            Some(url) => Some(jwks_url(url.trim()).map_err(|problem| invalid("AUTH_JWKS_URL", problem))?),
        };
        let dev_login_anywhere = match get("TALLY_DEV_LOGIN").as_deref() {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => return Err(invalid("TALLY_DEV_LOGIN", format!("expected 1 or 0, got {other:?}"))),
        };

        let allow_promotion_codes = match get("TALLY_ALLOW_PROMOTION_CODES").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(invalid("TALLY_ALLOW_PROMOTION_CODES", format!("expected true or false, got {other:?}")));
            }
        };

        let max_connections = match get("TALLY_MAX_CONNECTIONS") {
            None => crate::limits::default_max_connections(),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return Err(invalid("TALLY_MAX_CONNECTIONS", format!("expected a positive number, got {text:?}"))),
            },
        };

        let log_format = match get("TALLY_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(invalid("TALLY_LOG_FORMAT", format!("expected text or json, got {other:?}"))),
        };
        let metrics_bind = match get("TALLY_METRICS_BIND") {
            None => None,
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(addr) if addr == bind => {
                    return Err(invalid(
                        "TALLY_METRICS_BIND",
                        format!("{addr} is TALLY_BIND itself; name another port"),
                    ));
                }
                Ok(addr) => Some(addr),
                Err(_) => {
                    return Err(invalid(
                        "TALLY_METRICS_BIND",
                        format!("expected host:port such as 127.0.0.1:9090, got {text:?}"),
                    ));
                }
            },
        };

        let app_name = get("TALLY_APP_NAME");
        if let Some(name) = &app_name
            && (name.chars().count() > 60 || name.chars().any(char::is_control))
        {
            return Err(invalid("TALLY_APP_NAME", "at most 60 characters on one line".into()));
        }
        let app_url = match get("TALLY_APP_URL") {
            None => None,
            Some(url) => Some(app_url(&url).map_err(|problem| invalid("TALLY_APP_URL", problem))?),
        };
        let color = match get("TALLY_BRAND_COLOR") {
            None => Color::DEFAULT,
            Some(text) => Color::parse(&text).map_err(|problem| invalid("TALLY_BRAND_COLOR", problem))?,
        };

        Ok(Config {
            database_url,
            store: tally_store::StoreOptions { schema, sync_profiles },
            stripe_secret_key,
            webhook_secrets,
            catalogue,
            catalogue_path,
            bind,
            public_url: public_url.trim_end_matches('/').to_owned(),
            api_key: get("TALLY_API_KEY"),
            jwt_secret,
            jwks_url,
            jwks_timings: tally_auth::JwksTimings::default(),
            jwt_audience: get("AUTH_JWT_AUDIENCE").unwrap_or_else(|| tally_auth::DEFAULT_AUDIENCE.to_owned()),
            jwt_issuer: get("AUTH_JWT_ISSUER"),
            dev_login_anywhere,
            stripe_api_base: stripe_api_base.trim_end_matches('/').to_owned(),
            allow_promotion_codes,
            stripe_client: ClientOptions::default(),
            grant_clock: true,
            max_connections,
            timeouts: crate::limits::Timeouts::default(),
            log_format,
            metrics_bind,
            brand: Brand { app_name, app_url, color },
        })
    }
}

/// The catalogue file read when TALLY_CONFIG is not set, if it exists.
pub const DEFAULT_CATALOGUE: &str = "tally.toml";

/// The default catalogue's price variables (the guide's names); not allowed beside a file.
const PRICE_VARS: [&str; 3] = ["STRIPE_PRO_PRICE_ID", "STRIPE_ENTERPRISE_PRICE_ID", "STRIPE_TOPUP_PRICE_ID"];

/// The price id used for a default item when none is configured and there is no key.
pub fn dev_price_id(item: &str) -> String {
    format!("price_tally_{item}")
}

/// Reads and checks the catalogue file; an error names the file, the line and the key.
pub fn read_catalogue(path: &Path) -> Result<Catalogue, ConfigError> {
    let invalid = |problem: String| ConfigError { name: "TALLY_CONFIG", problem };
    let text = std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    Catalogue::from_toml(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
}

/// `AUTH_JWKS_URL`: an absolute http(s) URL with a host and no credentials (a JWKS is
/// public; a password in the URL would only end up in logs).
fn jwks_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("expected an http(s):// URL, got {text:?} ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("expected an http(s):// URL, got {text:?}"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("the URL names no host: {text:?}"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a JWKS is public: the URL takes no user name or password".into());
    }
    Ok(url)
}

/// `TALLY_APP_URL`: an absolute http(s) URL with a host, as the page's link back shows it.
fn app_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("expected an http(s):// URL, got {text:?} ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("expected an http(s):// URL with a host, got {text:?}"));
    }
    Ok(text.to_owned())
}

fn is_live_key(key: &str) -> bool {
    key.starts_with("sk_live_") || key.starts_with("rk_live_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn no_settings_at_all_run_on_embedded_sqlite() {
        let c = config(&[]).unwrap();
        assert_eq!(c.database_url, "sqlite://tally.db");
        assert_eq!(c.bind.to_string(), "127.0.0.1:3000");
        assert_eq!(c.public_url, "http://localhost:3000");
        assert!(c.webhook_secrets.is_empty());
    }

    #[test]
    fn webhook_secrets_are_a_comma_separated_list() {
        let c = config(&[("STRIPE_WEBHOOK_SECRET", "whsec_a, whsec_b")]).unwrap();
        assert_eq!(c.webhook_secrets, ["whsec_a", "whsec_b"]);
        assert_eq!(config(&[("STRIPE_WEBHOOK_SECRET", "whsec_a,,")]).unwrap_err().name, "STRIPE_WEBHOOK_SECRET");
    }

    #[test]
    fn malformed_settings_name_their_variable() {
        for (name, value) in [
            ("TALLY_BIND", "localhost"),
            ("DATABASE_URL", "mysql://x"),
            ("STRIPE_SECRET_KEY", "pk_test_123"),
            ("TALLY_PUBLIC_URL", "example.com"),
            ("STRIPE_PRO_PRICE_ID", "price 1"),
            ("TALLY_MAX_CONNECTIONS", "0"),
            ("TALLY_MAX_CONNECTIONS", "many"),
            ("TALLY_DB_SCHEMA", "Tally"),
            ("TALLY_DB_SCHEMA", "tally; drop schema public"),
            ("TALLY_SYNC_PROFILES", "public.profiles"),
            ("TALLY_LOG_FORMAT", "yaml"),
            ("TALLY_METRICS_BIND", "9090"),
            ("TALLY_METRICS_BIND", "127.0.0.1:3000"),
            ("TALLY_APP_URL", "example.com"),
            ("TALLY_APP_URL", "javascript:alert(1)"),
            ("TALLY_APP_URL", "ftp://example.com/"),
            ("TALLY_BRAND_COLOR", "blue"),
            ("TALLY_BRAND_COLOR", "#12345"),
            ("TALLY_APP_NAME", "two\nlines"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert_eq!(err.name, name);
            assert!(err.to_string().starts_with(name), "{err}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn a_blank_or_short_jwt_secret_is_an_error_not_dev_mode() {
        for secret in ["  ", "", "short-secret"] {
            assert_eq!(config(&[("AUTH_JWT_SECRET", secret)]).unwrap_err().name, "AUTH_JWT_SECRET", "{secret:?}");
        }
        let long = "s".repeat(32);
        assert_eq!(config(&[("AUTH_JWT_SECRET", long.as_str())]).unwrap().jwt_secret.as_deref(), Some(long.as_str()));
        assert!(config(&[]).unwrap().jwt_secret.is_none(), "unset: dev mode");
    }

    #[test]
    fn tables_live_in_their_own_schema_and_profiles_sync_is_postgres_only() {
        let postgres = ("DATABASE_URL", "postgres://db/app");
        assert_eq!(config(&[postgres]).unwrap().store.schema, "tally");
        assert_eq!(config(&[postgres, ("TALLY_DB_SCHEMA", "billing")]).unwrap().store.schema, "billing");
        let synced = config(&[postgres, ("TALLY_SYNC_PROFILES", "public.profiles")]).unwrap();
        assert_eq!(synced.store.sync_profiles.as_deref(), Some("public.profiles"));
        for table in ["tally.profiles", "public.profiles;--", "a.b.c"] {
            let err = config(&[postgres, ("TALLY_SYNC_PROFILES", table)]).unwrap_err();
            assert_eq!(err.name, "TALLY_SYNC_PROFILES", "{table}");
        }
    }

    #[test]
    fn the_jwks_url_is_an_http_url_and_blank_is_an_error() {
        let supabase = "https://abcdefghijklmnop.supabase.co/auth/v1/.well-known/jwks.json";
        let c = config(&[("AUTH_JWKS_URL", supabase)]).unwrap();
        assert_eq!(c.jwks_url.as_ref().map(|u| u.as_str()), Some(supabase));
        assert!(!c.jwks_over_plain_http());
        for bad in [
            "",
            "   ",
            "jwks.json",
            "abcdefghijklmnop.supabase.co/auth/v1",
            "ftp://example.com/jwks.json",
            "file:///etc/jwks.json",
            "https://",
            "http://user:pw@example.com/jwks.json",
            "https://exa mple.com/",
        ] {
            let err = config(&[("AUTH_JWKS_URL", bad)]).unwrap_err();
            assert_eq!(err.name, "AUTH_JWKS_URL", "{bad:?}");
            assert!(err.to_string().starts_with("AUTH_JWKS_URL: ") && !err.to_string().contains('\n'), "{err}");
        }
        let plain = |url: &str| config(&[("AUTH_JWKS_URL", url)]).unwrap().jwks_over_plain_http();
        assert!(plain("http://auth.example.com/jwks.json"));
        assert!(!plain("http://127.0.0.1:9999/jwks.json"));
        assert!(!plain("http://localhost:54321/auth/v1/.well-known/jwks.json"));
        assert!(!plain("http://[::1]:9999/jwks.json"));
    }

    #[test]
    fn dev_login_is_on_only_with_neither_a_secret_nor_a_jwks_url() {
        assert!(config(&[]).unwrap().dev_login());
        assert!(
            !config(&[("AUTH_JWKS_URL", "https://x.supabase.co/auth/v1/.well-known/jwks.json")]).unwrap().dev_login()
        );
        assert!(!config(&[("AUTH_JWT_SECRET", &"s".repeat(32))]).unwrap().dev_login());
        assert!(!config(&[("TALLY_BIND", "0.0.0.0:3000")]).unwrap().dev_login());
        assert!(config(&[("TALLY_BIND", "0.0.0.0:3000"), ("TALLY_DEV_LOGIN", "1")]).unwrap().dev_login());
        assert!(
            !config(&[("STRIPE_SECRET_KEY", "sk_live_x"), ("STRIPE_WEBHOOK_SECRET", "whsec_x")]).unwrap().dev_login()
        );
    }

    #[test]
    fn the_page_takes_the_host_apps_name_link_and_colour() {
        let c = config(&[
            ("TALLY_APP_NAME", "Acme Notes"),
            ("TALLY_APP_URL", "https://notes.example.com/app"),
            ("TALLY_BRAND_COLOR", "#0a7"),
        ])
        .unwrap();
        assert_eq!(c.brand.app_name.as_deref(), Some("Acme Notes"));
        assert_eq!(c.brand.app_url.as_deref(), Some("https://notes.example.com/app"));
        assert_eq!(c.brand.color.css(), "#00aa77");
        assert_eq!(config(&[]).unwrap().brand, Brand::default());
    }

    #[test]
    fn a_live_key_requires_a_webhook_secret() {
        let err = config(&[("STRIPE_SECRET_KEY", "sk_live_abc")]).unwrap_err();
        assert_eq!(err.name, "STRIPE_WEBHOOK_SECRET");
        assert!(config(&[("STRIPE_SECRET_KEY", "sk_test_abc")]).is_ok());
    }
}
