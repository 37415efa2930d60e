//! `tally doctor [--json]`: the integration guide's troubleshooting list, made checks.
//! One line per check (ok, warning or error) with its fix in plain words; exit 1 on any
//! error. Read-only: it never migrates, writes or creates anything in Stripe, and never
//! prints a secret (at most a key's `sk_test_` prefix).

use anyhow::bail;
use serde_json::json;
use tally_core::Catalogue;
use tally_server::{Config, ConfigError};
use tally_store::{Readiness, Store};
use tally_stripe::StripeClient;
use tally_stripe::inspect::{self, PortalConfiguration, WebhookEndpoint};

#[derive(clap::Args)]
pub struct Args {
    /// Print `{"ok", "checks": [{"name", "status", "message", "fix"}]}` instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Ok,
    Warning,
    Error,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Error => "error",
        }
    }
}

/// One finding; `name` is stable (snake_case), for scripts reading `--json`.
struct Check {
    name: &'static str,
    status: Status,
    message: String,
    fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, message: impl Into<String>) -> Check {
        Check { name, status: Status::Ok, message: message.into(), fix: None }
    }

    fn warning(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, status: Status::Warning, message: message.into(), fix: Some(fix.into()) }
    }

    fn error(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, status: Status::Error, message: message.into(), fix: Some(fix.into()) }
    }
}

/// Runs every check that the configuration allows; `config` is what reading it gave,
/// so that a mistake there is a line of the report rather than the only output.
pub async fn run(args: Args, config: Result<Config, ConfigError>) -> anyhow::Result<()> {
    let checks = match config {
        Ok(config) => checks(&config).await,
        Err(e) => vec![config_error(&e)],
    };
    report(&checks, args.json)?;
    let errors = checks.iter().filter(|c| c.status == Status::Error).count();
    if errors > 0 {
        bail!("{errors} check(s) failed");
    }
    Ok(())
}

fn report(checks: &[Check], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let list: Vec<_> = checks
            .iter()
            .map(|c| json!({"name": c.name, "status": c.status.as_str(), "message": c.message, "fix": c.fix}))
            .collect();
        let ok = checks.iter().all(|c| c.status != Status::Error);
        println!("{}", serde_json::to_string_pretty(&json!({"ok": ok, "checks": list}))?);
        return Ok(());
    }
    for check in checks {
        let mut line = format!("{:<7} {}: {}", check.status.as_str(), check.name, check.message);
        if let Some(fix) = &check.fix {
            line += &format!("; fix: {fix}");
        }
        println!("{line}");
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    println!("{} ok, {} warning(s), {} error(s)", count(Status::Ok), count(Status::Warning), count(Status::Error));
    Ok(())
}

fn config_error(e: &ConfigError) -> Check {
    let fix = format!("set {} as the message says (README, Configuration), then run `tally doctor` again", e.name);
    let name = if e.name == "TALLY_CONFIG" { "catalogue" } else { "config" };
    Check::error(name, e.to_string(), fix)
}

async fn checks(config: &Config) -> Vec<Check> {
    let mut checks = vec![Check::ok("config", "the settings parse"), catalogue(config)];
    checks.push(public_url(config));
    checks.push(webhook_secrets(config));
    let store = database(config, &mut checks).await;
    if let Some(store) = &store {
        records(store, &mut checks).await;
    }
    match &config.stripe_secret_key {
        Some(key) => {
            let client = StripeClient::new(&config.stripe_api_base, key, config.stripe_client.clone());
            stripe(config, &client, key, &mut checks).await;
        }
        None => checks.push(Check::warning(
            "stripe_key",
            "STRIPE_SECRET_KEY is not set: checkout and the portal answer 503, and the Stripe checks are skipped",
            "set STRIPE_SECRET_KEY to a secret key (Dashboard > Developers > API keys; sk_test_ while you try it)",
        )),
    }
    if let Some(store) = store {
        store.close().await;
    }
    checks
}

