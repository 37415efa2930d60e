//! `tally serve` killed with SIGKILL five times while host-app clients send 200 spends,
//! restarted each time on the same database, the clients retrying as a host app does
//! (same idempotency key, on a connection error or a 503): every spend lands exactly
//! once, the balance is the start less the amounts, and `tally audit` passes. On
//! SQLite, and on Postgres (tally_testdb's: TEST_DATABASE_URL or a private cluster).

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{AnyConnection, AssertSqlSafe, Connection};

const API_KEY: &str = "sigkill-test-key";
const USER: &str = "spender";
const SPENDS: usize = 200;
const KILLS: usize = 5;
const CLIENTS: usize = 4;
/// What the operator grants before the run: far more than 200 spends take.
const GRANT: i64 = 100_000;
/// The whole run, kills and restarts included, must end within this.
const DEADLINE: Duration = Duration::from_secs(45);

/// The amount of spend `i`: varied, so that a spend landing twice or not at all shows
/// in the balance as well as in the count.
fn amount(i: usize) -> i64 {
    1 + (i as i64 * 7) % 13
}

fn tally(dir: &Path, database_url: &str, port: u16) -> Command {
    support::tally(dir, database_url, port, API_KEY)
}

fn serve(dir: &Path, database_url: &str, port: u16) -> Child {
    tally(dir, database_url, port).arg("serve").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

/// What the clients and the killer tell each other and the report.
#[derive(Default)]
struct Progress {
    done: AtomicUsize,
    retries: AtomicUsize,
}

/// Sends spend `i` until tally answers 200, retrying the same key on a connection
/// error or a 503 as a host app would. Anything else is a failure of the test.
async fn spend_until_done(client: &reqwest::Client, base: &str, i: usize, progress: &Progress, started: Instant) {
    let body = json!({ "user_id": USER, "amount": amount(i), "idempotency_key": format!("kill-{i}"), "reason": "run" });
    loop {
        assert!(started.elapsed() < DEADLINE, "spend {i} still not done after {DEADLINE:?}");
        let sent = client.post(format!("{base}/api/credits/spend")).bearer_auth(API_KEY).json(&body).send().await;
        match sent {
            Ok(response) if response.status() == 200 => return,
            Ok(response) if response.status() == 503 => {}
            Ok(response) => {
                let status = response.status();
                panic!("spend {i}: {status} {}", response.text().await.unwrap_or_default());
            }
            Err(_) => {}
        }
        progress.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// Kills the server at `KILLS` random points of the run and restarts it each time;
/// returns the server running at the end and how many spends were done at each kill.
fn kill_and_restart(
    mut child: Child,
    dir: &Path,
    database_url: &str,
    port: u16,
    progress: &Progress,
    started: Instant,
) -> (Child, Vec<usize>) {
    let mut thresholds: Vec<usize> = (0..KILLS).map(|_| rand::random_range(10..SPENDS - 40)).collect();
    thresholds.sort_unstable();
    let mut done_at_kills: Vec<usize> = Vec::new();
    for threshold in thresholds {
        // Each restarted server serves a few spends before it is killed in turn.
        let threshold = threshold.max(done_at_kills.last().map_or(0, |done| done + 5));
        while progress.done.load(Ordering::Relaxed) < threshold {
            assert!(
                started.elapsed() < DEADLINE,
                "the run stalled at {} spends",
                progress.done.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Somewhere inside a request, a batch or a commit.
        std::thread::sleep(Duration::from_micros(rand::random_range(0..8_000)));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        done_at_kills.push(progress.done.load(Ordering::Relaxed));
        child = serve(dir, database_url, port);
    }
    (child, done_at_kills)
}

/// What the user's ledger holds of spends: (spends, i.e. distinct references; rows
/// that repeat a reference in the same bucket; the sum of their deltas). A spend that
/// empties the plan bucket is two rows, one per bucket, under one reference.
async fn spend_rows(database_url: &str) -> (i64, i64, i64) {
    sqlx::any::install_default_drivers();
    let url = match database_url.starts_with("postgres") {
        true => tally_store::postgres::url_in_schema(database_url, tally_store::postgres::DEFAULT_SCHEMA),
        false => database_url.to_owned(),
    };
    let mut conn = AnyConnection::connect(&url).await.unwrap();
    let spends = format!("from ledger where user_id = '{USER}' and reference like 'spend:%'");
    let sql = format!(
        "select count(distinct reference), count(*) - (select count(*) from \
         (select distinct reference, bucket {spends}) as once), cast(coalesce(sum(delta), 0) as bigint) {spends}"
    );
    let row: (i64, i64, i64) = sqlx::query_as(AssertSqlSafe(sql)).fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    row
}

async fn billing(client: &reqwest::Client, base: &str) -> Value {
    let started = Instant::now();
    loop {
        let answer = client.get(format!("{base}/api/users/{USER}/billing")).bearer_auth(API_KEY).send().await;
        if let Ok(response) = answer
            && response.status() == 200
        {
            return response.json().await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "tally serve did not become healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn run(backend: &str, dir: &Path, database_url: &str) {
    let started = Instant::now();
    let port = support::free_port();
    let granted = tally(dir, database_url, port)
        .args(["credits", "grant", USER, &GRANT.to_string(), "--bucket", "topup", "--reason", "seed", "--key", "seed"])
        .output()
        .unwrap();
    assert!(granted.status.success(), "{}", String::from_utf8_lossy(&granted.stderr));
    let child = serve(dir, database_url, port);
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let before = runtime.block_on(billing(&client, &base));
    let start = before["credits"].as_i64().unwrap();

    let progress = Arc::new(Progress::default());
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, base, progress, next) = (client.clone(), base.clone(), progress.clone(), next.clone());
            runtime.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= SPENDS {
                        return;
                    }
                    spend_until_done(&client, &base, i, &progress, started).await;
                    progress.done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let (mut child, done_at_kills) = kill_and_restart(child, dir, database_url, port, &progress, started);
    runtime.block_on(async {
        for client in clients {
            client.await.unwrap();
        }
    });

    let after = runtime.block_on(billing(&client, &base));
    let spent: i64 = (0..SPENDS).map(amount).sum();
    let (spends, repeated, sum) = runtime.block_on(spend_rows(database_url));
    let audit = tally(dir, database_url, port).arg("audit").output().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let retries = progress.retries.load(Ordering::Relaxed);
    println!(
        "{backend}: {KILLS} kills (at {done_at_kills:?} spends done), {retries} retries, {:.2} s",
        started.elapsed().as_secs_f64()
    );

    assert_eq!(done_at_kills.len(), KILLS);
    assert!(done_at_kills.iter().all(|&done| done < SPENDS), "every kill fell inside the run: {done_at_kills:?}");
    assert_eq!(spends, SPENDS as i64, "every spend is in the ledger");
    assert_eq!(repeated, 0, "no spend took from a bucket twice");
    assert_eq!(sum, -spent, "the rows take exactly the amounts");
    assert_eq!(after["credits"].as_i64().unwrap(), start - spent, "{after}");
    assert!(audit.status.success(), "tally audit: {}", String::from_utf8_lossy(&audit.stdout));
    assert!(started.elapsed() < DEADLINE);
}

#[test]
fn sigkill_five_times_during_200_spends_on_sqlite_loses_and_doubles_nothing() {
    let dir = support::work_dir("sigkill");
    let url = format!("sqlite://{}", dir.join("tally.db").display());
    run("sqlite", &dir, &url);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigkill_five_times_during_200_spends_on_postgres_loses_and_doubles_nothing() {
    // Its own database, dropped at the end, passed or failed; without Postgres this
    // panics, saying the test is skipped.
    let db = tally_testdb::TestDatabase::create();
    let dir = support::work_dir("sigkill");
    run("postgres", &dir, &db.url);
    let _ = std::fs::remove_dir_all(&dir);
}
