//! What is sent: realistic signed Stripe events over many users (with duplicate
//! deliveries), and spend / reserve+commit requests; and the HTTP client that sends it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use tally_core::catalogue::defaults;
use tally_stripe::fake::{self, CheckoutSpec, InvoiceSpec, Shape, SubscriptionSpec};

pub const SECRET: &str = "whsec_tally_bench";
pub const API_KEY: &str = "tally-bench-key";
const MONTH: i64 = 30 * 24 * 3600;

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// One distinct event: its id, type and body.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event_type: &'static str,
    pub body: String,
}

/// One delivery: an index into the events and its Stripe-Signature header.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: usize,
    pub signature: String,
}

/// N distinct events plus duplicate deliveries, in delivery order.
pub struct Ingest {
    pub events: Vec<Event>,
    pub deliveries: Vec<Delivery>,
    pub duplicates: usize,
}

impl Ingest {
    pub fn mean_body_bytes(&self) -> usize {
        self.events.iter().map(|e| e.body.len()).sum::<usize>() / self.events.len().max(1)
    }
}

/// `n` distinct events: for each user the story of a subscription as Stripe delivers
/// it (invoice.paid, checkout.session.completed, customer.subscription.updated, half of
/// them an upgrade to Enterprise), users alternating between the 2023 and 2026 API
/// shapes; then `dup_ratio * n` re-deliveries of random events, signed again, each
/// sent shortly after its original.
pub fn ingest(prefix: &str, n: usize, dup_ratio: f64) -> Ingest {
    let now = unix_now();
    let mut events = Vec::with_capacity(n);
    let mut story = 0usize;
    while events.len() < n {
        let user = format!("{prefix}-u{story}");
        let shape = if story.is_multiple_of(2) { Shape::V2026 } else { Shape::V2023 };
        for e in subscription_story(shape, &user, story % 4 < 2, now) {
            if events.len() < n {
                events.push(e);
            }
        }
        story += 1;
    }
    let mut rng = rand::rng();
    let duplicates = (n as f64 * dup_ratio).round() as usize;
    // later[k]: re-deliveries sent right after the k-th original.
    let mut later: Vec<Vec<usize>> = vec![Vec::new(); n];
    for _ in 0..duplicates {
        let original = rng.random_range(0..n);
        let slot = (original + rng.random_range(0..50)).min(n - 1);
        later[slot].push(original);
    }
    let sign = |i: usize| Delivery { event: i, signature: tally_stripe::sign(events[i].body.as_bytes(), SECRET, now) };
    let mut deliveries = Vec::with_capacity(n + duplicates);
    for (k, again) in later.iter_mut().enumerate() {
        deliveries.push(sign(k));
        again.shuffle(&mut rng);
        deliveries.extend(again.iter().map(|&i| sign(i)));
    }
    Ingest { events, deliveries, duplicates }
}

fn price(item: &str) -> String {
    tally_server::config::dev_price_id(item)
}

fn subscription_story(shape: Shape, user: &str, upgrade: bool, now: i64) -> Vec<Event> {
    let customer = new_id("cus");
    let sub = new_id("sub");
    let event = |event_type: &'static str, created: i64, object: Value| {
        let id = new_id("evt");
        let body = fake::event(shape, event_type, &id, created, object).to_string();
        Event { id, event_type, body }
    };
    let invoice = fake::invoice(
        shape,
        &InvoiceSpec {
            id: &new_id("in"),
            subscription: &sub,
            customer: &customer,
            user: Some(user),
            price: &price(defaults::PRO),
            billing_reason: "subscription_create",
            period_start: now,
            period_end: now + MONTH,
            amount: 4_900,
            status: "paid",
        },
    );
    let session = fake::checkout_session(
        shape,
        &CheckoutSpec {
            id: &new_id("cs"),
            user,
            item: "pro",
            payment_status: "paid",
            customer: &customer,
            subscription: Some(&sub),
            payment_intent: None,
            amount: 4_900,
        },
    );
    let updated = fake::subscription(
        shape,
        &SubscriptionSpec {
            id: &sub,
            customer: &customer,
            user: Some(user),
            price: &price(if upgrade { defaults::ENTERPRISE } else { defaults::PRO }),
            status: "active",
            start_date: now,
            period_start: now,
            period_end: now + MONTH,
            cancel_at_period_end: false,
        },
    );
    vec![
        event("invoice.paid", now, invoice),
        event("checkout.session.completed", now, session),
        event("customer.subscription.updated", now + 1, updated),
    ]
}

/// Counts of webhook outcomes.
#[derive(Default)]
pub struct Outcomes {
    pub applied: AtomicUsize,
    pub duplicate: AtomicUsize,
    pub ignored: AtomicUsize,
    pub other: AtomicUsize,
}

impl Outcomes {
    fn count(&self, outcome: &str) {
        let counter = match outcome {
            "applied" => &self.applied,
            "duplicate" => &self.duplicate,
            "ignored" => &self.ignored,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }
}

/// A running tally, reached over keep-alive HTTP/1.1 connections (one per worker).
#[derive(Clone)]
pub struct Tally {
    base: Arc<str>,
    client: reqwest::Client,
}

impl Tally {
    pub fn new(base: &str) -> Tally {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .expect("a plain HTTP client builds");
        Tally { base: base.trim_end_matches('/').into(), client }
    }

