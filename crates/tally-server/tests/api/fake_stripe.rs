//! A local stand-in for the few Stripe endpoints tally calls. It records every request,
//! refuses parameters Stripe's API reference does not document for an endpoint (as
//! Stripe does, with `parameter_unknown`), answers a repeated idempotency key with the
//! first answer, and can be told to fail or stall.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub idempotency_key: Option<String>,
    pub form: Vec<(String, String)>,
}

impl Seen {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    seen: Vec<Seen>,
    /// Statuses to answer the next requests to a path with, before answering normally.
    failures: HashMap<String, Vec<u16>>,
    stall: Option<Duration>,
    by_key: HashMap<String, Value>,
    sessions: HashMap<String, Value>,
    /// What GET /v1/events lists, newest first, two to a page.
    events: Vec<Value>,
    /// What GET /v1/subscriptions lists, newest first, two to a page.
    subscriptions: Vec<Value>,
    invoices: HashMap<String, Value>,
    next: u64,
}

#[derive(Clone, Default)]
pub struct FakeStripe {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

/// Parameter names Stripe documents for each endpoint; `*` stands for any key.
fn documented(path: &str) -> &'static [&'static str] {
    match path {
        "/v1/customers" => &["metadata[*]", "email", "name"],
        "/v1/checkout/sessions" => &[
            "mode",
            "customer",
            "client_reference_id",
            "line_items[*][price]",
            "line_items[*][quantity]",
            "metadata[*]",
            "subscription_data[metadata][*]",
            "payment_intent_data[metadata][*]",
            "success_url",
            "cancel_url",
            "allow_promotion_codes",
        ],
        "/v1/billing_portal/sessions" => &["customer", "return_url"],
        "/v1/products" => &["name", "metadata[*]"],
        "/v1/prices" => {
            &["product", "currency", "unit_amount", "lookup_key", "recurring[interval]", "transfer_lookup_key"]
        }
        _ => &[],
    }
}

/// `*` stands for one bracketed key, such as the `0` of `line_items[0][price]`.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else { return false };
            let end = rest.find(']').unwrap_or(rest.len());
            end > 0 && matches(tail, &rest[end..])
        }
    }
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        let fake = FakeStripe::default();
        let app = Router::new()
            .route("/v1/customers", post(create))
            .route("/v1/customers/{id}", get(retrieve_customer))
            .route("/v1/checkout/sessions", post(create))
            .route("/v1/checkout/sessions/{id}", get(retrieve_session))
            .route("/v1/billing_portal/sessions", post(create))
            .route("/v1/products", post(create))
            .route("/v1/prices", post(create).get(list_prices))
            .route("/v1/events", get(list_events))
            .route("/v1/subscriptions", get(list_subscriptions))
            .route("/v1/invoices/{id}", get(retrieve_invoice))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeStripe { url, ..fake }
    }

    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.iter().filter(|s| s.path == path).cloned().collect()
    }

    pub fn fail_next(&self, path: &str, statuses: &[u16]) {
        self.inner.lock().unwrap().failures.insert(path.to_owned(), statuses.to_vec());
    }

    pub fn stall(&self, delay: Option<Duration>) {
        self.inner.lock().unwrap().stall = delay;
    }

    /// The events Stripe keeps, in the order they happened.
    pub fn set_events(&self, mut events: Vec<Value>) {
        events.reverse();
        self.inner.lock().unwrap().events = events;
    }

    /// The subscriptions Stripe has, in the order they were created.
    pub fn set_subscriptions(&self, mut subscriptions: Vec<Value>) {
        subscriptions.reverse();
        self.inner.lock().unwrap().subscriptions = subscriptions;
    }

    pub fn add_invoice(&self, invoice: Value) {
        let id = invoice["id"].as_str().expect("an invoice has an id").to_owned();
        self.inner.lock().unwrap().invoices.insert(id, invoice);
    }

    /// Marks a Checkout Session as paid, as if the customer finished the payment page.
    pub fn pay(&self, session_id: &str) {
        let mut inner = self.inner.lock().unwrap();
        let session = inner.sessions.get_mut(session_id).expect("a session the fake created");
        session["payment_status"] = json!("paid");
        session["status"] = json!("complete");
    }

    fn record(&self, path: &str, headers: &HeaderMap, form: Vec<(String, String)>) -> Option<u16> {
        let mut inner = self.inner.lock().unwrap();
        let idempotency_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
        inner.seen.push(Seen { path: path.to_owned(), idempotency_key, form });
        let failures = inner.failures.get_mut(path)?;
        if failures.is_empty() { None } else { Some(failures.remove(0)) }
    }
}

