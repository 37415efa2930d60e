//! `tally-bench`: tally's webhook ingest and credit spending, side by side with the
//! same transactions issued straight to Postgres (the ceiling), at several
//! concurrencies; then tally's memory, start-up time and database round trips.
//!
//! `tally-bench --smoke` is the small version on a tally inside this process (SQLite, or
//! Postgres when TEST_DATABASE_URL is set), run by the test suite so the tool never rots.
//! See docs/BENCHMARKS.md.
//!
//! `tally-bench --hostile` holds idle, slowloris and slow-body connections against a
//! `tally serve` while probing /healthz and spending, and fails if either suffered
//! (issue 11, finding 2); `--hostile --smoke` is its small version, run by the tests.

mod ceiling;
mod hostile;
mod load;
mod proxy;
mod report;
mod rivals;
mod seed;
mod server;
mod workload;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use sqlx::AnyPool;
use tally_store::Store;

use crate::load::{Check, Run};
use crate::workload::{HOT_USER, Ingest, Outcomes, Tally};

#[derive(Parser, Clone)]
#[command(name = "tally-bench", about = "Benchmarks tally against the database's own limit")]
struct Args {
    /// A small, checked run on a tally inside this process: SQLite in a temporary file,
    /// or Postgres when TEST_DATABASE_URL is set. Exits non-zero if any check fails.
    #[arg(long)]
    smoke: bool,
    /// The `tally` binary to start (`cargo build --release -p tally` first).
    #[arg(long, default_value = "target/release/tally")]
    tally_bin: PathBuf,
    /// A Postgres server where databases named tally_bench* may be dropped and created.
    #[arg(long, env = "BENCH_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    /// Concurrencies (closed-loop clients) to run every workload at.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Operations per run at C > 1 (ingest: distinct events, plus 10% duplicates).
    #[arg(long, default_value_t = 4000)]
    n: usize,
    /// Operations per run at C = 1 (default: n / 4).
    #[arg(long)]
    n_serial: Option<usize>,
    /// Users the spread workloads spend over.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Start-ups measured per case.
    #[arg(long, default_value_t = 5)]
    startup_runs: usize,
    /// Also run the pgbench scripts of this directory (bench/) as a cross-check of the ceiling.
    #[arg(long)]
    pgbench: Option<PathBuf>,
    /// Also run stripe-sync-engine's ingest (bench/stripe-sync-engine: `npm ci`, then
    /// node) on the same Postgres, in a database tally_bench_sse, for the side-by-side table.
    #[arg(long)]
    stripe_sync_engine: Option<PathBuf>,
    /// Seconds per pgbench run.
    #[arg(long, default_value_t = 5)]
    pgbench_seconds: u64,
    /// Skip the variants (tally with RUST_LOG=warn) and the round-trip count.
    #[arg(long)]
    skip_extras: bool,
    /// Growth instead of the benchmark: ingest at each C on an empty database, then again
    /// after this many events are stored (e.g. 1000000), on Postgres.
    #[arg(long)]
    growth: Option<usize>,
    /// The embedded SQLite default instead of Postgres: tally serve on a file of its own,
    /// every workload at every C (no ceiling, variants or start-up).
    #[arg(long)]
    sqlite: bool,
    /// Also write the report (Markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Hostile clients instead of the benchmark: holds idle, slowloris and slow-body
    /// connections against a `tally serve` (SQLite) while probing /healthz and spending.
    /// Exits non-zero if /healthz took over 1 s or failed, or a spend failed. With
    /// --smoke: a few seconds and tens of connections on a tally inside this process.
    #[arg(long)]
    hostile: bool,
    /// With --hostile: tally on Postgres (a database tally_bench_hostile on --database-url).
    #[arg(long)]
    postgres: bool,
    /// With --hostile: seconds the connections are held.
    #[arg(long, default_value_t = 75)]
    hold_seconds: u64,
    /// With --hostile: idle connections (connect, send nothing).
    #[arg(long, default_value_t = 1100)]
    idle_conns: usize,
    /// With --hostile: slowloris connections (a GET header at one byte a second).
    #[arg(long, default_value_t = 300)]
    slowloris_conns: usize,
    /// With --hostile: slow webhook POSTs announcing 1 MiB.
    #[arg(long, default_value_t = 200)]
    slow_body_conns: usize,
    /// With --hostile: bytes per second of each slow body.
    #[arg(long, default_value_t = 1024)]
    body_rate: usize,
    /// With --hostile: the soft RLIMIT_NOFILE of `tally serve`, like the probe's machine (0: the
    /// hard limit, to which this tool raises its own).
    #[arg(long, default_value_t = 1024)]
    server_nofile: u64,
    /// With --hostile: more environment for `tally serve`, NAME=VALUE (repeatable), e.g.
    /// TALLY_MAX_CONNECTIONS=900.
    #[arg(long, value_parser = name_value)]
    server_env: Vec<(String, String)>,
}