    /// Read-only requests from `2c` clients for 300 ms: opens the HTTP connections and
    /// lets tally's database pool grow to what this concurrency needs (a new Postgres
    /// connection costs tally ~90 ms with TLS, which would otherwise land in the run).
    pub async fn warm_up(&self, c: usize) {
        self.warm_up_on(c, |i| format!("/api/users/warm-{i}/billing")).await;
    }

    /// [`Tally::warm_up`] on one path (another server than tally).
    pub async fn warm_up_path(&self, c: usize, path: &str) {
        self.warm_up_on(c, |_| path.to_owned()).await;
    }

    async fn warm_up_on(&self, c: usize, path: impl Fn(usize) -> String) {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
        let tasks: Vec<_> = (0..2 * c)
            .map(|i| {
                let (t, path) = (self.clone(), path(i));
                tokio::spawn(async move {
                    while std::time::Instant::now() < until {
                        let _ = t.get(&path).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// tally's writer so far, from /metrics: (requests, transactions).
    pub async fn write_counters(&self) -> Option<(f64, f64)> {
        let text = self.client.get(format!("{}/metrics", self.base)).send().await.ok()?.text().await.ok()?;
        let sum = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Some((sum("tally_write_jobs_total"), sum("tally_write_batches_total")))
    }

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("GET {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {path}: {status} {}", String::from_utf8_lossy(&body)));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {e}"))
    }

    /// Posts one delivery; counts its outcome.
    pub async fn deliver(&self, event: &Event, delivery: &Delivery, outcomes: &Outcomes) -> Result<(), String> {
        self.deliver_to("/api/webhooks/stripe", event, delivery, outcomes).await
    }

    /// [`Tally::deliver`] to another webhook path (another server than tally).
    pub async fn deliver_to(
        &self,
        path: &str,
        event: &Event,
        delivery: &Delivery,
        outcomes: &Outcomes,
    ) -> Result<(), String> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("stripe-signature", &delivery.signature)
            .body(event.body.clone())
            .send()
            .await
            .map_err(|e| format!("webhook: {e}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("webhook: {e}"))?;
        if !status.is_success() {
            return Err(format!("webhook {}: {status} {}", event.id, String::from_utf8_lossy(&body)));
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|e| format!("webhook: {e}"))?;
        outcomes.count(answer["outcome"].as_str().unwrap_or(""));
        Ok(())
    }

    /// POSTs a host-app request; returns the answer's body.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> Result<Value, String> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("POST {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("POST {path}: {status} {}", String::from_utf8_lossy(&body)));
        }
        serde_json::from_slice(&body).map_err(|e| format!("POST {path}: {e}"))
    }

    pub async fn spend(&self, body: Vec<u8>) -> Result<(), String> {
        self.post("/api/credits/spend", body).await.map(drop)
    }

    /// Holds 2 credits, then commits 1 of them.
    pub async fn reserve_commit(&self, body: Vec<u8>) -> Result<(), String> {
        let held = self.post("/api/credits/reserve", body).await?;
        let id = held["reservation_id"].as_str().ok_or("reserve: no reservation_id")?;
        let committed =
            self.post(&format!("/api/credits/reservations/{id}/commit"), br#"{"amount":1}"#.to_vec()).await?;
        match committed["status"].as_str() {
            Some("committed") => Ok(()),
            other => Err(format!("commit {id}: status {other:?}")),
        }
    }
}

/// Spend requests of 1 credit: user `u{k}` with k spread uniformly over `users`, or
/// all on `hot` when `users` is 0. Keys are unique, starting with `prefix`.
pub fn spend_bodies(prefix: &str, n: usize, users: usize, hot: &str) -> Vec<Vec<u8>> {
    let mut rng = rand::rng();
    (0..n)
        .map(|i| {
            let user = if users == 0 { hot.to_owned() } else { spread_user(rng.random_range(0..users)) };
            serde_json::to_vec(&json!({
                "user_id": user,
                "amount": 1,
                "idempotency_key": format!("{prefix}-{i}"),
                "reason": "bench",
            }))
            .expect("JSON serializes")
        })
        .collect()
}

/// Reservations of 2 credits over spread users, keys starting with `prefix`.
pub fn reserve_bodies(prefix: &str, n: usize, users: usize) -> Vec<Vec<u8>> {
    let mut rng = rand::rng();
    (0..n)
        .map(|i| {
            serde_json::to_vec(&json!({
                "user_id": spread_user(rng.random_range(0..users)),
                "amount": 2,
                "idempotency_key": format!("{prefix}-{i}"),
                "ttl_seconds": 600,
            }))
            .expect("JSON serializes")
        })
        .collect()
}

pub fn spread_user(k: usize) -> String {
    format!("u{k}")
}

/// The user every hot-row spend goes to.
pub const HOT_USER: &str = "hot";