fn stripe_error(status: u16, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({ "error": { "type": kind, "code": code, "message": message } });
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

async fn create(State(fake): State<FakeStripe>, uri: axum::http::Uri, headers: HeaderMap, body: String) -> Response {
    let path = uri.path().to_owned();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let stall = fake.inner.lock().unwrap().stall;
    let failure = fake.record(&path, &headers, form.clone());
    if let Some(delay) = stall {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = failure {
        return stripe_error(status, "api_error", "fake_failure", "the fake was told to fail");
    }
    if !headers.get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("Bearer sk_")) {
        return stripe_error(401, "invalid_request_error", "api_key_invalid", "no API key");
    }
    if let Some((name, _)) = form.iter().find(|(name, _)| !documented(&path).iter().any(|p| matches(p, name))) {
        return stripe_error(
            400,
            "invalid_request_error",
            "parameter_unknown",
            &format!("Received unknown parameter: {name}"),
        );
    }
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut inner = fake.inner.lock().unwrap();
    if let Some(earlier) = key.as_ref().and_then(|k| inner.by_key.get(k)) {
        return axum::Json(earlier.clone()).into_response();
    }
    inner.next += 1;
    let n = inner.next;
    let param = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let object = match path.as_str() {
        "/v1/customers" => json!({ "id": format!("cus_fake{n}"), "object": "customer",
            "metadata": { "user_id": param("metadata[user_id]") } }),
        "/v1/checkout/sessions" => {
            let id = format!("cs_test_fake{n}");
            let subscription_mode = param("mode").as_deref() == Some("subscription");
            let session = json!({
                "id": id, "object": "checkout.session", "created": 1_800_000_000 + n as i64,
                "mode": param("mode"), "status": "open", "payment_status": "unpaid",
                "customer": param("customer"), "client_reference_id": param("client_reference_id"),
                "metadata": { "user_id": param("metadata[user_id]"), "item": param("metadata[item]") },
                "subscription": if subscription_mode { json!(format!("sub_fake{n}")) } else { Value::Null },
                "payment_intent": if subscription_mode { Value::Null } else { json!(format!("pi_fake{n}")) },
                "url": format!("https://checkout.stripe.com/c/pay/{id}"),
            });
            inner.sessions.insert(id, session.clone());
            session
        }
        "/v1/billing_portal/sessions" => json!({ "id": format!("bps_fake{n}"), "object": "billing_portal.session",
            "customer": param("customer"), "return_url": param("return_url"),
            "url": format!("https://billing.stripe.com/p/session/fake{n}") }),
        "/v1/products" => json!({ "id": format!("prod_fake{n}"), "object": "product", "name": param("name") }),
        "/v1/prices" => json!({ "id": format!("price_fake{n}"), "object": "price", "active": true,
            "lookup_key": param("lookup_key"), "unit_amount": param("unit_amount").map(|a| a.parse::<i64>().unwrap()),
            "product": param("product"), "currency": param("currency"),
            "recurring": param("recurring[interval]").map(|i| json!({ "interval": i })) }),
        _ => unreachable!(),
    };
    if let Some(key) = key {
        inner.by_key.insert(key, object.clone());
    }
    axum::Json(object).into_response()
}

async fn retrieve_session(State(fake): State<FakeStripe>, Path(id): Path<String>) -> Response {
    match fake.inner.lock().unwrap().sessions.get(&id) {
        Some(session) => axum::Json(session.clone()).into_response(),
        None => stripe_error(404, "invalid_request_error", "resource_missing", "No such checkout.session"),
    }
}

async fn retrieve_customer(State(fake): State<FakeStripe>, Path(id): Path<String>) -> Response {
    let inner = fake.inner.lock().unwrap();
    match inner.by_key.values().find(|v| v["id"] == id.as_str()) {
        Some(customer) => axum::Json(customer.clone()).into_response(),
        None => stripe_error(404, "invalid_request_error", "resource_missing", "No such customer"),
    }
}

async fn list_prices(State(fake): State<FakeStripe>, Query(query): Query<Vec<(String, String)>>) -> Response {
    let keys: Vec<&String> = query.iter().filter(|(k, _)| k == "lookup_keys[]").map(|(_, v)| v).collect();
    let inner = fake.inner.lock().unwrap();
    let prices: Vec<Value> = inner
        .by_key
        .values()
        .filter(|v| v["object"] == "price" && keys.iter().any(|k| v["lookup_key"] == k.as_str()))
        .cloned()
        .collect();
    axum::Json(json!({ "object": "list", "data": prices })).into_response()
}

#[test]
fn documented_patterns_match_stripe_style_names() {
    assert!(matches("metadata[*]", "metadata[user_id]"));
    assert!(matches("line_items[*][price]", "line_items[0][price]"));
    assert!(!matches("line_items[*][price]", "line_items[0][amount]"));
    assert!(matches("subscription_data[metadata][*]", "subscription_data[metadata][user_id]"));
    assert!(!matches("mode", "modes"));
}

/// `type` (one event type) and `created[gte]`, as Stripe documents them.
async fn list_events(State(fake): State<FakeStripe>, Query(query): Query<Vec<(String, String)>>) -> Response {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if let Some((name, _)) =
        query.iter().find(|(k, _)| !["type", "created[gte]", "limit", "starting_after"].contains(&k.as_str()))
    {
        return stripe_error(
            400,
            "invalid_request_error",
            "parameter_unknown",
            &format!("Received unknown parameter: {name}"),
        );
    }
    let event_type = param("type");
    let since: i64 = param("created[gte]").and_then(|v| v.parse().ok()).unwrap_or(0);
    let inner = fake.inner.lock().unwrap();
    let matching: Vec<&Value> = inner
        .events
        .iter()
        .filter(|e| e["created"].as_i64().unwrap_or(0) >= since)
        .filter(|e| event_type.as_ref().is_none_or(|t| e["type"] == t.as_str()))
        .collect();
    page_of(&matching, param("starting_after"))
}

/// `status=all`, two to a page. A failure told for `/v1/subscriptions` hits the first
/// page; one told for `/v1/subscriptions?starting_after` hits the later ones.
async fn list_subscriptions(
    State(fake): State<FakeStripe>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let after = param("starting_after");
    let path = if after.is_some() { "/v1/subscriptions?starting_after" } else { "/v1/subscriptions" };
    if let Some(status) = fake.record(path, &headers, query.clone()) {
        return stripe_error(status, "api_error", "fake_failure", "the fake was told to fail");
    }
    if param("status").as_deref() != Some("all") {
        return stripe_error(400, "invalid_request_error", "fake_status", "tally lists subscriptions with status=all");
    }
    let inner = fake.inner.lock().unwrap();
    if let Some(after) = &after
        && !inner.subscriptions.iter().any(|s| s["id"] == after.as_str())
    {
        return stripe_error(400, "invalid_request_error", "resource_missing", "No such subscription");
    }
    let all: Vec<&Value> = inner.subscriptions.iter().collect();
    page_of(&all, after)
}

fn page_of(objects: &[&Value], starting_after: Option<String>) -> Response {
    let start = match starting_after {
        Some(after) => objects.iter().position(|e| e["id"] == after.as_str()).map_or(objects.len(), |i| i + 1),
        None => 0,
    };
    let page: Vec<Value> = objects.iter().skip(start).take(2).map(|e| (*e).clone()).collect();
    let has_more = start + page.len() < objects.len();
    axum::Json(json!({ "object": "list", "data": page, "has_more": has_more })).into_response()
}

async fn retrieve_invoice(State(fake): State<FakeStripe>, Path(id): Path<String>) -> Response {
    match fake.inner.lock().unwrap().invoices.get(&id) {
        Some(invoice) => axum::Json(invoice.clone()).into_response(),
        None => stripe_error(404, "invalid_request_error", "resource_missing", "No such invoice"),
    }
}
