//! `tally stripe-setup`: gives every catalogue price without an id one in the Stripe
//! account (found again by lookup key on a rerun, so nothing is made twice). With a
//! catalogue file, the new ids are written into it in place, comments and layout kept
//! (toml_edit); without one, the default catalogue's env lines are printed.

use std::path::Path;

use anyhow::{Context, bail};
use tally_core::Catalogue;
use tally_server::Config;
use tally_stripe::StripeClient;
use tally_stripe::api::EnsuredPrice;
use toml_edit::{DocumentMut, Item, value};

pub async fn run(config: Config) -> anyhow::Result<()> {
    let key = config.stripe_secret_key.as_deref().context("STRIPE_SECRET_KEY: needed to create prices in Stripe")?;
    let client = StripeClient::new(&config.stripe_api_base, key, config.stripe_client.clone());
    match &config.catalogue_path {
        Some(path) => {
            let ensured = client.ensure_catalogue(&config.catalogue).await?;
            if ensured.is_empty() {
                println!("every price in {} has an id already", path.display());
                return Ok(());
            }
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let written = write_price_ids(&text, &config.catalogue, &ensured)?;
            replace_file(path, &written)?;
            for price in &ensured {
                let how = if price.created { "created" } else { "found" };
                println!(
                    "{}.prices[{}].id = {:?} ({how})",
                    section(&config.catalogue, &price.item),
                    price.index,
                    price.id
                );
            }
            println!("wrote {} price ids into {}", ensured.len(), path.display());
        }
        None => {
            // The default catalogue, priced from the environment: find or make all three.
            let ensured = client.ensure_catalogue(&Catalogue::default()).await?;
            println!("# add to .env");
            for price in ensured {
                println!("{}={}", env_var(&price.item), price.id);
            }
        }
    }
    Ok(())
}

/// `plans.ID` or `packs.ID`: where an item lives in the file.
fn section(catalogue: &Catalogue, item: &str) -> String {
    let table = if catalogue.plan(item).is_some() { "plans" } else { "packs" };
    format!("{table}.{item}")
}

/// The guide's variable for a default item's price.
fn env_var(item: &str) -> String {
    format!("STRIPE_{}_PRICE_ID", item.to_uppercase())
}

/// The file's text with each ensured price's `id` set, everything else as it was.
pub fn write_price_ids(text: &str, catalogue: &Catalogue, ensured: &[EnsuredPrice]) -> anyhow::Result<String> {
    let mut doc: DocumentMut = text.parse().context("the catalogue file is not valid TOML")?;
    for price in ensured {
        let table = if catalogue.plan(&price.item).is_some() { "plans" } else { "packs" };
        let prices = &mut doc[table][price.item.as_str()]["prices"];
        let where_ = || format!("{table}.{}.prices[{}]", price.item, price.index);
        match prices {
            Item::Value(v) => {
                let entry = v
                    .as_array_mut()
                    .and_then(|a| a.get_mut(price.index))
                    .and_then(|e| e.as_inline_table_mut())
                    .with_context(|| format!("{} is not an inline table", where_()))?;
                entry.insert("id", price.id.as_str().into());
            }
            Item::ArrayOfTables(tables) => {
                let entry = tables.get_mut(price.index).with_context(|| format!("{} is missing", where_()))?;
                entry["id"] = value(price.id.as_str());
            }
            _ => bail!("{} is missing", where_()),
        }
    }
    Ok(doc.to_string())
}

/// Writes beside the file and renames over it, so that a crash leaves one or the other.
fn replace_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# our plans
[plans.starter]
name = "Starter"   # the cheap one
credits = 500
rank = 1
prices = [
  { amount = 900, currency = "usd", interval = "month" },
  { id = "price_kept", amount = 9000, currency = "usd", interval = "year" },
]

[packs.small]
name = "Small"
credits = 1000

[[packs.small.prices]]
amount = 2000
currency = "usd"
"#;

    #[test]
    fn ids_are_written_in_place_keeping_comments() {
        let catalogue = Catalogue::from_toml(FILE).unwrap();
        let ensured = [
            EnsuredPrice { item: "starter".into(), index: 0, id: "price_new_m".into(), created: true },
            EnsuredPrice { item: "small".into(), index: 0, id: "price_new_pack".into(), created: true },
        ];
        let written = write_price_ids(FILE, &catalogue, &ensured).unwrap();
        assert!(written.contains("# our plans") && written.contains("# the cheap one"), "{written}");
        assert!(written.contains("id = \"price_kept\""));
        let again = Catalogue::from_toml(&written).unwrap();
        assert_eq!(again.plans[0].prices[0].id.as_deref(), Some("price_new_m"));
        assert_eq!(again.plans[0].prices[1].id.as_deref(), Some("price_kept"));
        assert_eq!(again.packs[0].prices[0].id.as_deref(), Some("price_new_pack"));
    }
}
