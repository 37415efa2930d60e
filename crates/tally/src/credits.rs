//! `tally credits show|grant`: an operator's view of a user's credits, and corrections.

use anyhow::bail;
use clap::Subcommand;
use tally_core::Bucket;
use tally_server::Config;
use tally_store::{Grant, Store};

#[derive(Subcommand)]
pub enum Command {
    /// Print a user's billing state and newest ledger rows.
    Show {
        user: String,
        /// How many ledger rows.
        #[arg(long, default_value_t = 10)]
        limit: i64,
    },
    /// Add (or, negative, remove) credits in one bucket; never below zero.
    Grant {
        user: String,
        #[arg(allow_negative_numbers = true)]
        amount: i64,
        #[arg(long, value_parser = ["plan", "topup"])]
        bucket: String,
        #[arg(long)]
        reason: String,
        /// Makes the grant idempotent: the same key grants once. Default: a new key.
        #[arg(long)]
        key: Option<String>,
    },
}

pub async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let store = config.connect_store().await?;
    store.migrate().await?;
    let user = match command {
        Command::Show { user, limit } => {
            show(&store, &user, limit).await?;
            return Ok(());
        }
        Command::Grant { user, amount, bucket, reason, key } => {
            if amount == 0 {
                bail!("AMOUNT must not be zero");
            }
            let key = key.unwrap_or_else(|| format!("cli:{}", hex::encode(rand::random::<[u8; 12]>())));
            let bucket = Bucket::parse(&bucket).expect("clap checked the bucket");
            let grant = Grant { user_id: &user, amount, bucket, reason: &reason, key: &key };
            store.grant(grant).await?;
            println!("granted {amount} {} credits to {user} (key {key})", bucket.as_str());
            user
        }
    };
    show(&store, &user, 5).await
}

async fn show(store: &Store, user: &str, limit: i64) -> anyhow::Result<()> {
    let billing = store.billing(user).await?;
    println!("{}", serde_json::to_string_pretty(&billing)?);
    let rows = store.ledger(user, limit.clamp(1, 500), None).await?;
    println!("{:>8}  {:<6} {:>9} {:>9}  {:<22} reference", "id", "bucket", "delta", "after", "reason");
    for r in rows {
        println!(
            "{:>8}  {:<6} {:>+9} {:>9}  {:<22} {}",
            r.id, r.bucket, r.delta, r.balance_after, r.reason, r.reference
        );
    }
    Ok(())
}