fn catalogue(config: &Config) -> Check {
    let source = match &config.catalogue_path {
        Some(path) => path.display().to_string(),
        None => "the default catalogue".to_owned(),
    };
    let c = &config.catalogue;
    let missing: Vec<String> = offered_prices(c)
        .filter(|(_, price)| price.id.is_none())
        .map(|(item, price)| format!("{item} {}", price.label()))
        .collect();
    if !missing.is_empty() {
        let fix = if config.catalogue_path.is_some() {
            "run `tally stripe-setup` to create the prices and write their ids into the file"
        } else {
            "run `tally stripe-setup` and set the STRIPE_*_PRICE_ID lines it prints"
        };
        return Check::error("catalogue", format!("{source}: no Stripe price id for {}", missing.join(", ")), fix);
    }
    let prices = offered_prices(c).count();
    Check::ok(
        "catalogue",
        format!("{source}: {} plan(s), {} pack(s), {prices} price(s) on offer", c.plans.len(), c.packs.len()),
    )
}

/// Every price on offer, with its item's id.
fn offered_prices(c: &Catalogue) -> impl Iterator<Item = (&str, &tally_core::Price)> {
    let plans = c.plans.iter().flat_map(|p| p.prices.iter().map(move |price| (p.id.as_str(), price)));
    let packs = c.packs.iter().flat_map(|p| p.prices.iter().map(move |price| (p.id.as_str(), price)));
    plans.chain(packs)
}

fn public_url(config: &Config) -> Check {
    let url = &config.public_url;
    if config.live() && !url.starts_with("https://") {
        return Check::error(
            "public_url",
            format!(
                "TALLY_PUBLIC_URL is {url} with a live Stripe key: checkout and portal links and the billing \
                     page's cookie need https"
            ),
            "serve tally behind TLS and set TALLY_PUBLIC_URL to its https:// address",
        );
    }
    Check::ok("public_url", format!("TALLY_PUBLIC_URL is {url}"))
}

/// `whsec_` and then the secret's letters and digits.
fn whsec_shaped(secret: &str) -> bool {
    secret
        .strip_prefix("whsec_")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=_".contains(&b)))
}

fn webhook_secrets(config: &Config) -> Check {
    let secrets = &config.webhook_secrets;
    if secrets.is_empty() {
        return Check::warning(
            "webhook_secret",
            "STRIPE_WEBHOOK_SECRET is not set: webhooks are checked with the dev secret kept in the database \
             (fine for `tally trigger`, not for production)",
            "set STRIPE_WEBHOOK_SECRET to the signing secret (whsec_...) of the Stripe endpoint, or of `stripe listen`",
        );
    }
    let bad: Vec<String> = secrets
        .iter()
        .enumerate()
        .filter(|(_, s)| !whsec_shaped(s))
        .map(|(i, s)| format!("entry {} ({} characters)", i + 1, s.chars().count()))
        .collect();
    if !bad.is_empty() {
        return Check::error(
            "webhook_secret",
            format!(
                "STRIPE_WEBHOOK_SECRET: {} of its {} entries lack the whsec_ shape: {}",
                bad.len(),
                secrets.len(),
                bad.join(", ")
            ),
            "copy the endpoint's signing secret (whsec_..., Dashboard > Developers > Webhooks > the endpoint), \
             not an API key; several are comma-separated",
        );
    }
    Check::ok("webhook_secret", format!("{} secret(s), each whsec_...", secrets.len()))
}

