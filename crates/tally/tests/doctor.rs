//! `tally doctor` as an operator runs it: the real binary against a local fake of the
//! Stripe endpoints it reads, one case per finding, and the records-based checks on
//! SQLite and on Postgres (tally_testdb's).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tally_stripe::api::HANDLED_EVENTS;

const KEY: &str = "sk_test_doctor_secret_key";
const SECRET: &str = "whsec_doctorSigningSecret123";
const PUBLIC_URL: &str = "https://billing.example.com";

const CATALOGUE: &str = r#"
[free]
credits = 100

[plans.pro]
name = "Pro"
credits = 2500
rank = 1
prices = [
  { id = "price_pro_m", amount = 4900, currency = "usd", interval = "month" },
  { id = "price_pro_y", amount = 49000, currency = "usd", interval = "year" },
]
legacy_prices = ["price_pro_2024"]

[packs.small]
name = "1,000 credits"
credits = 1000
prices = [{ id = "price_small", amount = 2000, currency = "usd" }]
"#;

/// What the fake Stripe account holds; each case changes one thing of the good one.
#[derive(Clone)]
struct Account {
    livemode: bool,
    key_refused: bool,
    prices: Vec<Value>,
    endpoints: Vec<Value>,
    portals: Vec<Value>,
}

fn price(id: &str, amount: i64, interval: Option<&str>) -> Value {
    json!({
        "id": id, "object": "price", "active": true, "livemode": false, "unit_amount": amount,
        "currency": "usd", "recurring": interval.map(|i| json!({"interval": i, "interval_count": 1})),
    })
}

fn endpoint(id: &str, url: &str, events: &[&str]) -> Value {
    json!({
        "id": id, "object": "webhook_endpoint", "url": url, "enabled_events": events,
        "status": "enabled", "api_version": "2025-03-31.basil", "livemode": false,
    })
}

fn good_account() -> Account {
    let ours = format!("{PUBLIC_URL}/api/webhooks/stripe");
    Account {
        livemode: false,
        key_refused: false,
        prices: vec![
            price("price_pro_m", 4900, Some("month")),
            price("price_pro_y", 49000, Some("year")),
            json!({"id": "price_pro_2024", "object": "price", "active": false, "livemode": false,
                   "unit_amount": 3900, "currency": "usd", "recurring": {"interval": "month"}}),
            price("price_small", 2000, None),
        ],
        // Ours comes last, on the second page (two to a page), past endpoints of other apps.
        endpoints: vec![
            endpoint("we_other1", "https://other.example.com/hook", &["*"]),
            endpoint("we_other2", "https://other.example.com/hook2", &["invoice.paid"]),
            endpoint("we_ours", &ours, &HANDLED_EVENTS),
        ],
        portals: vec![json!({"id": "bpc_1", "object": "billing_portal.configuration", "active": true,
                             "is_default": true, "livemode": false})],
    }
}

type Shared = Arc<Mutex<Account>>;

fn refused(headers: &HeaderMap, account: &Account) -> Option<Response> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if account.key_refused || !auth.starts_with("Bearer sk_") {
        let body =
            json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****"}});
        return Some((StatusCode::UNAUTHORIZED, axum::Json(body)).into_response());
    }
    None
}

/// A Stripe list object, two to a page, paged by `starting_after`.
fn list(all: &[Value], query: &std::collections::HashMap<String, String>) -> Response {
    let start = match query.get("starting_after") {
        Some(after) => all.iter().position(|o| o["id"] == after.as_str()).map_or(all.len(), |i| i + 1),
        None => 0,
    };
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(10).min(2);
    let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
    let has_more = start + page.len() < all.len();
    axum::Json(json!({"object": "list", "data": page, "has_more": has_more, "url": "/v1/..."})).into_response()
}

async fn balance(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let account = s.lock().unwrap().clone();
    refused(&headers, &account).unwrap_or_else(|| {
        axum::Json(json!({"object": "balance", "livemode": account.livemode, "available": [], "pending": []}))
            .into_response()
    })
}

