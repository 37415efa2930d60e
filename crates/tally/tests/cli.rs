//! The `tally` binary as a newcomer uses it: `serve` with no configuration at all, then
//! a customer's whole life driven by `tally trigger`, and the exit codes of mistakes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const API_KEY: &str = "cli-test-key";

struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `tally` in `dir`, with none of the caller's Stripe or tally settings.
fn tally(dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("STRIPE_")
            || name.starts_with("TALLY_")
            || name == "DATABASE_URL"
            || name.starts_with("AUTH_JWT")
            || name == "AUTH_JWKS_URL"
        {
            cmd.env_remove(name);
        }
    }
    cmd.env("TALLY_BIND", format!("127.0.0.1:{port}")).env("TALLY_API_KEY", API_KEY);
    cmd
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_server() -> Server {
    start_server_with(None)
}

/// A fresh working directory, with `tally.toml` in it when a catalogue is given.
fn work_dir(catalogue: Option<&str>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tally-cli-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(text) = catalogue {
        std::fs::write(dir.join("tally.toml"), text).unwrap();
    }
    dir
}

/// `tally serve` in a fresh directory; `catalogue` is written there as `tally.toml`.
fn start_server_with(catalogue: Option<&str>) -> Server {
    let dir = work_dir(catalogue);
    let port = free_port();
    let child = tally(&dir, port).arg("serve").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let server = Server { child, dir, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(port, "/healthz").is_none() {
        assert!(Instant::now() < deadline, "tally serve did not become healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// A tiny blocking GET, so the test needs no HTTP client crate.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

fn billing(server: &Server, user: &str) -> serde_json::Value {
    let body = http_get(server.port, &format!("/api/users/{user}/billing")).expect("billing answers");
    serde_json::from_str(&body).unwrap()
}

fn trigger(server: &Server, args: &[&str]) -> Output {
    let output = tally(&server.dir, server.port).arg("trigger").args(args).output().unwrap();
    assert!(output.status.success(), "trigger {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn balance(server: &Server, user: &str) -> (String, i64, i64) {
    let b = billing(server, user);
    (b["tier"].as_str().unwrap().to_owned(), b["plan_credits"].as_i64().unwrap(), b["topup_credits"].as_i64().unwrap())
}

#[test]
fn a_customers_whole_life_runs_offline_with_trigger() {
    let server = start_server();
    assert!(server.dir.join("tally.db").exists(), "serve creates the embedded database");
    assert_eq!(balance(&server, "alice"), ("free".into(), 100, 0));

    trigger(&server, &["checkout.session.completed", "--user", "alice", "--item", "pro"]);
    assert_eq!(balance(&server, "alice"), ("pro".into(), 2_500, 0), "checkout and first invoice grant once");

    trigger(&server, &["checkout.session.completed", "--user", "alice", "--item", "topup"]);
    trigger(&server, &["invoice.paid", "--user", "alice", "--api-version", "2023"]);
    assert_eq!(balance(&server, "alice"), ("pro".into(), 2_500, 1_000));

    trigger(&server, &["customer.subscription.updated", "--user", "alice", "--item", "enterprise"]);
    assert_eq!(balance(&server, "alice"), ("enterprise".into(), 10_000, 1_000));

    trigger(&server, &["charge.refunded", "--user", "alice"]);
    trigger(&server, &["customer.subscription.deleted", "--user", "alice"]);
    assert_eq!(balance(&server, "alice"), ("free".into(), 100, 0));

    trigger(&server, &["checkout.session.async_payment_succeeded", "--user", "bob"]);
    assert_eq!(balance(&server, "bob"), ("free".into(), 100, 1_000));
}

/// `tally serve` as a newcomer first runs it: no configuration, not even TALLY_API_KEY.
/// What it prints says where to go next; `/metrics` lists every series at zero; and the
/// README's first curl (`curl localhost:3000/api/catalogue`) answers.
#[test]
fn the_first_run_says_what_to_do_next_and_metrics_start_at_zero() {
    let dir = work_dir(None);
    let port = free_port();
    let out = dir.join("serve.out");
    let mut child = tally(&dir, port)
        .env_remove("TALLY_API_KEY")
        .arg("serve")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(port, "/readyz").is_none() {
        assert!(Instant::now() < deadline, "tally serve did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = http_get(port, "/metrics").expect("/metrics answers");
    let catalogue = http_get(port, "/api/catalogue").expect("the README's first curl answers");
    let closed = http_status(port, "/api/users/alice/billing");
    let _ = child.kill();
    let _ = child.wait();
    let printed = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    for line in [
        format!("tally listening on http://127.0.0.1:{port}"),
        "billing page:       http://localhost:3000/dashboard/billing".to_owned(),
        format!(
            "TALLY_PUBLIC_URL names port 3000, but tally listens on {port}: set TALLY_PUBLIC_URL=http://localhost:{port}"
        ),
        format!("dev sign-in:        http://localhost:{port}/dev/login?user=alice"),
        "TALLY_API_KEY is unset, so the host-app routes (/api/users/..., /api/credits/...) are closed (401)".to_owned(),
        "export TALLY_API_KEY=dev-key".to_owned(),
        "dev webhook secret: whsec_dev_".to_owned(),
        "kept in the SQLite file tally.db (settings key dev_webhook_secret); `tally trigger` signs with it".to_owned(),
    ] {
        assert!(printed.contains(&line), "missing {line:?} in:\n{printed}");
    }
    assert_eq!(closed, Some(401), "host-app routes are closed without TALLY_API_KEY");
    let catalogue: serde_json::Value = serde_json::from_str(&catalogue).unwrap();
    assert!(catalogue.to_string().contains("\"pro\""), "{catalogue}");

    // Every series tally records, at zero before anything happened.
    for series in [
        "tally_webhooks_total{outcome=\"applied\"} 0",
        "tally_webhooks_total{outcome=\"unavailable\"} 0",
        "tally_webhooks_total{outcome=\"refused\"} 0",
        "tally_webhook_seconds_count 0",
        "tally_credit_operations_total{operation=\"spend\",result=\"ok\"} 0",
        "tally_credit_operations_total{operation=\"release\",result=\"error\"} 0",
        "tally_stripe_errors_total 0",
        "tally_connections_refused_total 0",
        "tally_connections_shed_total 0",
        "tally_write_batches_total{result=\"committed\"} 0",
        "tally_write_batches_total{result=\"unavailable\"} 0",
        "tally_write_jobs_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == series), "missing {series:?} in:\n{metrics}");
    }
    // And every metric named in the code, so that a new one cannot be left out.
    for (kind, name) in metric_names_in_code() {
        let samples: Vec<&str> = metrics
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with([' ', '{', '_'])))
            .collect();
        assert!(!samples.is_empty(), "{kind} {name} is not listed at start:\n{metrics}");
        assert!(metrics.contains(&format!("# HELP {name} ")), "{name} has no description");
        if kind == "counter" {
            assert!(samples.iter().all(|l| l.ends_with(" 0")), "{name} is not at zero: {samples:?}");
        }
    }
}

/// `(kind, name)` of every `metrics::counter!("...")`, `histogram!` and `gauge!` in the
/// workspace's sources.
fn metric_names_in_code() -> Vec<(&'static str, String)> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut names = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(crates).unwrap().map(|e| e.unwrap().path().join("src")).collect();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for path in entries.map(|e| e.unwrap().path()) {
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap_or_default();
            for kind in ["counter", "histogram", "gauge"] {
                for (at, _) in source.match_indices(&format!("metrics::{kind}!(\"")) {
                    let rest = &source[at + kind.len() + 12..];
                    let name = rest.split('"').next().unwrap().to_owned();
                    if !names.contains(&(kind, name.clone())) {
                        names.push((kind, name));
                    }
                }
            }
        }
    }
    assert!(names.len() >= 9, "found {names:?}");
    names
}

/// The status code of a GET, with no key.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

#[test]
fn mistakes_exit_with_one_line() {
    let server = start_server();
    let usage = tally(&server.dir, server.port).arg("no-such-command").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));

    let unknown = tally(&server.dir, server.port).args(["trigger", "plan.created"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&unknown.stderr).trim().lines().count(), 1);

    let no_subscription =
        tally(&server.dir, server.port).args(["trigger", "invoice.paid", "--user", "nobody"]).output().unwrap();
    assert_eq!(no_subscription.status.code(), Some(1));

    let bad_bind = tally(&server.dir, server.port).env("TALLY_BIND", "nowhere").arg("serve").output().unwrap();
    assert_eq!(bad_bind.status.code(), Some(1));
    let message = String::from_utf8_lossy(&bad_bind.stderr);
    assert!(message.contains("TALLY_BIND"), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "{message}");
}

#[test]
fn operators_grant_idempotently_and_never_below_zero() {
    let server = start_server();
    let run = |args: &[&str]| tally(&server.dir, server.port).arg("credits").args(args).output().unwrap();
    let granted = run(&["grant", "carl", "500", "--bucket", "topup", "--reason", "goodwill", "--key", "ticket-7"]);
    assert!(granted.status.success(), "{}", String::from_utf8_lossy(&granted.stderr));
    run(&["grant", "carl", "500", "--bucket", "topup", "--reason", "goodwill", "--key", "ticket-7"]);
    assert_eq!(balance(&server, "carl"), ("free".into(), 100, 500), "the same key grants once");

    let taken = run(&["grant", "carl", "-200", "--bucket", "topup", "--reason", "correction"]);
    assert!(taken.status.success());
    assert_eq!(balance(&server, "carl"), ("free".into(), 100, 300));

    let too_much = run(&["grant", "carl", "-301", "--bucket", "topup", "--reason", "oops"]);
    assert_eq!(too_much.status.code(), Some(1));
    assert_eq!(balance(&server, "carl"), ("free".into(), 100, 300));

    let shown = run(&["show", "carl"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("\"topup_credits\": 300") && text.contains("grant:ticket-7"), "{text}");
}

#[test]
fn audit_passes_on_healthy_books_and_fails_on_broken_ones() {
    let server = start_server();
    trigger(&server, &["checkout.session.completed", "--user", "alice", "--item", "pro"]);
    trigger(&server, &["checkout.session.completed", "--user", "alice", "--item", "topup"]);
    let audit = || tally(&server.dir, server.port).arg("audit").output().unwrap();
    let healthy = audit();
    assert!(healthy.status.success(), "{}", String::from_utf8_lossy(&healthy.stdout));

    let replay = tally(&server.dir, server.port).args(["replay", "--unmatched"]).output().unwrap();
    assert!(replay.status.success());
    assert!(String::from_utf8_lossy(&replay.stdout).contains("replayed 0 event(s)"));
    let missing = tally(&server.dir, server.port).args(["replay", "evt_missing"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));

    // Someone edits a balance by hand: the books no longer balance.
    let url = format!("sqlite://{}", server.dir.join("tally.db").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("update accounts set topup_credits = topup_credits + 5 where user_id = 'alice'")
            .execute(&mut conn)
            .await
            .unwrap();
    });
    let broken = audit();
    assert_eq!(broken.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&broken.stdout).contains("alice: balances differ"));
}

