//! `tally serve` as operations run it: JSON logs for a shipper, `/metrics` on a listener
//! of its own, and a SIGTERM while 200 webhooks are in flight.

mod support;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_stripe::fake::{self, CheckoutSpec, Shape};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const API_KEY: &str = "ops-key-3b1f0c9e27d84a55";
const WEBHOOK_SECRET: &str = "whsec_ops_5e0a61c2f94b47d8a1c3";
const JWT_SECRET: &str = "jwt-secret-for-the-ops-test-7c41d9e0b2a6";
const STRIPE_KEY: &str = "sk_test_ops_9f2e4b71c05d48a3";
const DEADLINE: Duration = Duration::from_secs(20);

struct Serving {
    child: Child,
    port: u16,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tally serve` with every secret set, logging to `dir/stderr.log` (and its notes to
/// `dir/stdout.log`); `extra` adds settings.
async fn serve(dir: &Path, database_url: &str, extra: &[(&str, &str)]) -> Serving {
    let port = support::free_port();
    let mut cmd = support::tally(dir, database_url, port, API_KEY);
    cmd.env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("AUTH_JWT_SECRET", JWT_SECRET)
        .env("STRIPE_SECRET_KEY", STRIPE_KEY)
        // Nothing listens there: tally's Stripe calls fail, as they may in production.
        .env("STRIPE_API_BASE", format!("http://127.0.0.1:{}", support::free_port()))
        .envs(extra.iter().copied());
    let child = cmd
        .arg("serve")
        .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let serving = Serving { child, port };
    let started = Instant::now();
    while get(port, "/healthz").await.is_none_or(|(status, _)| status != 200) {
        assert!(started.elapsed() < DEADLINE, "tally serve did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serving
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let response =
        reqwest::Client::new().get(format!("http://127.0.0.1:{port}{path}")).bearer_auth(API_KEY).send().await.ok()?;
    Some((response.status().as_u16(), response.text().await.ok()?))
}

async fn billing(port: u16, user: &str) -> Value {
    let (status, body) = get(port, &format!("/api/users/{user}/billing")).await.expect("billing answers");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A signed checkout.session.completed of the top-up pack for `user`: the body and its
/// Stripe-Signature header.
fn topup_webhook(event_id: &str, user: &str) -> (String, String) {
    let session = CheckoutSpec {
        id: &format!("cs_{event_id}"),
        user,
        item: "topup",
        payment_status: "paid",
        customer: &format!("cus_{user}"),
        subscription: None,
        payment_intent: Some(&format!("pi_{event_id}")),
        amount: 2000,
    };
    let now = tally_store::now();
    let object = fake::checkout_session(Shape::V2026, &session);
    let body = fake::event(Shape::V2026, "checkout.session.completed", event_id, now, object).to_string();
    let signature = tally_stripe::sign(body.as_bytes(), WEBHOOK_SECRET, now);
    (body, signature)
}

/// The raw HTTP/1.1 request that delivers a webhook on a connection of its own.
fn webhook_request(body: &str, signature: &str) -> Vec<u8> {
    format!(
        "POST /api/webhooks/stripe HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Stripe-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The status of the answer on `stream`, or None when the connection ended without one.
async fn read_status(stream: &mut TcpStream) -> Option<u16> {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(40), stream.read_to_end(&mut answer)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("tally.db").display())
}

async fn wait_for_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < within, "tally serve did not stop within {within:?} of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn json_logs_name_the_route_user_event_and_latency_and_never_a_secret() {
    let dir = support::work_dir("ops-logs");
    let mut server = serve(
        &dir,
        &sqlite_url(&dir),
        &[
            ("TALLY_LOG_FORMAT", "json"),
            // As verbose as an operator chasing a problem would make tally's own crates.
            ("RUST_LOG", "info,tally=debug,tally_server=debug,tally_store=debug,tally_stripe=debug,tally_auth=debug"),
        ],
    )
    .await;
    let base = format!("http://127.0.0.1:{}", server.port);
    let client = reqwest::Client::new();

    let spend = serde_json::json!({ "user_id": "log-user", "amount": 3, "idempotency_key": "log-1", "reason": "chat" });
    let response = client.post(format!("{base}/api/credits/spend")).bearer_auth(API_KEY).json(&spend).send().await;
    assert_eq!(response.unwrap().status(), 200);
    let wrong_key = client.post(format!("{base}/api/credits/spend")).bearer_auth("not-the-key").json(&spend).send();
    assert_eq!(wrong_key.await.unwrap().status(), 401);
    let (body, signature) = topup_webhook("evt_logs_1", "log-user");
    let delivered = client
        .post(format!("{base}/api/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", &signature)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), 200);
    let forged = client
        .post(format!("{base}/api/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", format!("t={},v1={}", tally_store::now(), "0".repeat(64)))
        .body(body)
        .send();
    assert_eq!(forged.await.unwrap().status(), 400);
    // A user route with a token tally refuses, and secrets put in a URL.
    let refused = client.get(format!("{base}/api/billing")).bearer_auth(format!("{JWT_SECRET}.x.y")).send();
    assert_eq!(refused.await.unwrap().status(), 401);
    // Whatever the page answers, only the log matters here.
    client.get(format!("{base}/dashboard/billing?token={API_KEY}&key={STRIPE_KEY}")).send().await.unwrap();

    support::terminate(server.child.id());
    assert!(wait_for_exit(&mut server.child, DEADLINE).await.success());
    let logs = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
    let notes = std::fs::read_to_string(dir.join("stdout.log")).unwrap();

    for secret in [API_KEY, WEBHOOK_SECRET, JWT_SECRET, STRIPE_KEY] {
        assert!(!logs.contains(secret), "the logs hold a secret ({}...):\n{logs}", &secret[..6]);
        assert!(!notes.contains(secret), "the start-up notes hold a secret ({}...):\n{notes}", &secret[..6]);
    }
    let lines: Vec<Value> = logs
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    let request = |route: &str, status: u64| {
        lines
            .iter()
            .find(|l| l["message"] == "request" && l["span"]["route"] == route && l["status"] == status)
            .unwrap_or_else(|| panic!("no request line for {route} {status}:\n{logs}"))
    };
    let spent = request("/api/credits/spend", 200);
    assert_eq!(spent["span"]["user_id"], "log-user");
    assert_eq!(spent["span"]["method"], "POST");
    assert!(spent["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{spent}");
    let webhook = request("/api/webhooks/stripe", 200);
    assert_eq!(webhook["span"]["event_id"], "evt_logs_1");
    assert_eq!(webhook["span"]["user_id"], "log-user");
    assert!(webhook["latency_ms"].is_number());
    // The event's own line carries them too.
    let applied = lines.iter().find(|l| l["message"] == "webhook").expect("the event's line");
    assert_eq!(applied["span"]["event_id"], "evt_logs_1");
    assert_eq!(applied["outcome"], "applied");
    request("/api/webhooks/stripe", 400);
    let page = lines.iter().find(|l| l["span"]["route"] == "/dashboard/billing").expect("the page's request line");
    assert!(!page.to_string().contains("token="), "{page}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn metrics_bind_serves_metrics_apart_from_the_public_port() {
    let dir = support::work_dir("ops-metrics");
    let metrics_port = support::free_port();
    let bind = format!("127.0.0.1:{metrics_port}");
    let server = serve(&dir, &sqlite_url(&dir), &[("TALLY_METRICS_BIND", &bind)]).await;
    let (public, _) = get(server.port, "/metrics").await.unwrap();
    assert_eq!(public, 404, "not on the public port");
    let (status, body) = get(metrics_port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("tally_webhooks_total{outcome=\"applied\"} 0"), "{body}");
    let (other, _) = get(metrics_port, "/api/catalogue").await.unwrap();
    assert_eq!(other, 404, "the metrics listener serves nothing else");
    let notes = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
    assert!(notes.contains(&format!("metrics:            http://{bind}/metrics")), "{notes}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What became of a delivery when the server stopped.
struct Delivery {
    user: String,
    request: Vec<u8>,
    answered: Option<u16>,
}

/// SIGTERM while 200 webhooks are in flight (each on its own connection, its body half
/// sent), and 20 more sent after it. Every accepted one is answered 200 and its credits
/// are committed; one that got no answer was never applied, and Stripe's retry (every
/// delivery sent again to the restarted server) applies each exactly once.
async fn sigterm_during_200_webhooks(dir: &Path, database_url: &str) {
    const IN_FLIGHT: usize = 200;
    const LATE: usize = 20;
    let mut server = serve(dir, database_url, &[]).await;
    let port = server.port;
    let mut deliveries: Vec<Delivery> = (0..IN_FLIGHT + LATE)
        .map(|i| {
            let user = format!("shutdown-{i}");
            let (body, signature) = topup_webhook(&format!("evt_shutdown_{i}"), &user);
            Delivery { user, request: webhook_request(&body, &signature), answered: None }
        })
        .collect();

    let mut streams = Vec::new();
    for delivery in &deliveries[..IN_FLIGHT] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let half = delivery.request.len() - 40;
        stream.write_all(&delivery.request[..half]).await.unwrap();
        streams.push(stream);
    }
    // Every one is held by tally (its headers read, its body awaited) before the signal.
    let started = Instant::now();
    loop {
        let (_, metrics) = get(port, "/metrics").await.unwrap();
        let open = metrics
            .lines()
            .find_map(|line| line.strip_prefix("tally_connections_open "))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if open >= IN_FLIGHT as f64 {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "tally holds {open} of {IN_FLIGHT} connections");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    support::terminate(server.child.id());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The rest of each body arrives after the signal, as a slow sender's would.
    let mut answers = Vec::new();
    for (mut stream, delivery) in streams.into_iter().zip(&deliveries) {
        let rest = delivery.request[delivery.request.len() - 40..].to_vec();
        answers.push(tokio::spawn(async move {
            stream.write_all(&rest).await.ok()?;
            read_status(&mut stream).await
        }));
    }
    // Late deliveries: the listener is closed, or closing; whatever answers is applied.
    for delivery in &mut deliveries[IN_FLIGHT..] {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await
            && stream.write_all(&delivery.request).await.is_ok()
        {
            delivery.answered = read_status(&mut stream).await;
        }
    }
    for (delivery, answer) in deliveries.iter_mut().zip(answers) {
        delivery.answered = answer.await.unwrap();
    }
    let stopped = wait_for_exit(&mut server.child, Duration::from_secs(35)).await;
    assert!(stopped.success(), "tally serve exits 0 on SIGTERM: {stopped:?}");
    let in_flight_answered = deliveries[..IN_FLIGHT].iter().filter(|d| d.answered == Some(200)).count();
    assert_eq!(in_flight_answered, IN_FLIGHT, "every accepted delivery is answered 200");
    assert!(deliveries.iter().all(|d| d.answered.is_none() || d.answered == Some(200)), "no other answer");
    drop(server);

    // Restarted on the same database: an answered delivery's credits are there, an
    // unanswered one's are not.
    let server = serve(dir, database_url, &[]).await;
    let mut unanswered = 0;
    for delivery in &deliveries {
        let topup = billing(server.port, &delivery.user).await["topup_credits"].as_i64().unwrap();
        let expected = if delivery.answered.is_some() { 1000 } else { 0 };
        unanswered += usize::from(delivery.answered.is_none());
        assert_eq!(topup, expected, "{}: answered {:?}", delivery.user, delivery.answered);
    }
    // Stripe retries every delivery it has no 2xx for; sending them all again also
    // proves the answered ones are duplicates.
    let client = reqwest::Client::new();
    for delivery in &deliveries {
        let text = String::from_utf8(delivery.request.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let signature = head.lines().find_map(|l| l.strip_prefix("Stripe-Signature: ")).unwrap();
        let retried = client
            .post(format!("http://127.0.0.1:{}/api/webhooks/stripe", server.port))
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let answer: Value = retried.json().await.unwrap();
        let expected = if delivery.answered.is_some() { "duplicate" } else { "applied" };
        assert_eq!(answer["outcome"], expected, "{}", delivery.user);
    }
    for delivery in &deliveries {
        assert_eq!(billing(server.port, &delivery.user).await["topup_credits"], 1000, "{}", delivery.user);
    }
    drop(server);
    let audit = support::tally(dir, database_url, support::free_port(), API_KEY).arg("audit").output().unwrap();
    assert!(audit.status.success(), "tally audit: {}", String::from_utf8_lossy(&audit.stdout));
    eprintln!("{IN_FLIGHT} in flight answered; {} of {LATE} late ones unanswered and retried", unanswered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_200_webhooks_on_sqlite_answers_what_it_accepted_and_loses_nothing() {
    let dir = support::work_dir("ops-shutdown");
    sigterm_during_200_webhooks(&dir, &sqlite_url(&dir)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_200_webhooks_on_postgres_answers_what_it_accepted_and_loses_nothing() {
    let db = tally_testdb::TestDatabase::create();
    let dir = support::work_dir("ops-shutdown");
    sigterm_during_200_webhooks(&dir, &db.url).await;
    let _ = std::fs::remove_dir_all(&dir);
}