async fn retrieve_price(State(s): State<Shared>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> Response {
    let account = s.lock().unwrap().clone();
    if let Some(refusal) = refused(&headers, &account) {
        return refusal;
    }
    match account.prices.iter().find(|p| p["id"] == id.as_str()) {
        Some(p) => axum::Json(p.clone()).into_response(),
        None => {
            let body = json!({"error": {"type": "invalid_request_error", "code": "resource_missing",
                                        "message": format!("No such price: '{id}'")}});
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
        }
    }
}

async fn webhook_endpoints(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let account = s.lock().unwrap().clone();
    refused(&headers, &account).unwrap_or_else(|| list(&account.endpoints, &q))
}

async fn portal_configurations(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let account = s.lock().unwrap().clone();
    refused(&headers, &account).unwrap_or_else(|| list(&account.portals, &q))
}

/// The fake, served on its own runtime for as long as the value lives.
struct FakeStripe {
    account: Shared,
    url: String,
    _runtime: tokio::runtime::Runtime,
}

impl FakeStripe {
    fn start() -> FakeStripe {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let account: Shared = Arc::new(Mutex::new(good_account()));
        let app = Router::new()
            .route("/v1/balance", get(balance))
            .route("/v1/prices/{id}", get(retrieve_price))
            .route("/v1/webhook_endpoints", get(webhook_endpoints))
            .route("/v1/billing_portal/configurations", get(portal_configurations))
            .with_state(account.clone());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeStripe { account, url, _runtime: runtime }
    }

    fn set(&self, change: impl FnOnce(&mut Account)) {
        let mut account = good_account();
        change(&mut account);
        *self.account.lock().unwrap() = account;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh working directory holding the catalogue file.
fn work_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tally-doctor-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tally.toml"), CATALOGUE).unwrap();
    dir
}

/// `tally` in `dir`, with none of the caller's Stripe or tally settings.
fn tally(dir: &Path) -> Command {
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
    cmd.env("TALLY_BIND", format!("127.0.0.1:{}", free_port()));
    cmd
}

/// What one run of `tally doctor` said.
struct Report {
    code: Option<i32>,
    stdout: String,
}

impl Report {
    /// The status word and the whole line of the check `name`.
    fn check(&self, name: &str) -> Option<(&str, &str)> {
        self.stdout.lines().find_map(|line| {
            let (status, rest) = line.split_once(' ')?;
            rest.trim_start().strip_prefix(name)?.strip_prefix(':').map(|_| (status, line))
        })
    }

    fn expect(&self, name: &str, status: &str, words: &[&str]) {
        let (found, line) = self.check(name).unwrap_or_else(|| panic!("no {name} line in:\n{}", self.stdout));
        assert_eq!(found, status, "{line}\n{}", self.stdout);
        for word in words {
            assert!(line.contains(word), "{word:?} in {line}");
        }
        if status != "ok" {
            assert!(line.contains("; fix: "), "a fix: {line}");
        }
    }
}

fn doctor(dir: &Path, env: &[(&str, &str)]) -> Report {
    let output = tally(dir).arg("doctor").envs(env.iter().copied()).stderr(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    Report { code: output.status.code(), stdout }
}

fn migrate(dir: &Path, database_url: &str) {
    let out = tally(dir).arg("migrate").env("DATABASE_URL", database_url).output().unwrap();
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
}

/// A migrated SQLite file in `dir` and the settings of a correct setup against `fake`.
fn good_setup(fake: &FakeStripe) -> (PathBuf, Vec<(&'static str, String)>) {
    let dir = work_dir();
    let database_url = format!("sqlite://{}", dir.join("tally.db").display());
    migrate(&dir, &database_url);
    let env = vec![
        ("DATABASE_URL", database_url),
        ("STRIPE_SECRET_KEY", KEY.to_owned()),
        ("STRIPE_API_BASE", fake.url.clone()),
        ("STRIPE_WEBHOOK_SECRET", SECRET.to_owned()),
        ("TALLY_PUBLIC_URL", PUBLIC_URL.to_owned()),
    ];
    (dir, env)
}

fn with<'a>(env: &'a [(&'static str, String)], extra: &[(&'static str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> =
        env.iter().filter(|(k, _)| !extra.iter().any(|(e, _)| e == k)).map(|(k, v)| (*k, v.as_str())).collect();
    all.extend(extra.iter().copied());
    all
}

const ALL_CHECKS: [&str; 13] = [
    "config",
    "catalogue",
    "public_url",
    "webhook_secret",
    "database",
    "signature_failures",
    "unmatched_events",
    "failed_events",
    "catalogue_drift",
    "stripe_key",
    "stripe_prices",
    "webhook_endpoint",
    "customer_portal",
];

#[test]
fn a_correct_setup_is_all_ok_and_exits_0() {
    let fake = FakeStripe::start();
    let (dir, env) = good_setup(&fake);
    let report = doctor(&dir, &with(&env, &[]));
    assert_eq!(report.code, Some(0), "{}", report.stdout);
    for name in ALL_CHECKS {
        report.expect(name, "ok", &[]);
    }
    report.expect("stripe_key", "ok", &["sk_test_...", "test mode"]);
    report.expect("stripe_prices", "ok", &["4 catalogue price(s)"]);
    report.expect("webhook_endpoint", "ok", &["we_ours", "2025-03-31.basil"]);
    assert!(!report.stdout.contains(KEY) && !report.stdout.contains(SECRET), "no secret printed");

    let json = tally(&dir).args(["doctor", "--json"]).envs(with(&env, &[])).stderr(Stdio::null()).output().unwrap();
    assert_eq!(json.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    let names: Vec<&str> = doc["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ALL_CHECKS);
    assert!(doc["checks"].as_array().unwrap().iter().all(|c| c["status"] == "ok" && c["fix"].is_null()));

    // A wildcard endpoint sends every event.
    fake.set(|a| a.endpoints[2]["enabled_events"] = json!(["*"]));
    assert_eq!(doctor(&dir, &with(&env, &[])).code, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn each_stripe_finding_is_an_error_line_with_its_fix() {
    let fake = FakeStripe::start();
    let (dir, env) = good_setup(&fake);
    type Change = fn(&mut Account);
    let cases: [(&str, Change, &str, &[&str]); 11] = [
        ("key refused", |a| a.key_refused = true, "stripe_key", &["refused the key (sk_test_...)", "Invalid API Key"]),
        ("wrong mode", |a| a.prices[0]["livemode"] = json!(true), "stripe_prices", &["price_pro_m", "live-mode price"]),
        (
            "price missing",
            |a| {
                a.prices.remove(3);
            },
            "stripe_prices",
            &["price_small (small): no such price in test mode"],
        ),
        ("price inactive", |a| a.prices[1]["active"] = json!(false), "stripe_prices", &["price_pro_y", "archived"]),
        (
            "wrong amount",
            |a| a.prices[0]["unit_amount"] = json!(4500),
            "stripe_prices",
            &["amount 4500 in Stripe, 4900 in the catalogue"],
        ),
        (
            "wrong currency",
            |a| a.prices[3]["currency"] = json!("eur"),
            "stripe_prices",
            &["currency eur in Stripe, usd"],
        ),
        (
            "wrong interval",
            |a| a.prices[1]["recurring"]["interval"] = json!("month"),
            "stripe_prices",
            &["per month in Stripe, per year in the catalogue"],
        ),
        (
            "no endpoint",
            |a| {
                a.endpoints.pop();
            },
            "webhook_endpoint",
            &["no webhook endpoint points at https://billing.example.com/api/webhooks/stripe"],
        ),
        (
            "missing event",
            |a| a.endpoints[2]["enabled_events"] = json!(&HANDLED_EVENTS[..HANDLED_EVENTS.len() - 1]),
            "webhook_endpoint",
            &["does not send", HANDLED_EVENTS[HANDLED_EVENTS.len() - 1]],
        ),
        ("disabled", |a| a.endpoints[2]["status"] = json!("disabled"), "webhook_endpoint", &["we_ours", "is disabled"]),
        ("no portal", |a| a.portals.clear(), "customer_portal", &["no active default configuration"]),
    ];
    for (case, change, name, words) in cases {
        fake.set(change);
        let report = doctor(&dir, &with(&env, &[]));
        assert_eq!(report.code, Some(1), "{case}: {}", report.stdout);
        report.expect(name, "error", words);
        let errors = report.stdout.lines().filter(|l| l.starts_with("error")).count();
        assert_eq!(errors, 1, "{case}: only its own finding:\n{}", report.stdout);
    }
    // A refused key skips the checks that need it.
    fake.set(|a| a.key_refused = true);
    assert!(doctor(&dir, &with(&env, &[])).check("stripe_prices").is_none());
    // A missing legacy price is reported too, an archived one is fine (it is never offered).
    fake.set(|a| {
        a.prices.remove(2);
    });
    doctor(&dir, &with(&env, &[])).expect("stripe_prices", "error", &["price_pro_2024 (pro legacy)"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn local_settings_findings_name_their_fix() {
    let fake = FakeStripe::start();
    let (dir, env) = good_setup(&fake);

    // A live key with an http public URL.
    fake.set(|a| {
        a.livemode = true;
        for p in &mut a.prices {
            p["livemode"] = json!(true);
        }
    });
    let live = doctor(
        &dir,
        &with(&env, &[("STRIPE_SECRET_KEY", "sk_live_doctor"), ("TALLY_PUBLIC_URL", "http://billing.example.com")]),
    );
    assert_eq!(live.code, Some(1));
    live.expect("public_url", "error", &["http://billing.example.com", "live"]);
    live.expect("stripe_key", "ok", &["sk_live_...", "live mode"]);
    live.expect("stripe_prices", "ok", &[]);
    fake.set(|_| {});

    // A secret that is not a signing secret; no secret at all.
    let bad = doctor(&dir, &with(&env, &[("STRIPE_WEBHOOK_SECRET", "whsec_fine1,sk_test_pasted_key")]));
    assert_eq!(bad.code, Some(1));
    bad.expect("webhook_secret", "error", &["entry 2", "whsec_"]);
    assert!(!bad.stdout.contains("sk_test_pasted_key") && !bad.stdout.contains("whsec_fine1"), "{}", bad.stdout);
    let unset = doctor(&dir, &with(&env, &[("STRIPE_WEBHOOK_SECRET", "")]));
    assert_eq!(unset.code, Some(0), "a warning is not an error: {}", unset.stdout);
    unset.expect("webhook_secret", "warning", &["dev secret", "not for production"]);

    // An unmigrated database, which doctor reports and leaves as it is.
    let empty = dir.join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let url = format!("sqlite://{}", empty.display());
    for _ in 0..2 {
        let report = doctor(&dir, &with(&env, &[("DATABASE_URL", url.as_str())]));
        assert_eq!(report.code, Some(1));
        report.expect("database", "error", &["not migrated", "`tally migrate`"]);
        assert!(report.check("unmatched_events").is_none(), "records need the schema");
    }
    let missing = format!("sqlite://{}", dir.join("nothing.db").display());
    doctor(&dir, &with(&env, &[("DATABASE_URL", missing.as_str())])).expect("database", "error", &["does not exist"]);
    assert!(!dir.join("nothing.db").exists(), "doctor creates no database");

    // No Stripe key: a warning, and the Stripe checks are skipped.
    let offline = doctor(&dir, &with(&env, &[("STRIPE_SECRET_KEY", "")]));
    offline.expect("stripe_key", "warning", &["not set"]);
    assert!(offline.check("webhook_endpoint").is_none());

    // A malformed setting or catalogue is a line of the report, not only a message.
    let config = doctor(&dir, &with(&env, &[("TALLY_BIND", "nowhere")]));
    assert_eq!(config.code, Some(1));
    config.expect("config", "error", &["TALLY_BIND"]);
    std::fs::write(dir.join("broken.toml"), CATALOGUE.replace("credits = 2500", "credit = 2500")).unwrap();
    let broken = dir.join("broken.toml").display().to_string();
    let catalogue = doctor(&dir, &with(&env, &[("TALLY_CONFIG", broken.as_str())]));
    assert_eq!(catalogue.code, Some(1));
    catalogue.expect("catalogue", "error", &["plans.pro.credit"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `sql` (statements separated by `;`) on tally's tables at `url`.
fn execute(url: &str, sql: &str) {
    use sqlx::{AssertSqlSafe, Connection};
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        if url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.unwrap();
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let sql = format!("set search_path to tally; {sql}");
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
        }
    });
}

/// Events kept for replay and a subscription on a price the catalogue does not name,
/// as webhooks would have left them.
fn seed_records(url: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let event = |id: &str, outcome: &str, note: &str| {
        format!(
            "insert into events (id, type, created, livemode, payload, outcome, note, user_id, received_at, attempts)
             values ('{id}', 'invoice.paid', {now}, 0, '{{}}', '{outcome}', {note}, null, {now}, 1)"
        )
    };
    let sql = [
        event("evt_price1", "unmatched", "'unknown_price'"),
        event("evt_price2", "unmatched", "'unknown_price'"),
        event("evt_nouser", "unmatched", "'no user found'"),
        event("evt_failed", "failed", "'unreadable object'"),
        event("evt_fine", "applied", "null"),
        format!(
            "insert into subscriptions (id, user_id, status, plan, current_period_end, cancel_at_period_end, state_at,
             updated_at, price_id) values ('sub_old', 'olga', 'active', 'pro', {}, 0, {now}, {now}, 'price_gone')",
            now + 86_400
        ),
        format!("insert into signature_failures (hour, count) values ({}, 7)", now - now % 3600),
    ]
    .join(";\n");
    execute(url, &sql);
}

fn records_are_reported(dir: &Path, url: &str) {
    migrate(dir, url);
    let healthy = doctor(dir, &[("DATABASE_URL", url)]);
    for name in ["database", "signature_failures", "unmatched_events", "failed_events", "catalogue_drift"] {
        healthy.expect(name, "ok", &[]);
    }
    seed_records(url);
    let report = doctor(dir, &[("DATABASE_URL", url)]);
    assert_eq!(report.code, Some(1), "{}", report.stdout);
    report.expect("signature_failures", "warning", &["7 webhook", "last 24 h", "STRIPE_WEBHOOK_SECRET"]);
    report.expect(
        "unmatched_events",
        "error",
        &["3 event(s)", "1 no user found", "2 unknown_price", "`tally replay --unmatched`"],
    );
    report.expect("failed_events", "error", &["1 stored event(s) failed", "`tally replay --failed`"]);
    report.expect("catalogue_drift", "error", &["1 on price price_gone", "legacy_prices"]);
}

#[test]
fn records_of_unmatched_failed_drifted_and_refused_are_reported_on_sqlite() {
    let dir = work_dir();
    records_are_reported(&dir, &format!("sqlite://{}", dir.join("tally.db").display()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn records_of_unmatched_failed_drifted_and_refused_are_reported_on_postgres() {
    let db = tally_testdb::TestDatabase::create();
    let dir = work_dir();
    // Unmigrated first: doctor says so and leaves the schema alone.
    doctor(&dir, &[("DATABASE_URL", db.url.as_str())]).expect("database", "error", &["not migrated"]);
    records_are_reported(&dir, &db.url);
    let _ = std::fs::remove_dir_all(&dir);
}

/// POSTs a webhook with a wrong signature; the status code.
fn post_badly_signed(port: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let body = r#"{"id":"evt_x","object":"event","type":"invoice.paid","created":1,"data":{"object":{}}}"#;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let request = format!(
        "POST /api/webhooks/stripe HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Stripe-Signature: t=1,v1=00\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

fn rows(url: &str, sql: &'static str) -> i64 {
    use sqlx::Connection;
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    })
}

/// The webhook route records each refused signature, in one row an hour (old hours
/// pruned), and answers 400 as before; doctor reads the record after the server is gone.
#[test]
fn refused_signatures_are_recorded_bounded_and_reported() {
    let dir = work_dir();
    let url = format!("sqlite://{}", dir.join("tally.db").display());
    migrate(&dir, &url);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    execute(&url, &format!("insert into signature_failures (hour, count) values ({}, 5)", now - 3 * 86_400));

    let port = free_port();
    let mut server = tally(&dir)
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("TALLY_BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tally serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let refusals = 40;
    for _ in 0..refusals {
        assert_eq!(post_badly_signed(port), Some(400));
    }
    // Written in the background: wait for the count to land.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows(&url, "select coalesce(cast(sum(count) as bigint), 0) from signature_failures") != refusals {
        assert!(Instant::now() < deadline, "refusals not recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(rows(&url, "select count(*) from signature_failures") <= 2, "one row an hour, old hours pruned");

    let report = doctor(&dir, &[("DATABASE_URL", url.as_str())]);
    report.expect("signature_failures", "warning", &[&format!("{refusals} webhook")]);
    let _ = std::fs::remove_dir_all(&dir);
}