/// Whether the database answers and holds every migration; the store, when it does.
async fn database(config: &Config, checks: &mut Vec<Check>) -> Option<Store> {
    let place = tally_server::database_place(&config.database_url, &config.store.schema);
    // Connecting to SQLite creates a missing file: say so instead, and create nothing.
    if let Some(rest) = config.database_url.strip_prefix("sqlite:") {
        let file = rest.trim_start_matches("//").split('?').next().unwrap_or_default();
        if !file.is_empty() && !file.contains(":memory:") && !std::path::Path::new(file).exists() {
            checks.push(Check::error(
                "database",
                format!("{place} does not exist yet"),
                "run `tally migrate` (or `tally serve`, which migrates first) where DATABASE_URL points",
            ));
            return None;
        }
    }
    let store = match config.connect_store().await {
        Ok(store) => store,
        Err(e) => {
            checks.push(Check::error(
                "database",
                format!("cannot reach {place}: {e}"),
                "check DATABASE_URL and that the database server is running and reachable from here",
            ));
            return None;
        }
    };
    match store.ready().await {
        Ok(Readiness::Ready) => {
            checks.push(Check::ok("database", format!("{place} answers and is migrated")));
            Some(store)
        }
        Ok(Readiness::NotMigrated { expected, found }) => {
            let found = found.map_or("none".to_owned(), |v| v.to_string());
            checks.push(Check::error(
                "database",
                format!("{place} is not migrated: it lacks migration {expected} (newest applied: {found})"),
                "run `tally migrate`",
            ));
            store.close().await;
            None
        }
        Err(e) => {
            checks.push(Check::error(
                "database",
                format!("cannot read {place}: {e}"),
                "check DATABASE_URL and that the database server is running",
            ));
            store.close().await;
            None
        }
    }
}

/// What tally's own records say: refused signatures, events waiting for a replay, and
/// subscriptions the catalogue no longer covers.
async fn records(store: &Store, checks: &mut Vec<Check>) {
    let unreadable = |name: &'static str, e: tally_store::StoreError| {
        Check::error(
            name,
            format!("cannot read tally's records: {e}"),
            "check the database, then run `tally doctor` again",
        )
    };
    checks.push(match store.signature_failures_since(tally_store::now() - 24 * 3600).await {
        Ok((0, _)) => Check::ok("signature_failures", "no webhook refused for its signature in the last 24 h"),
        Ok((n, _)) => Check::warning(
            "signature_failures",
            format!("{n} webhook delivery(ies) refused for their signature in the last 24 h"),
            "make STRIPE_WEBHOOK_SECRET the signing secret of the endpoint that sends them (each endpoint and \
             `stripe listen` has its own; during a rotation list both, comma-separated); check the server's clock",
        ),
        Err(e) => unreadable("signature_failures", e),
    });
    match store.waiting_events().await {
        Ok(waiting) => {
            checks.push(unmatched(&waiting.unmatched));
            checks.push(match waiting.failed {
                0 => Check::ok("failed_events", "no event failed to be read"),
                n => Check::error(
                    "failed_events",
                    format!("{n} stored event(s) failed: their object could not be read"),
                    "see `tally audit` and the server's log for why, then run `tally replay --failed`",
                ),
            });
        }
        Err(e) => {
            checks.push(unreadable("unmatched_events", e));
        }
    }
    checks.push(match store.catalogue_drift().await {
        Ok(drift) if drift.unknown_prices.is_empty() && drift.unknown_tiers.is_empty() => {
            Check::ok("catalogue_drift", "every live subscription is on a price the catalogue names")
        }
        Ok(drift) => {
            let mut found: Vec<String> =
                drift.unknown_prices.iter().map(|(price, n)| format!("{n} on price {price}")).collect();
            found.extend(drift.unknown_tiers.iter().map(|(tier, n)| format!("{n} account(s) on tier {tier}")));
            Check::error(
                "catalogue_drift",
                format!("live subscriptions and tiers the catalogue does not name: {}", found.join(", ")),
                "name each price in its plan's prices (or legacy_prices) in the catalogue file, or move those \
                 subscriptions to a price on offer",
            )
        }
        Err(e) => unreadable("catalogue_drift", e),
    });
}

