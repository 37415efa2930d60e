//! `tally catalogue [--json]`: the effective catalogue, from the file or the defaults.

use tally_core::{Catalogue, Price};
use tally_server::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Print it as JSON (legacy prices included), as `GET /api/catalogue` shapes it.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(&config.catalogue)?);
        return Ok(());
    }
    let source = match &config.catalogue_path {
        Some(path) => path.display().to_string(),
        None => "the default (no catalogue file; prices from STRIPE_*_PRICE_ID)".to_owned(),
    };
    print!("{}", describe(&config.catalogue, &source));
    Ok(())
}

/// The catalogue as an operator reads it.
fn describe(catalogue: &Catalogue, source: &str) -> String {
    let mut out = format!("catalogue: {source}\n");
    let monthly = if catalogue.free.monthly { ", reset on the 1st of each month" } else { "" };
    out += &format!("free: {} credits{monthly}\n", catalogue.free.credits);
    for plan in &catalogue.plans {
        out += &format!("plan {} ({}): {} credits a month, rank {}", plan.id, plan.name, plan.credits, plan.rank);
        if plan.trial_credits.is_some() {
            out += &format!(", trial {} credits", plan.trial_allowance());
        }
        out += "\n";
        out += &prices(&plan.prices);
        for legacy in &plan.legacy_prices {
            out += &format!("  {legacy}  legacy: honoured, not offered\n");
        }
    }
    for pack in &catalogue.packs {
        out += &format!("pack {} ({}): {} credits\n", pack.id, pack.name, pack.credits);
        out += &prices(&pack.prices);
    }
    out
}

fn prices(prices: &[Price]) -> String {
    prices
        .iter()
        .map(|p| format!("  {}  {}\n", p.id.as_deref().unwrap_or("(no id yet: run `tally stripe-setup`)"), p.label()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_reads_as_the_guide() {
        let text = describe(&Catalogue::default_with(Some("price_p".into()), None, None), "the default");
        assert!(text.contains("plan pro (Pro): 2500 credits a month, rank 1\n  price_p  $49.00/month\n"), "{text}");
        assert!(text.contains("pack topup (1,000 credits): 1000 credits\n  (no id yet"), "{text}");
    }
}