/// A catalogue of the app's own, as a user writes it.
const SHOP: &str = r#"# Our plans
[free]
credits = 10

[plans.basic]
name = "Basic"
credits = 200
rank = 1
prices = [
  { id = "price_basic_m", amount = 500, currency = "usd", interval = "month" },
  { id = "price_basic_y", amount = 5000, currency = "usd", interval = "year" },
]

[packs.refill]
name = "Refill"
credits = 50
prices = [{ id = "price_refill", amount = 300, currency = "usd" }]
"#;

#[test]
fn a_catalogue_file_sells_its_own_plans_through_trigger() {
    let server = start_server_with(Some(SHOP));
    assert_eq!(balance(&server, "dana"), ("free".into(), 10, 0));
    trigger(&server, &["checkout.session.completed", "--user", "dana", "--item", "basic", "--interval", "year"]);
    assert_eq!(balance(&server, "dana"), ("basic".into(), 200, 0));
    trigger(&server, &["checkout.session.completed", "--user", "dana", "--item", "refill"]);
    assert_eq!(balance(&server, "dana"), ("basic".into(), 200, 50));
    let b = billing(&server, "dana");
    let period = b["subscription"]["current_period_end"].as_i64().unwrap() - tally_now();
    assert!(period > 360 * 86_400, "a yearly period: {b}");

    let shown = tally(&server.dir, server.port).arg("catalogue").output().unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("plan basic (Basic): 200 credits a month, rank 1"), "{text}");
    assert!(text.contains("price_basic_y  $50.00/year"), "{text}");
    let json = tally(&server.dir, server.port).args(["catalogue", "--json"]).output().unwrap();
    let catalogue: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(catalogue["packs"][0]["id"], "refill");
    let unknown = tally(&server.dir, server.port)
        .args(["trigger", "checkout.session.completed", "--item", "pro"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1), "pro is not in this catalogue");
}

