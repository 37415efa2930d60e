//! `tally sync`: pull recent events from the Stripe API and apply what webhooks missed.

use anyhow::Context;
use tally_server::Config;
use tally_stripe::StripeClient;

#[derive(clap::Args)]
pub struct Args {
    /// How far back to look, in days (Stripe keeps 30).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=30))]
    days: u16,
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let key = config.stripe_secret_key.as_deref().context("STRIPE_SECRET_KEY: needed to read events from Stripe")?;
    let store = config.connect_store().await?;
    store.migrate().await?;
    let client = StripeClient::new(&config.stripe_api_base, key, config.stripe_client.clone());
    let since = tally_store::now() - i64::from(args.days) * 24 * 3600;
    let report =
        tally_server::sync::sync(&client, &store, since).await.map_err(|e| anyhow::anyhow!("sync failed: {e}"))?;
    let total: usize = report.values().sum();
    let parts: Vec<String> = report.iter().map(|(outcome, n)| format!("{n} {outcome}")).collect();
    println!(
        "synced {total} event(s) of the last {} day(s): {}",
        args.days,
        if parts.is_empty() { "none".into() } else { parts.join(", ") }
    );
    Ok(())
}