fn unmatched(by_reason: &[(String, i64)]) -> Check {
    if by_reason.is_empty() {
        return Check::ok("unmatched_events", "no event waits for a user or a price");
    }
    let total: i64 = by_reason.iter().map(|(_, n)| n).sum();
    let reasons: Vec<String> = by_reason.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
    let mut fixes = Vec::new();
    if by_reason.iter().any(|(r, _)| r == tally_core::rules::UNKNOWN_PRICE) {
        fixes.push("for unknown_price, name the price in the catalogue file (if it is yours)");
    }
    if by_reason.iter().any(|(r, _)| r != tally_core::rules::UNKNOWN_PRICE) {
        fixes
            .push("for no user, make checkout set client_reference_id or metadata.user_id (tally's own checkout does)");
    }
    Check::error(
        "unmatched_events",
        format!("{total} event(s) stored unmatched: {}", reasons.join(", ")),
        format!("{}; then run `tally replay --unmatched`", fixes.join("; ")),
    )
}

/// The key's kind and mode, never more of it: `sk_test_`, `rk_live_`.
fn key_prefix(key: &str) -> &str {
    match key.match_indices('_').nth(1) {
        Some((i, _)) => &key[..=i],
        None => "sk_",
    }
}

async fn stripe(config: &Config, client: &StripeClient, key: &str, checks: &mut Vec<Check>) {
    let prefix = key_prefix(key);
    let livemode = match client.balance().await {
        Ok(balance) => balance.livemode,
        Err(tally_stripe::StripeError::Api { status, message, .. }) if status == 401 || status == 403 => {
            checks.push(Check::error(
                "stripe_key",
                format!("Stripe refused the key ({prefix}...): {message}"),
                "set STRIPE_SECRET_KEY to a working secret key (Dashboard > Developers > API keys); a restricted \
                 key needs read access to balance, prices, webhook endpoints and portal settings",
            ));
            return;
        }
        Err(e) => {
            checks.push(Check::error(
                "stripe_key",
                format!("cannot check the key ({prefix}...) at {}: {e}", config.stripe_api_base),
                "check the network (and STRIPE_API_BASE, if set), then run `tally doctor` again",
            ));
            return;
        }
    };
    let mode = if livemode { "live" } else { "test" };
    if livemode != config.live() {
        checks.push(Check::error(
            "stripe_key",
            format!("the key ({prefix}...) works, but Stripe says it is a {mode}-mode key"),
            "set STRIPE_SECRET_KEY to a key of the mode you mean (sk_test_ or sk_live_)",
        ));
    } else {
        checks.push(Check::ok("stripe_key", format!("the key ({prefix}...) works: {mode} mode")));
    }
    checks.push(prices(config, client, livemode).await);
    checks.push(webhook_endpoint(config, client.webhook_endpoints().await));
    checks.push(portal(livemode, client.portal_configurations().await));
}

async fn prices(config: &Config, client: &StripeClient, livemode: bool) -> Check {
    let mode = if livemode { "live" } else { "test" };
    let mut problems = Vec::new();
    let mut checked = 0;
    for (item, want) in offered_prices(&config.catalogue) {
        let Some(id) = &want.id else { continue };
        checked += 1;
        match client.retrieve_price(id).await {
            Ok(Some(price)) => {
                let differences = inspect::price_differences(&price, want, livemode);
                if !differences.is_empty() {
                    problems.push(format!("{id} ({item}): {}", differences.join(", ")));
                }
            }
            Ok(None) => problems.push(format!("{id} ({item}): no such price in {mode} mode")),
            Err(e) => problems.push(format!("{id} ({item}): {e}")),
        }
    }
    // Still honoured in webhooks: each should exist, archived or not.
    for plan in &config.catalogue.plans {
        for id in &plan.legacy_prices {
            checked += 1;
            match client.retrieve_price(id).await {
                Ok(Some(price)) if price.livemode != livemode => {
                    problems.push(format!("{id} ({} legacy): not a {mode}-mode price", plan.id));
                }
                Ok(Some(_)) => {}
                Ok(None) => problems.push(format!("{id} ({} legacy): no such price in {mode} mode", plan.id)),
                Err(e) => problems.push(format!("{id} ({} legacy): {e}", plan.id)),
            }
        }
    }
    if problems.is_empty() {
        return Check::ok(
            "stripe_prices",
            format!(
                "{checked} catalogue price(s) exist in {mode} mode, active, with the catalogue's amount, \
                     currency and interval"
            ),
        );
    }
    Check::error(
        "stripe_prices",
        problems.join("; "),
        "make the catalogue and Stripe agree: fix the price's amount, currency or interval in the catalogue, or \
         point it at the right Stripe price (a Stripe price cannot change; `tally stripe-setup` creates missing ones)",
    )
}

