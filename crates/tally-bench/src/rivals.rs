//! What users would pick instead of tally, on the same Postgres in the same run:
//! `@supabase/stripe-sync-engine` (bench/stripe-sync-engine/server.mjs around the npm
//! package, in its own database) taking the same signed deliveries as tally, and
//! pgbench running tally's ceiling transaction (see `pgbench` in main.rs).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::load::{self, Check, Run};
use crate::workload::{self, Outcomes, SECRET, Tally};
use crate::{seed, server};

/// The system name of stripe-sync-engine's runs.
pub const SYNC_ENGINE: &str = "stripe-sync-engine";

/// The node server around stripe-sync-engine, stopped when dropped.
struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `node server.mjs` in `dir` (after `npm ci` there) on `database_url`, and waits
/// for the line it prints once its migrations ran.
fn start(dir: &Path, database_url: &str) -> anyhow::Result<Node> {
    if !dir.join("node_modules").is_dir() {
        let status = Command::new("npm").arg("ci").current_dir(dir).status().context("cannot run npm ci")?;
        anyhow::ensure!(status.success(), "npm ci in {} failed", dir.display());
    }
    let mut child = Command::new("node")
        .arg("server.mjs")
        .current_dir(dir)
        .env("DATABASE_URL", database_url)
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("PORT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start node (stripe-sync-engine)")?;
    let stdout = child.stdout.take().context("node's stdout")?;
    // Its stdout is read on a thread of its own (and kept read, so that node never blocks
    // on a full pipe); the address comes back over a channel, so the wait is bounded even
    // if node hangs without a line.
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let (Some(addr), Some(tx)) = (line.strip_prefix("listening on "), found.take()) {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = match address.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            bail!("stripe-sync-engine's server did not listen within 60 s (or exited)");
        }
    };
    Ok(Node { child, base: format!("http://{addr}") })
}

/// stripe-sync-engine's ingest at every concurrency, `n` distinct events each (as tally's
/// ingest: the same stories, both shapes, 10% re-deliveries), in a fresh database.
pub async fn sync_engine(
    dir: &Path,
    admin_url: &str,
    concurrency: &[usize],
    n: usize,
    n_serial: usize,
) -> anyhow::Result<Vec<Run>> {
    let database_url = server::fresh_database(admin_url, "tally_bench_sse").await?;
    let node = start(dir, &database_url)?;
    let pid = node.child.id();
    let db = seed::pool(&database_url).await?;
    let client = Tally::new(&node.base);
    let mut runs = Vec::new();
    let mut invoices = 0i64;
    for &c in concurrency {
        let n = if c == 1 { n_serial } else { n };
        // Signed right before the run: the package accepts signatures up to 5 minutes old.
        let ing = Arc::new(workload::ingest(&format!("sse{c}"), n, 0.10));
        client.warm_up_path(c, "/health").await;
        let (tally, events) = (client.clone(), ing.clone());
        let outcomes = Arc::new(Outcomes::default());
        let mut run = load::run("ingest", SYNC_ENGINE, c, ing.deliveries.len(), Some(pid), move |_, i| {
            let (tally, events, outcomes) = (tally.clone(), events.clone(), outcomes.clone());
            async move {
                let d = &events.deliveries[i];
                tally.deliver_to("/webhooks", &events.events[d.event], d, &outcomes).await
            }
        })
        .await;
        invoices += ing.events.iter().filter(|e| e.event_type == "invoice.paid").count() as i64;
        let stored: i64 = sqlx::query_scalar("select count(*) from stripe.invoices").fetch_one(&db).await?;
        run.checks = vec![Check::eq("invoices stored = invoice.paid events sent", stored, invoices)];
        eprintln!("{}", crate::report::progress(&run));
        runs.push(run);
    }
    db.close().await;
    drop(node);
    server::drop_database(admin_url, "tally_bench_sse").await?;
    Ok(runs)
}
