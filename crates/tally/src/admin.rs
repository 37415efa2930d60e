//! `tally replay` and `tally audit`: the operator's repair and check.

use anyhow::bail;
use tally_server::Config;
use tally_store::StoredEvent;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// One stored event to apply again.
    event_id: Option<String>,
    /// Every event stored as unmatched (no user was found).
    #[arg(long, conflicts_with_all = ["event_id", "failed"])]
    unmatched: bool,
    /// Every event stored as failed (its object could not be read).
    #[arg(long, conflicts_with = "event_id")]
    failed: bool,
}

/// Applies stored events again through the same path as a webhook. An event that was
/// applied before stays a duplicate; unmatched and failed ones get another chance.
pub async fn replay(args: ReplayArgs, config: Config) -> anyhow::Result<()> {
    let store = config.connect_store().await?;
    store.migrate().await?;
    let events: Vec<StoredEvent> = match (&args.event_id, args.unmatched, args.failed) {
        (Some(id), ..) => match store.event(id).await? {
            Some(event) => vec![event],
            None => bail!("no stored event {id}"),
        },
        (None, true, _) => store.events_with_outcome("unmatched").await?,
        (None, _, true) => store.events_with_outcome("failed").await?,
        (None, false, false) => bail!("name an EVENT_ID, or --unmatched or --failed"),
    };
    for stored in &events {
        let parsed = match tally_stripe::parse_event(stored.payload.as_bytes()) {
            Ok(parsed) => parsed,
            Err(e) => {
                println!("{} {}: still unreadable: {e}", stored.id, stored.event_type);
                continue;
            }
        };
        let result = tally_server::ingest_parsed(&store, &parsed, &stored.payload).await?;
        println!("{} {} -> {}", stored.id, stored.event_type, result.outcome.as_str());
    }
    println!("replayed {} event(s)", events.len());
    Ok(())
}

/// Exits 1 when an invariant is broken.
pub async fn audit(config: Config) -> anyhow::Result<()> {
    let store = config.connect_store().await?;
    store.migrate().await?;
    let audit = store.audit().await?;
    for problem in &audit.violations {
        println!("{problem}");
    }
    for notice in &audit.notices {
        println!("note: {notice}");
    }
    if !audit.violations.is_empty() {
        bail!("{} invariant(s) broken", audit.violations.len());
    }
    println!("ok: the ledger sums to every balance, nothing was granted twice, every tier has its subscription");
    Ok(())
}
