//! The clock of `tally serve`: once a minute, grant what falls due with time alone
//! (see `tally_store::Store::grant_due`). Every replica ticks; the ledger's unique
//! references make each grant happen once.

use std::time::Duration;

use tally_store::Store;

pub async fn tick_every_minute(store: Store) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match store.grant_due(tally_store::now()).await {
            Ok(granted) if granted.months + granted.free > 0 => {
                tracing::info!(months = granted.months, free = granted.free, "monthly grants");
            }
            Ok(_) => {}
            // Retried at the next tick: a month missed now is still due then.
            Err(e) => tracing::warn!(error = %e, "monthly grants failed; retrying in a minute"),
        }
    }
}
