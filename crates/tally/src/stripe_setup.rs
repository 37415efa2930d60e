//! `tally stripe-setup`: creates the Pro, Enterprise and Top-up products and prices in
//! the Stripe account (found again by lookup key on a rerun) and prints the env lines.

use anyhow::Context;
use tally_server::Config;
use tally_stripe::StripeClient;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let key = config.stripe_secret_key.as_deref().context("STRIPE_SECRET_KEY: needed to create prices in Stripe")?;
    let client = StripeClient::new(&config.stripe_api_base, key, config.stripe_client.clone());
    let lines = client.ensure_catalog().await?;
    println!("# add to .env");
    for (env, price) in lines {
        println!("{env}={price}");
    }
    Ok(())
}