#[test]
fn catalogue_mistakes_stop_start_up_with_one_line_naming_the_key() {
    let port = free_port();
    // (the file, extra environment, words the one-line message must hold)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 5] = [
        (
            &SHOP.replace("credits = 200", "credit = 200"),
            &[],
            &["TALLY_CONFIG", "line 7", "plans.basic.credit", "unknown key"],
        ),
        (&SHOP.replace("credits = 50", "credits = -5"), &[], &["line 16", "packs.refill.credits"]),
        (&SHOP.replace("price_refill", "price_basic_m"), &[], &["packs.refill.prices[0].id", "duplicate price id"]),
        (&SHOP.replace("[packs.refill]", "[plans.refill]"), &[], &["plans.refill"]),
        (SHOP, &[("STRIPE_PRO_PRICE_ID", "price_1")], &["STRIPE_PRO_PRICE_ID", "must not be set"]),
    ];
    for (text, env, words) in cases {
        let dir = work_dir(Some(text));
        for command in [&["serve"][..], &["catalogue"]] {
            let mut cmd = tally(&dir, port);
            cmd.args(command).envs(env.iter().copied());
            let output = cmd.output().unwrap();
            let message = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(1), "{command:?} {words:?}: {message}");
            assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
            for word in words {
                assert!(message.contains(word), "{word:?} in {message}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let dir = work_dir(None);
    let missing = tally(&dir, port).env("TALLY_CONFIG", "nowhere.toml").arg("catalogue").output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("TALLY_CONFIG: cannot read nowhere.toml"));
}

fn tally_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn a_catalogue_that_drops_a_price_is_warned_at_start_and_audited() {
    let server = start_server();
    trigger(&server, &["checkout.session.completed", "--user", "olga", "--item", "pro"]);
    let dir = server.dir.clone();
    drop_keeping_dir(server);
    // The app moves to its own catalogue, which no longer names the default Pro price.
    std::fs::write(dir.join("tally.toml"), SHOP).unwrap();
    let port = free_port();
    let log = dir.join("serve.log");
    let mut child = tally(&dir, port)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(port, "/healthz").is_none() {
        assert!(Instant::now() < deadline, "tally serve did not become healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let warning = std::fs::read_to_string(&log).unwrap();
    assert!(
        warning.contains("1 live subscriptions are on prices the catalogue does not name (price_tally_pro)"),
        "{warning}"
    );
    assert!(warning.contains("tiers the catalogue does not have: pro"), "{warning}");

    let audit = tally(&dir, port).arg("audit").output().unwrap();
    assert_eq!(audit.status.code(), Some(1));
    let listed = String::from_utf8_lossy(&audit.stdout);
    assert!(listed.contains("price price_tally_pro: 1 live subscriptions"), "{listed}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stops a server but keeps its directory (and database) for the next step.
fn drop_keeping_dir(mut server: Server) {
    let _ = server.child.kill();
    let _ = server.child.wait();
    server.dir = std::env::temp_dir().join("tally-cli-nothing-to-remove");
}
