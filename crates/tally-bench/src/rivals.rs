//! What users would pick instead of tally, on the same Postgres in the same run:
//! `@supabase/stripe-sync-engine` (bench/stripe-sync-engine/server.mjs around the npm
//! package, in its own database) taking the same signed deliveries as tally, and
//! pgbench running tally's ceiling transaction (see `pgbench` in main.rs).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let mut lines = BufReader::new(stdout).lines();
    let started = Instant::now();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    break addr.trim().to_owned();
                }
            }
            _ => {
                let _ = child.kill();
                bail!("stripe-sync-engine's server exited before listening");
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            bail!("stripe-sync-engine's server did not listen within 60 s");
        }
    };
    // Keep reading its stdout so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
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