fn name_value(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once('=').ok_or("NAME=VALUE")?;
    Ok((name.to_owned(), value.to_owned()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime starts");
    let result = runtime.block_on(async {
        match (args.hostile, args.smoke) {
            (true, _) => hostile(&args).await,
            (false, true) => smoke().await,
            (false, false) if args.growth.is_some() => growth(&args).await,
            (false, false) if args.sqlite => full_sqlite(&args).await,
            (false, false) => full(&args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tally-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A tally under test and the means to check its database.
struct Bench {
    tally: Tally,
    pid: Option<u32>,
    store: Store,
    db: AnyPool,
    /// The ceiling's database (Postgres only).
    ceiling_url: Option<String>,
    users: usize,
    /// Distinct events sent so far, to tally and to the ceiling.
    tally_events: i64,
    ceiling_events: i64,
    /// Credits spent from the hot user so far.
    hot_spent: i64,
    /// The highest VmRSS (KiB) seen while ingesting.
    ingest_rss_kib: u64,
}

impl Bench {
    async fn new(
        base: String,
        pid: Option<u32>,
        database_url: &str,
        ceiling_url: Option<String>,
        users: usize,
    ) -> anyhow::Result<Bench> {
        // Reads and checks only: the catalogue the server runs with (the default) is not needed here.
        let store = Store::connect(database_url, Default::default()).await?;
        let db = seed::pool(database_url).await?;
        Ok(Bench {
            tally: Tally::new(&base),
            pid,
            store,
            db,
            ceiling_url,
            users,
            tally_events: 0,
            ceiling_events: 0,
            hot_spent: 0,
            ingest_rss_kib: 0,
        })
    }

    async fn books_balance(&self) -> anyhow::Result<Check> {
        let unbalanced = self.store.unbalanced_accounts().await?;
        Ok(Check::eq("ledger sums = balances (unbalanced accounts)", unbalanced.len(), 0))
    }

    async fn ingest(&mut self, label: &'static str, c: usize, ing: Arc<Ingest>) -> anyhow::Result<Run> {
        self.tally.warm_up(c).await;
        let outcomes = Arc::new(Outcomes::default());
        let sampling = Arc::new(AtomicBool::new(true));
        let peak = Arc::new(AtomicU64::new(0));
        if let Some(pid) = self.pid {
            let (sampling, peak) = (sampling.clone(), peak.clone());
            tokio::spawn(async move {
                while sampling.load(Ordering::Relaxed) {
                    peak.fetch_max(server::memory(pid).0, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        let (tally, events, counts) = (self.tally.clone(), ing.clone(), outcomes.clone());
        let before = self.tally.write_counters().await;
        let mut run = load::run("ingest", label, c, ing.deliveries.len(), self.pid, move |_, i| {
            let (tally, events, counts) = (tally.clone(), events.clone(), counts.clone());
            async move {
                let d = &events.deliveries[i];
                tally.deliver(&events.events[d.event], d, &counts).await
            }
        })
        .await;
        run.per_commit = per_commit(before, self.tally.write_counters().await);
        sampling.store(false, Ordering::Relaxed);
        if let Some(pid) = self.pid {
            self.ingest_rss_kib = self.ingest_rss_kib.max(peak.load(Ordering::Relaxed)).max(server::memory(pid).0);
        }
        self.tally_events += ing.events.len() as i64;
        run.checks = vec![
            Check::eq("events stored = distinct ids sent", self.store.count_events().await?, self.tally_events),
            Check::eq("duplicate outcomes = duplicates sent", Outcomes::get(&outcomes.duplicate), ing.duplicates),
            Check::eq("unmatched or failed outcomes", Outcomes::get(&outcomes.other), 0),
            self.books_balance().await?,
        ];
        Ok(run)
    }

    async fn ingest_ceiling(&mut self, c: usize, ing: Arc<Ingest>) -> anyhow::Result<Option<Run>> {
        let Some(url) = self.ceiling_url.clone() else { return Ok(None) };
        let conns = Arc::new(ceiling::Conns::open(&url, c).await?);
        let (cs, events, users) = (conns.clone(), ing.clone(), self.users);
        let mut run = load::run("ingest", "ceiling", c, ing.deliveries.len(), None, move |worker, i| {
            let (conns, events) = (cs.clone(), events.clone());
            async move {
                let d = &events.deliveries[i];
                let e = &events.events[d.event];
                let mut conn = conns.of(worker).lock().await;
                ceiling::ingest(&mut conn, &e.id, e.event_type, &e.body, &ceiling::event_user(d.event, users)).await
            }
        })
        .await;
        if let Ok(conns) = Arc::try_unwrap(conns) {
            conns.close().await;
        }
        self.ceiling_events += ing.events.len() as i64;
        let stored = ceiling::count(&url, "select count(*) from c_events where id like $1", "%").await?;
        run.checks = vec![Check::eq("events stored = distinct ids sent", stored, self.ceiling_events)];
        Ok(Some(run))
    }

    async fn spend(&mut self, label: &'static str, c: usize, n: usize, hot: bool, prefix: &str) -> anyhow::Result<Run> {
        self.tally.warm_up(c).await;
        let bodies = Arc::new(workload::spend_bodies(prefix, n, if hot { 0 } else { self.users }, HOT_USER));
        let tally = self.tally.clone();
        let name = if hot { "spend hot user" } else { "spend spread" };
        let before = self.tally.write_counters().await;
        let mut run = load::run(name, label, c, n, self.pid, move |_, i| {
            let (tally, bodies) = (tally.clone(), bodies.clone());
            async move { tally.spend(bodies[i].clone()).await }
        })
        .await;
        run.per_commit = per_commit(before, self.tally.write_counters().await);
        let ok = (n - run.errors) as i64;
        run.checks = vec![Check::eq(
            "spend ledger rows = spends answered 200",
            seed::ledger_rows_like(&self.db, &format!("spend:{prefix}-")).await?,
            ok,
        )];
        if hot {
            self.hot_spent += ok;
            let billing =
                self.tally.get(&format!("/api/users/{HOT_USER}/billing")).await.map_err(anyhow::Error::msg)?;
            let want = seed::SPREAD_CREDITS + seed::HOT_CREDITS - self.hot_spent;
            run.checks.push(Check::eq("hot user's credits", billing["credits"].as_i64().unwrap_or(-1), want));
        }
        run.checks.push(self.books_balance().await?);
        Ok(run)
    }

    async fn spend_ceiling(&mut self, c: usize, n: usize, hot: bool, prefix: &str) -> anyhow::Result<Option<Run>> {
        let Some(url) = self.ceiling_url.clone() else { return Ok(None) };
        let conns = Arc::new(ceiling::Conns::open(&url, c).await?);
        let users = if hot { 0 } else { self.users };
        let targets: Arc<Vec<String>> = Arc::new(
            (0..n)
                .map(|_| if hot { HOT_USER.to_owned() } else { workload::spread_user(rand::random_range(0..users)) })
                .collect(),
        );
        let (cs, prefix_owned) = (conns.clone(), Arc::<str>::from(prefix));
        let name = if hot { "spend hot user" } else { "spend spread" };
        let mut run = load::run(name, "ceiling", c, n, None, move |worker, i| {
            let (conns, targets, prefix) = (cs.clone(), targets.clone(), prefix_owned.clone());
            async move {
                let mut conn = conns.of(worker).lock().await;
                ceiling::spend(&mut conn, &targets[i], 1, &format!("{prefix}-{i}")).await
            }
        })
        .await;
        if let Ok(conns) = Arc::try_unwrap(conns) {
            conns.close().await;
        }
        let rows =
            ceiling::count(&url, "select count(*) from c_ledger where reference like $1", &format!("{prefix}-%"))
                .await?;
        run.checks = vec![Check::eq("ledger rows = spends committed", rows, (n - run.errors) as i64)];
        Ok(Some(run))
    }

    async fn reserve_commit(&mut self, label: &'static str, c: usize, n: usize, prefix: &str) -> anyhow::Result<Run> {
        self.tally.warm_up(c).await;
        let bodies = Arc::new(workload::reserve_bodies(prefix, n, self.users));
        let tally = self.tally.clone();
        let mut run = load::run("reserve+commit", label, c, n, self.pid, move |_, i| {
            let (tally, bodies) = (tally.clone(), bodies.clone());
            async move { tally.reserve_commit(bodies[i].clone()).await }
        })
        .await;
        run.checks = vec![
            Check::eq(
                "committed reservations = pairs answered 200",
                seed::reservations_like(&self.db, prefix, "committed").await?,
                (n - run.errors) as i64,
            ),
            self.books_balance().await?,
        ];
        Ok(run)
    }

    /// Every workload at concurrency `c`, tally then its ceiling.
    async fn round(&mut self, label: &'static str, c: usize, n: usize, runs: &mut Vec<Run>) -> anyhow::Result<()> {
        let tag = format!("{}{c}", if label == "tally" { "" } else { "v" });
        let ing = Arc::new(workload::ingest(&format!("ing{tag}"), n, 0.10));
        eprintln!(
            "# C={c}: {} distinct events ({} bytes each on average) + {} duplicates",
            ing.events.len(),
            ing.mean_body_bytes(),
            ing.duplicates
        );
        let push = |run: Run, runs: &mut Vec<Run>| {
            eprintln!("{}", report::progress(&run));
            runs.push(run);
        };
        push(self.ingest(label, c, ing.clone()).await?, runs);
        if let Some(run) = self.ingest_ceiling(c, ing.clone()).await? {
            push(run, runs);
        }
        for hot in [false, true] {
            let prefix = format!("{}{tag}", if hot { "hot" } else { "sp" });
            push(self.spend(label, c, n, hot, &prefix).await?, runs);
            if let Some(run) = self.spend_ceiling(c, n, hot, &format!("c{prefix}")).await? {
                push(run, runs);
            }
        }
        push(self.reserve_commit(label, c, n / 2, &format!("rc{tag}")).await?, runs);
        Ok(())
    }
}

fn failures(runs: &[Run]) -> Vec<String> {
    runs.iter()
        .filter(|r| r.errors > 0 || !r.checks_ok())
        .map(|r| {
            format!(
                "{} {} C={}: {} errors, checks {}",
                r.workload,
                r.system,
                r.concurrency,
                r.errors,
                if r.checks_ok() { "ok" } else { "FAILED" }
            )
        })
        .collect()
}

/// The small run of the test suite: every workload, every check, in seconds.
async fn smoke() -> anyhow::Result<()> {
    let server = std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty());
    let tag = format!("{}_{}", std::process::id(), rand::random::<u32>());
    let (database_url, ceiling_url) = match &server {
        Some(url) => (
            server::fresh_database(url, &format!("tally_bench_smoke_{tag}")).await?,
            Some(server::fresh_database(url, &format!("tally_bench_smoke_{tag}_c")).await?),
        ),
        None => {
            let path = std::env::temp_dir().join(format!("tally-bench-smoke-{tag}.db"));
            (format!("sqlite://{}", path.display()), None)
        }
    };
    let users = 50;
    let base = server::in_process(&database_url).await?;
    let mut bench = Bench::new(base, None, &database_url, ceiling_url.clone(), users).await?;
    seed::seed_users(&bench.db, users).await?;
    if let Some(url) = &ceiling_url {
        ceiling::setup(url, users).await?;
    }
    let mut runs = Vec::new();
    for c in [1, 4] {
        bench.round("tally", c, 24, &mut runs).await?;
    }
    let mut extra = String::new();
    if let (Some(server_url), Some(ceiling_url)) = (&server, &ceiling_url) {
        let rt_db = server::fresh_database(server_url, &format!("tally_bench_smoke_{tag}_rt")).await?;
        let table = round_trips(server_url, &rt_db, ceiling_url, 6, |url| async move {
            server::in_process(&url).await.map(|b| (b, None))
        })
        .await?;
        extra.push_str(&table);
        server::drop_database(server_url, &format!("tally_bench_smoke_{tag}_rt")).await?;
    }
    println!("{}\n{}", report::comparison(&runs), extra);
    bench.store.close().await;
    bench.db.close().await;
    if let Some(url) = &server {
        server::drop_database(url, &format!("tally_bench_smoke_{tag}")).await?;
        server::drop_database(url, &format!("tally_bench_smoke_{tag}_c")).await?;
    } else if let Some(path) = database_url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    let failed = failures(&runs);
    if !failed.is_empty() {
        bail!("smoke run failed:\n{}", failed.join("\n"));
    }
    println!("smoke run ok: {} runs, every state check passed", runs.len());
    Ok(())
}

/// Hostile clients against a `tally serve` (or, with --smoke, a tally in this process).
async fn hostile(args: &Args) -> anyhow::Result<()> {
    let plan = if args.smoke {
        hostile::Plan::smoke()
    } else {
        hostile::Plan {
            idle: args.idle_conns,
            slowloris: args.slowloris_conns,
            slow_bodies: args.slow_body_conns,
            body_rate: args.body_rate,
            ..hostile::Plan::probe_of_issue_11(Duration::from_secs(args.hold_seconds))
        }
    };
    // Every hostile connection, the probes in flight and the tool's own files.
    let needed = plan.connections() as u64 + 400;
    let own = server::raise_nofile()?;
    if own < needed {
        bail!("RLIMIT_NOFILE's hard limit is {own}; this run needs about {needed} descriptors");
    }
    let dir = server::scratch("tally-bench-hostile")?;
    let tag = format!("{}_{}", std::process::id(), rand::random::<u32>());
    let postgres = args.postgres || (args.smoke && std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()));
    let admin_url =
        if args.smoke { std::env::var("TEST_DATABASE_URL").unwrap_or_default() } else { args.database_url.clone() };
    let db_name = if args.smoke { format!("tally_bench_hostile_{tag}") } else { "tally_bench_hostile".to_owned() };
    let database_url = if postgres {
        server::fresh_database(&admin_url, &db_name).await?
    } else {
        let path = dir.join(format!("hostile-{tag}.db"));
        format!("sqlite://{}", path.display())
    };

    let (base, serve, setup) = if args.smoke {
        (server::in_process(&database_url).await?, None, "a tally inside this tool".to_owned())
    } else {
        let bin = std::fs::canonicalize(&args.tally_bin)
            .with_context(|| format!("{} not found: cargo build --release -p tally", args.tally_bin.display()))?;
        let log = dir.join("serve.log");
        let _ = std::fs::remove_file(&log);
        let nofile = (args.server_nofile > 0).then_some(args.server_nofile);
        let options = server::Options { nofile, env: &args.server_env, ..server::Options::default() };
        let serve = server::spawn_with(&bin, &database_url, &log, &options)?;
        let limit = server::max_open_files(serve.pid()).map_or_else(|| "?".to_owned(), |n| n.to_string());
        let env: Vec<String> = args.server_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let setup = format!(
            "`tally serve` ({}) with RLIMIT_NOFILE {limit} (soft){}; its log: {}",
            bin.display(),
            if env.is_empty() { String::new() } else { format!(", {}", env.join(" ")) },
            log.display()
        );
        (serve.base(), Some(serve), setup)
    };
    let db = seed::pool(&database_url).await?;
    seed::seed_users(&db, 0).await?;
    db.close().await;
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse()?;
    // The server settles (pool, allocator) before the memory read before the attack.
    tokio::time::sleep(Duration::from_secs(if args.smoke { 0 } else { 1 })).await;

    let mut out = String::new();
    writeln!(
        out,
        "## Hostile clients against {} (tally on {})
",
        setup,
        if postgres { "Postgres" } else { "SQLite" }
    )?;
    writeln!(
        out,
        "- {} cores, load average at the start {}
",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    eprintln!("{out}");
    let outcome = hostile::attack(addr, &plan, serve.as_ref().map(server::Serve::pid)).await?;
    out.push_str(&outcome.report);
    let mut failures = outcome.failures.clone();
    if let Some(mut serve) = serve {
        if let Some(status) = serve.child.try_wait()? {
            failures.push(format!("tally serve exited during the run: {status}"));
        }
        serve.stop();
    }
    if args.smoke {
        for (kind, opened) in hostile::Kind::ALL.iter().zip(outcome.opened) {
            if opened < plan.count(*kind) {
                failures.push(format!("only {opened} {kind:?} connections opened of {}", plan.count(*kind)));
            }
        }
        if outcome.healthz_probes == 0 || outcome.spends == 0 {
            failures.push("no /healthz probe or spend was sent".to_owned());
        }
    }
    writeln!(
        out,
        "**{}**
",
        if failures.is_empty() {
            "Passed: every /healthz answered 200 within 1 s and every spend succeeded.".to_owned()
        } else {
            format!("Failed: {}.", failures.join("; "))
        }
    )?;
    println!("{out}");
    if let Some(path) = &args.out {
        std::fs::write(path, &out)?;
    }
    if postgres {
        server::drop_database(&admin_url, &db_name).await?;
    } else if let Some(path) = database_url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    if !failures.is_empty() {
        bail!("hostile clients: {}", failures.join("; "));
    }
    if args.smoke {
        println!("hostile smoke run ok");
    }
    Ok(())
}

/// Ingest on an empty database, then with `--growth` events already stored: the same
/// tally process and the same deliveries' shape, so the ratio is what size costs.
async fn growth(args: &Args) -> anyhow::Result<()> {
    let stored = args.growth.unwrap_or(1_000_000);
    let bin = tally_bin(args)?;
    let dir = server::scratch("tally-bench-growth")?;
    let database_url = server::fresh_database(&args.database_url, "tally_bench_growth").await?;
    let (serve, mut bench) = seeded(&bin, &dir, &database_url, args.users).await?;
    let mut runs = Vec::new();
    for (label, round) in [("tally", 0), ("tally, stored", 1)] {
        if round == 1 {
            let start = std::time::Instant::now();
            seed::store_events(&bench.db, stored, args.users).await?;
            bench.tally_events += stored as i64;
            sqlx::raw_sql("vacuum analyze").execute(&bench.db).await?;
            eprintln!("# stored {stored} events in {:.0} s", start.elapsed().as_secs_f64());
        }
        for &c in &args.concurrency {
            let n = if c == 1 { args.n_serial.unwrap_or(args.n / 4) } else { args.n };
            let ing = Arc::new(workload::ingest(&format!("gr{round}c{c}"), n, 0.10));
            let run = bench.ingest(label, c, ing).await?;
            eprintln!("{}", report::progress(&run));
            runs.push(run);
        }
    }
    let size: String = sqlx::query_scalar(
        "select pg_size_pretty(pg_total_relation_size('tally.events')) || ' (events, with indexes)'",
    )
    .fetch_one(&bench.db)
    .await?;
    serve.stop();
    let mut out = format!(
        "## Growth: ingest on an empty database and with {stored} events stored ({size})\n\n\
         | C | empty ops/s | p99 ms | {stored} stored ops/s | p99 ms | stored / empty |\n|---:|---:|---:|---:|---:|---:|\n"
    );
    for &c in &args.concurrency {
        let of = |label: &str| runs.iter().find(|r| r.system == label && r.concurrency == c);
        if let (Some(empty), Some(full)) = (of("tally"), of("tally, stored")) {
            writeln!(
                out,
                "| {c} | {:.0} | {:.2} | {:.0} | {:.2} | **{:.2}×** |",
                empty.throughput(),
                empty.quantile_ms(0.99),
                full.throughput(),
                full.quantile_ms(0.99),
                full.throughput() / empty.throughput()
            )?;
        }
    }
    server::drop_database(&args.database_url, "tally_bench_growth").await?;
    report_and_check(args, &out, &runs)
}

/// A `tally serve` on `database_url` (no ceiling), its log in `dir`, with `users` seeded.
async fn seeded(
    bin: &std::path::Path,
    dir: &std::path::Path,
    database_url: &str,
    users: usize,
) -> anyhow::Result<(server::Serve, Bench)> {
    let log = dir.join("serve.log");
    let _ = std::fs::remove_file(&log);
    let serve = server::spawn(bin, database_url, &log, None)?;
    let bench = Bench::new(serve.base(), Some(serve.pid()), database_url, None, users).await?;
    seed::seed_users(&bench.db, users).await?;
    Ok((serve, bench))
}

/// The `tally` binary of `--tally-bin`.
fn tally_bin(args: &Args) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(&args.tally_bin)
        .with_context(|| format!("{} not found: cargo build --release -p tally", args.tally_bin.display()))
}

/// Prints the report (and writes it to `--out`); fails if any run had errors or failed
/// a state check.
fn report_and_check(args: &Args, out: &str, runs: &[Run]) -> anyhow::Result<()> {
    println!("{out}");
    if let Some(path) = &args.out {
        std::fs::write(path, out)?;
    }
    let failed = failures(runs);
    if !failed.is_empty() {
        bail!("some runs had errors or failed their checks:\n{}", failed.join("\n"));
    }
    Ok(())
}

/// The real benchmark on the embedded SQLite default.
async fn full_sqlite(args: &Args) -> anyhow::Result<()> {
    let bin = tally_bin(args)?;
    let dir = server::scratch("tally-bench-sqlite")?;
    let path = dir.join("bench.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let database_url = format!("sqlite://{}", path.display());
    let (serve, mut bench) = seeded(&bin, &dir, &database_url, args.users).await?;
    let mut runs = Vec::new();
    for &c in &args.concurrency {
        let n = if c == 1 { args.n_serial.unwrap_or(args.n / 4) } else { args.n };
        bench.round("tally", c, n, &mut runs).await?;
    }
    let (_, peak) = serve.memory();
    serve.stop();
    let mut out = String::new();
    writeln!(out, "## tally on SQLite ({})\n\n{}", path.display(), report::comparison(&runs))?;
    writeln!(out, "## Where the CPU goes (SQLite)\n\n{}", report::cpu(&runs))?;
    writeln!(out, "Peak VmHWM of `tally serve`: {peak} KiB ({:.1} MB).\n", mb(peak))?;
    report_and_check(args, &out, &runs)
}

/// The real benchmark.
async fn full(args: &Args) -> anyhow::Result<()> {
    let bin = tally_bin(args)?;
    let dir = server::scratch("tally-bench")?;
    let mut out = String::new();
    writeln!(out, "## Machine\n\n{}", machine(&args.database_url).await?)?;
    eprintln!("{out}");

    // Start-up, before anything else loads the machine.
    let startup = startup_times(&bin, &args.database_url, &dir, args.startup_runs).await?;
    eprintln!("{startup}");

    // The main run: one tally process, one database, every workload at every C.
    let database_url = server::fresh_database(&args.database_url, "tally_bench").await?;
    let ceiling_url = server::fresh_database(&args.database_url, "tally_bench_ceiling").await?;
    let log = dir.join("serve.log");
    let _ = std::fs::remove_file(&log);
    let serve = server::spawn(&bin, &database_url, &log, None)?;
    let mut bench =
        Bench::new(serve.base(), Some(serve.pid()), &database_url, Some(ceiling_url.clone()), args.users).await?;
    seed::seed_users(&bench.db, args.users).await?;
    ceiling::setup(&ceiling_url, args.users).await?;
    sqlx::raw_sql("vacuum analyze").execute(&bench.db).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_before = serve.memory().0;
    let mut runs = Vec::new();
    for &c in &args.concurrency {
        let n = if c == 1 { args.n_serial.unwrap_or(args.n / 4) } else { args.n };
        bench.round("tally", c, n, &mut runs).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_after, peak) = serve.memory();
    let log_bytes = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let webhooks: usize = runs.iter().filter(|r| r.system == "tally" && r.workload == "ingest").map(|r| r.ops).sum();
    serve.stop();

    writeln!(out, "## tally against the ceiling\n\n{}", report::comparison(&runs))?;
    writeln!(
        out,
        "Ingest sends each distinct event once plus 10% re-deliveries; ops/s counts every delivery. \
         Reserve+commit is one reserve and one commit request per operation (n/2 operations).\n"
    )?;
    writeln!(out, "## Where the CPU goes\n\n{}", report::cpu(&runs))?;
    writeln!(
        out,
        "## Memory of `tally serve` (Postgres)\n\n| state | KiB | MB |\n|---|---:|---:|\n\
         | idle after start-up (VmRSS) | {idle_before} | {:.1} |\n\
         | peak while ingesting (VmRSS sampled every 50 ms) | {} | {:.1} |\n\
         | peak over the whole run (VmHWM) | {peak} | {:.1} |\n\
         | idle after the run (VmRSS) | {idle_after} | {:.1} |\n\n\
         The log of `tally serve` (default RUST_LOG=info, to a file) grew by {log_bytes} bytes over the run: \
         {:.0} bytes per webhook delivered (only webhooks write a line at info).\n",
        mb(idle_before),
        bench.ingest_rss_kib,
        mb(bench.ingest_rss_kib),
        mb(peak),
        mb(idle_after),
        log_bytes as f64 / webhooks.max(1) as f64,
    )?;
    writeln!(out, "## Start-up: exec to the first 200 of /healthz\n\n{startup}")?;

    if !args.skip_extras {
        // Variants at C=8 and the highest C, one after the other on the same (now larger)
        // database, the unchanged configuration first: what the request log and TLS to
        // Postgres cost. Configuration only; tally's code is the same. The main run
        // reaches Postgres as DATABASE_URL says, with sqlx's default sslmode=prefer: TLS
        // when the server offers it (ssl=on here).
        let plain_url = format!("{database_url}{}sslmode=disable", if database_url.contains('?') { '&' } else { '?' });
        let variants_of: [(&'static str, Option<&str>, &str); 3] = [
            ("tally (as above)", None, &database_url),
            ("tally RUST_LOG=warn", Some("warn"), &database_url),
            ("tally sslmode=disable", None, &plain_url),
        ];
        let highest = *args.concurrency.iter().max().unwrap_or(&32);
        let mut variants = Vec::new();
        let mut at: Vec<usize> = args.concurrency.iter().copied().filter(|&c| c == 8 || c == highest).collect();
        at.dedup();
        for (k, c, (label, rust_log, url)) in
            at.iter().flat_map(|&c| variants_of.into_iter().enumerate().map(move |(k, v)| (k, c, v)))
        {
            let serve = server::spawn(&bin, url, &log, rust_log)?;
            bench.tally = Tally::new(&serve.base());
            bench.pid = Some(serve.pid());
            let ing = Arc::new(workload::ingest(&format!("ingv{k}x{c}"), args.n, 0.10));
            let runs_of = [
                bench.ingest(label, c, ing).await?,
                bench.spend(label, c, args.n, false, &format!("spv{k}x{c}")).await?,
            ];
            for run in runs_of {
                eprintln!("{}", report::progress(&run));
                variants.push(run);
            }
            serve.stop();
        }
        variants.sort_by_key(|r| (r.concurrency, r.workload.clone()));
        writeln!(
            out,
            "## Variants: the request log and TLS to Postgres\n\n{}\n\
             RUST_LOG=warn turns off the line per webhook; `?sslmode=disable` in DATABASE_URL turns off TLS \
             between tally and Postgres, which the main run uses (sqlx's default sslmode=prefer).\n",
            report::plain(&variants)
        )?;
        runs.extend(variants);

        let rt_db = server::fresh_database(&args.database_url, "tally_bench_rt").await?;
        let bin2 = bin.clone();
        let log2 = log.clone();
        let table = round_trips(&args.database_url, &rt_db, &ceiling_url, 50, move |url| {
            let (bin, log) = (bin2.clone(), log2.clone());
            async move {
                let serve = server::spawn(&bin, &url, &log, None)?;
                Ok((serve.base(), Some(serve)))
            }
        })
        .await?;
        writeln!(out, "## Database round trips per operation\n\n{table}")?;
    }

    let mut pgbench_tps = Vec::new();
    if let Some(scripts) = &args.pgbench {
        let (table, tps) = pgbench(scripts, &ceiling_url, &args.concurrency, args.pgbench_seconds, args.users).await?;
        writeln!(out, "## Cross-check of the ceiling with pgbench\n\n{table}")?;
        pgbench_tps = tps;
    }
    if let Some(dir) = &args.stripe_sync_engine {
        let n_serial = args.n_serial.unwrap_or(args.n / 4);
        let rivals = rivals::sync_engine(dir, &args.database_url, &args.concurrency, args.n, n_serial).await?;
        runs.extend(rivals);
    }
    if args.pgbench.is_some() || args.stripe_sync_engine.is_some() {
        let table = report::side_by_side(&runs, &pgbench_tps);
        writeln!(out, "## Side by side: tally, pgbench and stripe-sync-engine (ingest)\n\n{table}")?;
    }

    report_and_check(args, &out, &runs)
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn machine(url: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let mut settings = Vec::new();
    for name in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "wal_sync_method",
        "full_page_writes",
        "shared_buffers",
        "max_connections",
    ] {
        let value: String =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("show {name}"))).fetch_one(&mut conn).await?;
        settings.push(format!("{name}={value}"));
    }
    let mut connects = Vec::new();
    for mode in ["prefer", "disable"] {
        let with_mode = format!("{url}{}sslmode={mode}", if url.contains('?') { '&' } else { '?' });
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let c = sqlx::PgConnection::connect(&with_mode).await?;
            times.push(t.elapsed());
            c.close().await?;
        }
        times.sort();
        connects.push(format!("{} ms with sslmode={mode}", report::ms(times[2])));
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0)))
        .unwrap_or(0);
    Ok(format!(
        "- {cpus} cores ({model}), {:.1} GiB memory, load average at the start {}\n- Postgres on the same machine: {}\n\
         - opening one sqlx connection to it (median of 5): {}\n",
        memory as f64 / 1024.0 / 1024.0,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        settings.join(", "),
        connects.join(", ")
    ))
}

/// Start-up on fresh and on already-migrated databases, SQLite and Postgres.
async fn startup_times(
    bin: &std::path::Path,
    server_url: &str,
    dir: &std::path::Path,
    runs: usize,
) -> anyhow::Result<String> {
    let log = dir.join("startup.log");
    let mut cases: Vec<(&str, Vec<Duration>)> = vec![
        ("SQLite, new file (creates and migrates it)", Vec::new()),
        ("SQLite, migrated file", Vec::new()),
        ("Postgres, empty database (migrates it)", Vec::new()),
        ("Postgres, migrated database (TLS: sslmode=prefer, the default)", Vec::new()),
        ("Postgres, migrated database, `?sslmode=disable` in DATABASE_URL (no TLS)", Vec::new()),
    ];
    for r in 0..runs {
        let path = dir.join(format!("startup-{r}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let sqlite = format!("sqlite://{}", path.display());
        let pg = server::fresh_database(server_url, "tally_bench_startup").await?;
        let plain = format!("{pg}{}sslmode=disable", if pg.contains('?') { '&' } else { '?' });
        for (i, url) in [&sqlite, &sqlite, &pg, &pg, &plain].into_iter().enumerate() {
            let serve = server::spawn(bin, url, &log, None)?;
            cases[i].1.push(serve.startup);
            serve.stop();
        }
    }
    let mut table = String::from("| database | median ms | min ms | max ms |\n|---|---:|---:|---:|\n");
    for (name, mut times) in cases {
        times.sort();
        let _ = writeln!(
            table,
            "| {name} | {} | {} | {} |",
            report::ms(times[times.len() / 2]),
            report::ms(times[0]),
            report::ms(*times.last().expect("runs > 0"))
        );
    }
    writeln!(
        table,
        "\n{runs} start-ups per case; the time runs from spawning `tally serve` to the first 200 of GET /healthz (polled every 0.5 ms)."
    )?;
    Ok(table)
}

/// Counts the client→Postgres round trips per operation, through a counting relay:
/// for tally (started by `start` on the relayed URL) and for the ceiling's transactions.
async fn round_trips<F, Fut>(
    server_url: &str,
    tally_db: &str,
    ceiling_url: &str,
    n: usize,
    start: F,
) -> anyhow::Result<String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(String, Option<server::Serve>)>>,
{
    let upstream = host_port(server_url)?;
    let addr = tokio::net::lookup_host(&upstream).await?.next().context("the database host resolves")?;
    let (port, counts) = proxy::start(addr).await?;
    let relayed = |url: &str| -> String {
        let url = url.replacen(&upstream, &format!("127.0.0.1:{port}"), 1);
        format!("{url}{}sslmode=disable", if url.contains('?') { '&' } else { '?' })
    };
    // Each operation is measured after as many of its kind, so statements are prepared.
    async fn measured(
        counts: &proxy::Counts,
        f: impl std::future::Future<Output = Result<(), String>>,
    ) -> anyhow::Result<proxy::Reading> {
        let before = counts.read();
        f.await.map_err(anyhow::Error::msg)?;
        // The pool returns a connection (with a ping) just after the answer.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(counts.read().since(&before))
    }
    let mut rows: Vec<(&str, &str, usize, proxy::Reading)> = Vec::new();

    let (base, serve) = start(relayed(tally_db)).await?;
    let bench = Bench::new(base, None, tally_db, None, 1000).await?;
    seed::seed_users(&bench.db, 1000).await?;
    let tally = bench.tally.clone();
    let ing = workload::ingest("rt", 2 * n, 0.0);
    let deliver = |range: std::ops::Range<usize>| {
        let (tally, ing) = (&tally, &ing);
        async move {
            for d in &ing.deliveries[range] {
                tally.deliver(&ing.events[d.event], d, &Outcomes::default()).await?;
            }
            Ok(())
        }
    };
    deliver(0..n).await.map_err(anyhow::Error::msg)?;
    rows.push(("tally", "webhook, new event", n, measured(&counts, deliver(n..2 * n)).await?));
    rows.push(("tally", "webhook, duplicate", n, measured(&counts, deliver(n..2 * n)).await?));
    // 32 deliveries at a time: batches of many sizes, so statements of many shapes, each
    // prepared once on each connection that meets it.
    let many = 20 * n;
    let concurrent = Arc::new(workload::ingest("rtm", 2 * many, 0.0));
    let concurrently = |range: std::ops::Range<usize>| {
        let (tally, concurrent) = (tally.clone(), concurrent.clone());
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for k in 0..32 {
                let (tally, concurrent, range) = (tally.clone(), concurrent.clone(), range.clone());
                tasks.spawn(async move {
                    for d in concurrent.deliveries[range].iter().skip(k).step_by(32) {
                        tally.deliver(&concurrent.events[d.event], d, &Outcomes::default()).await?;
                    }
                    Ok::<(), String>(())
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.map_err(|e| e.to_string())??;
            }
            Ok(())
        }
    };
    concurrently(0..many).await.map_err(anyhow::Error::msg)?;
    rows.push((
        "tally",
        "webhook, new event, 32 at a time",
        many,
        measured(&counts, concurrently(many..2 * many)).await?,
    ));
    for (name, hot) in [("spend (with its billing answer)", false), ("spend, hot user", true)] {
        let bodies =
            workload::spend_bodies(if hot { "rth" } else { "rts" }, 2 * n, if hot { 0 } else { 1000 }, HOT_USER);
        let spend = |range: std::ops::Range<usize>| {
            let (tally, bodies) = (&tally, &bodies);
            async move {
                for body in &bodies[range] {
                    tally.spend(body.clone()).await?;
                }
                Ok(())
            }
        };
        spend(0..n).await.map_err(anyhow::Error::msg)?;
        rows.push(("tally", name, n, measured(&counts, spend(n..2 * n)).await?));
    }
    let bodies = workload::reserve_bodies("rtr", 2 * n, 1000);
    let pairs = |range: std::ops::Range<usize>| {
        let (tally, bodies) = (&tally, &bodies);
        async move {
            for body in &bodies[range] {
                tally.reserve_commit(body.clone()).await?;
            }
            Ok(())
        }
    };
    pairs(0..n).await.map_err(anyhow::Error::msg)?;
    rows.push(("tally", "reserve + commit (two requests)", n, measured(&counts, pairs(n..2 * n)).await?));
    if let Some(serve) = serve {
        serve.stop();
    }
    bench.store.close().await;
    bench.db.close().await;

    let conns = ceiling::Conns::open(&relayed(ceiling_url), 1).await?;
    let events = workload::ingest("rtc", 2 * n, 0.0);
    let tag = rand::random::<u32>();
    {
        let mut conn = conns.of(0).lock().await;
        let conn = &mut *conn;
        for (i, e) in events.events.iter().enumerate().take(n) {
            ceiling::ingest(conn, &e.id, e.event_type, &e.body, &ceiling::event_user(i, 1000))
                .await
                .map_err(anyhow::Error::msg)?;
        }
        let reading = measured(&counts, async {
            for (i, e) in events.events.iter().enumerate().skip(n) {
                ceiling::ingest(conn, &e.id, e.event_type, &e.body, &ceiling::event_user(i, 1000)).await?;
            }
            Ok(())
        })
        .await?;
        rows.push(("ceiling", "event insert + user update", n, reading));
        for i in 0..n {
            ceiling::spend(conn, &workload::spread_user(i % 1000), 1, &format!("rtw{tag}-{i}"))
                .await
                .map_err(anyhow::Error::msg)?;
        }
        let reading = measured(&counts, async {
            for i in 0..n {
                ceiling::spend(conn, &workload::spread_user(i % 1000), 1, &format!("rt{tag}-{i}")).await?;
            }
            Ok(())
        })
        .await?;
        rows.push(("ceiling", "conditional debit + ledger insert", n, reading));
    }
    conns.close().await;

    let mut table = String::from(
        "| system | operation | round trips | statements | BEGIN/COMMIT | pool pings | prepares |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for (system, op, count, r) in rows {
        let per = |v: u64| v as f64 / count as f64;
        let _ = writeln!(
            table,
            "| {system} | {op} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            per(r.round_trips()),
            per(r.statements),
            per(r.queries),
            per(r.pings),
            per(r.parses)
        );
    }
    writeln!(
        table,
        "\nPer operation, counted by a relay in front of Postgres over {n} operations sent one at a time after {n} of \
         warm-up (32 at a time: {} after as many): each simple Query (sqlx sends BEGIN and COMMIT so) and each Sync \
         is one wait for the server; a Sync alone is a ping (sqlx's pool pings a connection when it is checked out, \
         and again when it is returned). A prepare is a Parse: a statement's text sent to be planned, one round \
         trip more, the first time a connection meets that text.",
        20 * n
    )?;
    Ok(table)
}

/// `host:port` of a postgres:// URL.
fn host_port(url: &str) -> anyhow::Result<String> {
    let rest = url.split_once("://").map(|(_, r)| r).context("a postgres:// URL")?;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Ok(if host.contains(':') { host.to_owned() } else { format!("{host}:5432") })
}

/// The pgbench scripts against the ceiling's tables: tps at each concurrency.
async fn pgbench(
    scripts: &std::path::Path,
    ceiling_url: &str,
    concurrency: &[usize],
    seconds: u64,
    users: usize,
) -> anyhow::Result<(String, Vec<(&'static str, usize, f64)>)> {
    let mut tps = Vec::new();
    let payload = workload::ingest("pgb", 3, 0.0).events.swap_remove(0).body;
    let mut table = String::from("| script | C | pgbench tps | latency average ms |\n|---|---:|---:|---:|\n");
    for script in ["ingest.sql", "spend_spread.sql", "spend_hot.sql"] {
        for &c in concurrency {
            let path = scripts.join(script);
            let output = std::process::Command::new("pgbench")
                .args([
                    "-n",
                    "-M",
                    "prepared",
                    "-T",
                    &seconds.to_string(),
                    "-c",
                    &c.to_string(),
                    "-j",
                    &c.min(2).to_string(),
                ])
                .arg("-D")
                .arg(format!("users={users}"))
                .arg("-D")
                .arg(format!("payload={payload}"))
                .arg("-f")
                .arg(&path)
                .arg(ceiling_url)
                .output()
                .context("cannot run pgbench")?;
            let text = String::from_utf8_lossy(&output.stdout);
            if !output.status.success() {
                bail!("pgbench {} failed: {}{}", path.display(), text, String::from_utf8_lossy(&output.stderr));
            }
            let find = |key: &str| {
                text.lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split('=').nth(1))
                    .and_then(|v| v.split_whitespace().next())
                    .unwrap_or("?")
                    .to_owned()
            };
            let number = |key: &str, digits: usize| {
                find(key).parse::<f64>().map_or_else(|_| "?".to_owned(), |v| format!("{v:.digits$}"))
            };
            if let Ok(v) = find("tps").parse::<f64>() {
                tps.push((script, c, v));
            }
            let line = format!("| {script} | {c} | {} | {} |", number("tps", 0), number("latency average", 2));
            eprintln!("{line}");
            writeln!(table, "{line}")?;
        }
    }
    Ok((table, tps))
}

/// Requests per transaction between two readings of the writer's counters.
fn per_commit(before: Option<(f64, f64)>, after: Option<(f64, f64)>) -> Option<f64> {
    let ((jobs0, batches0), (jobs1, batches1)) = (before?, after?);
    (batches1 > batches0).then(|| (jobs1 - jobs0) / (batches1 - batches0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_of_postgres_urls() {
        assert_eq!(host_port("postgres://postgres@127.0.0.1:5432/test").unwrap(), "127.0.0.1:5432");
        assert_eq!(host_port("postgresql://u:p@db.local/x?sslmode=require").unwrap(), "db.local:5432");
        assert_eq!(host_port("postgres://localhost:6543").unwrap(), "localhost:6543");
    }

    #[test]
    fn ingest_sends_every_event_once_then_its_duplicates() {
        let ing = workload::ingest("t", 30, 0.1);
        assert_eq!(ing.events.len(), 30);
        assert_eq!(ing.duplicates, 3);
        assert_eq!(ing.deliveries.len(), 33);
        // Originals go out in order; a re-delivery only after its original.
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<usize> = ing.deliveries.iter().filter(|d| seen.insert(d.event)).map(|d| d.event).collect();
        assert_eq!(firsts, (0..30).collect::<Vec<_>>());
        let kinds: std::collections::HashSet<_> = ing.events.iter().map(|e| e.event_type).collect();
        assert_eq!(kinds.len(), 3);
        assert!(ing.mean_body_bytes() > 2_500, "{}", ing.mean_body_bytes());
    }
}