fn webhook_endpoint(config: &Config, endpoints: Result<Vec<WebhookEndpoint>, tally_stripe::StripeError>) -> Check {
    let url = format!("{}/api/webhooks/stripe", config.public_url);
    let endpoints = match endpoints {
        Ok(endpoints) => endpoints,
        Err(e) => {
            return Check::error(
                "webhook_endpoint",
                format!("cannot list webhook endpoints: {e}"),
                "give the key read access to webhook endpoints, then run `tally doctor` again",
            );
        }
    };
    let create = format!(
        "add an endpoint for {url} (Dashboard > Developers > Webhooks) sending {}, and put its signing secret in \
         STRIPE_WEBHOOK_SECRET",
        tally_stripe::api::HANDLED_EVENTS.join(", ")
    );
    let mut ours: Vec<&WebhookEndpoint> = endpoints.iter().filter(|e| e.url.trim_end_matches('/') == url).collect();
    // The best one decides: enabled, and with the fewest events missing.
    ours.sort_by_key(|e| (e.status != "enabled", inspect::missing_events(e).len()));
    let Some(endpoint) = ours.first() else {
        let local = ["://localhost", "://127.0.0.1", "://[::1]"].iter().any(|h| config.public_url.contains(h));
        let message = format!("no webhook endpoint points at {url} ({} other endpoint(s))", endpoints.len());
        if local && !config.live() {
            return Check::warning(
                "webhook_endpoint",
                message,
                format!(
                    "Stripe cannot reach localhost: run `stripe listen --forward-to {url}` while developing, or {create}"
                ),
            );
        }
        return Check::error("webhook_endpoint", message, create);
    };
    let version = endpoint.api_version.as_deref().unwrap_or("the account's default");
    if endpoint.status != "enabled" {
        return Check::error(
            "webhook_endpoint",
            format!("endpoint {} for {url} is {}", endpoint.id, endpoint.status),
            "enable it (Dashboard > Developers > Webhooks > the endpoint); Stripe disables an endpoint that fails for days",
        );
    }
    let missing = inspect::missing_events(endpoint);
    if !missing.is_empty() {
        return Check::error(
            "webhook_endpoint",
            format!("endpoint {} for {url} does not send {}", endpoint.id, missing.join(", ")),
            "add those event types to the endpoint (Dashboard > Developers > Webhooks > the endpoint)",
        );
    }
    Check::ok(
        "webhook_endpoint",
        format!("endpoint {} for {url} is enabled with every event tally handles; API version {version}", endpoint.id),
    )
}

fn portal(livemode: bool, configurations: Result<Vec<PortalConfiguration>, tally_stripe::StripeError>) -> Check {
    let settings = if livemode {
        "https://dashboard.stripe.com/settings/billing/portal"
    } else {
        "https://dashboard.stripe.com/test/settings/billing/portal"
    };
    match configurations {
        Ok(list) => match list.iter().find(|c| c.active && c.is_default) {
            Some(c) => Check::ok("customer_portal", format!("the Customer Portal is configured ({})", c.id)),
            None => Check::error(
                "customer_portal",
                "the Customer Portal has no active default configuration: `POST /api/portal` fails",
                format!("save the portal's settings once at {settings}"),
            ),
        },
        Err(e) => Check::error(
            "customer_portal",
            format!("cannot list Customer Portal configurations: {e}"),
            "give the key read access to portal settings, then run `tally doctor` again",
        ),
    }
}
