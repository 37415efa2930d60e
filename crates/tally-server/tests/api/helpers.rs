//! `spawn_app()`: a tally on port 0 with a fresh database, and the means to post signed
//! events and read state back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

use tally_server::{Application, Config};
use tally_stripe::ClientOptions;

use crate::fake_stripe::FakeStripe;
use tally_store::{Store, StoredEvent};
use tally_stripe::fake::{self, ChargeSpec, CheckoutSpec, InvoiceSpec, Shape, SubscriptionSpec};
use tally_testdb::TestDatabase;
pub use tally_testdb::replace_database;

pub const SECRET: &str = "whsec_test_suite";
pub const API_KEY: &str = "test-api-key";
pub const PRO: &str = "price_pro_test";
pub const ENTERPRISE: &str = "price_enterprise_test";
pub const TOPUP: &str = "price_topup_test";
pub const JWT_SECRET: &str = "test-jwt-secret-of-the-host-app-32b";
pub const MONTH: i64 = 30 * 24 * 3600;

/// Runs each named scenario once per backend: `sqlite::name` and `postgres::name`,
/// against the guide's default catalogue. The Postgres one keeps a clone of its `Db`
/// to the end, so the databases it made are dropped then, passed or failed.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::helpers::Db::sqlite(&$crate::helpers::GUIDE)).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::helpers::Db::postgres(&$crate::helpers::GUIDE);
                    super::$name(db.clone()).await
                }
            )*
        }
    };
}

/// Runs each money scenario once per backend and per catalogue: the guide's default
/// (`sqlite::name`) and [`STUDIO`], a catalogue from a file unlike it
/// (`sqlite::studio::name`). A scenario reads its ids, prices and allowances from
/// `db.shop`, so the same assertions hold for both.
#[macro_export]
macro_rules! on_both_backends_and_catalogues {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::helpers::Db::sqlite(&$crate::helpers::GUIDE)).await
                }
            )*
            mod studio {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $name() {
                        super::super::$name($crate::helpers::Db::sqlite(&$crate::helpers::STUDIO)).await
                    }
                )*
            }
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::helpers::Db::postgres(&$crate::helpers::GUIDE);
                    super::$name(db.clone()).await
                }
            )*
            mod studio {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $name() {
                        let db = $crate::helpers::Db::postgres(&$crate::helpers::STUDIO);
                        super::super::$name(db.clone()).await
                    }
                )*
            }
        }
    };
}

/// A plan of a test catalogue: its id, its monthly price and allowance.
#[derive(Debug)]
pub struct ShopPlan {
    pub id: &'static str,
    pub price: &'static str,
    pub credits: i64,
    /// What its monthly price charges, in cents.
    pub amount: i64,
}

/// A pack of a test catalogue.
#[derive(Debug)]
pub struct ShopPack {
    pub id: &'static str,
    pub credits: i64,
    pub amount: i64,
}

/// A catalogue the money scenarios run against, and the names they need from it: a
/// lower and a higher plan (by rank) and a pack.
#[derive(Debug)]
pub struct Shop {
    pub free: i64,
    pub low: ShopPlan,
    pub high: ShopPlan,
    pub pack: ShopPack,
    /// The catalogue file; `None` for the default catalogue, priced through the env.
    pub toml: Option<&'static str>,
}

/// The guide's catalogue, with no file: prices from STRIPE_*_PRICE_ID.
pub static GUIDE: Shop = Shop {
    free: 100,
    low: ShopPlan { id: "pro", price: PRO, credits: 2_500, amount: 4_900 },
    high: ShopPlan { id: "enterprise", price: ENTERPRISE, credits: 10_000, amount: 19_900 },
    pack: ShopPack { id: "topup", credits: 1_000, amount: 2_000 },
    toml: None,
};

/// A catalogue unlike the guide's, from a file: other ids, three plans with monthly and
/// yearly prices, a trial, a legacy price, two packs and a smaller free tier.
pub static STUDIO: Shop = Shop {
    free: 20,
    low: ShopPlan { id: "hobby", price: "price_hobby_m", credits: 300, amount: 900 },
    high: ShopPlan { id: "team", price: "price_team_m", credits: 7_000, amount: 9_900 },
    pack: ShopPack { id: "boost", credits: 250, amount: 500 },
    toml: Some(STUDIO_TOML),
};

pub const STUDIO_TOML: &str = include_str!("../fixtures/studio.toml");

/// Which backend a scenario runs on, and against which catalogue.
#[derive(Debug, Clone)]
pub struct Db {
    backend: Backend,
    pub shop: &'static Shop,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite,
    /// The databases made for this test on [`tally_testdb::server_url`], dropped when
    /// the last clone of its `Db` is.
    Postgres(Arc<Mutex<Vec<TestDatabase>>>),
}

impl Db {
    pub fn sqlite(shop: &'static Shop) -> Db {
        Db { backend: Backend::Sqlite, shop }
    }

    /// The same backend with another catalogue.
    pub fn with_shop(self, shop: &'static Shop) -> Db {
        Db { shop, ..self }
    }

    /// The Postgres backend: TEST_DATABASE_URL's server, or a private one this process
    /// starts. Panics, saying the test is skipped, when there is no Postgres at all: a
    /// scenario that did not run must not report ok (see `tally_testdb`).
    pub fn postgres(shop: &'static Shop) -> Db {
        tally_testdb::server_url();
        Db { backend: Backend::Postgres(Arc::default()), shop }
    }

    /// A fresh, empty database; returns its URL.
    pub async fn fresh(&self) -> String {
        match &self.backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("tally-test-{}-{}.db", std::process::id(), unique()));
                format!("sqlite://{}", path.display())
            }
            Backend::Postgres(made) => {
                let db = TestDatabase::create();
                let url = db.url.clone();
                made.lock().unwrap().push(db);
                url
            }
        }
    }

    /// The settings that select this catalogue: its file, or the default's price ids.
    fn catalogue_settings(&self) -> Vec<(&'static str, String)> {
        match self.shop.toml {
            Some(toml) => {
                let path = std::env::temp_dir().join(format!("tally-test-{}-{}.toml", std::process::id(), unique()));
                std::fs::write(&path, toml).expect("write the test catalogue");
                vec![("TALLY_CONFIG", path.display().to_string())]
            }
            None => vec![
                ("STRIPE_PRO_PRICE_ID", PRO.to_owned()),
                ("STRIPE_ENTERPRISE_PRICE_ID", ENTERPRISE.to_owned()),
                ("STRIPE_TOPUP_PRICE_ID", TOPUP.to_owned()),
            ],
        }
    }
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    NEXT.fetch_add(1, Ordering::Relaxed) * 1_000_000_000 + nanos
}

/// A user token as Supabase issues it (HS256 with JWT_SECRET, `aud` authenticated), with
/// `claims` added or replaced.
pub fn host_token(claims: &Value) -> String {
    let mut all = json!({ "aud": "authenticated", "role": "authenticated", "exp": now() + 3600 });
    for (name, value) in claims.as_object().expect("claims are an object") {
        all[name] = value.clone();
    }
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &all, &key).unwrap()
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

pub struct TestApp {
    /// The catalogue it runs with.
    pub shop: &'static Shop,
    pub address: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub database_url: String,
    /// Holds the test's databases (dropped with the last holder): as long as the app.
    _db: Db,
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, &[]).await
}

/// A tally whose Stripe API calls go to `stripe`, with user tokens signed by JWT_SECRET
/// and short timeouts and backoffs.
pub async fn spawn_app_with_stripe(db: Db, stripe: &FakeStripe) -> TestApp {
    let vars = [
        ("STRIPE_SECRET_KEY", "sk_test_fake"),
        ("STRIPE_API_BASE", stripe.url.as_str()),
        ("AUTH_JWT_SECRET", JWT_SECRET),
    ];
    spawn_app_with(db, &vars).await
}

/// A tally with the suite's settings, `extra` overriding them.
pub async fn spawn_app_with(db: Db, extra: &[(&str, &str)]) -> TestApp {
    spawn_app_configured(db, extra, |_| {}).await
}

/// A tally with the suite's settings, `extra` overriding them, and `adjust` changing
/// what no variable sets (the connection deadlines).
pub async fn spawn_app_configured(db: Db, extra: &[(&str, &str)], adjust: impl FnOnce(&mut Config)) -> TestApp {
    // A test that shares one database between tallys names it; the others get their own.
    let database_url = match extra.iter().find(|(k, _)| *k == "DATABASE_URL") {
        Some((_, url)) => (*url).to_owned(),
        None => db.fresh().await,
    };
    let catalogue = db.catalogue_settings();
    let mut base = vec![
        ("DATABASE_URL", database_url.as_str()),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
        ("TALLY_API_KEY", API_KEY),
        ("TALLY_BIND", "127.0.0.1:0"),
    ];
    base.extend(catalogue.iter().map(|(k, v)| (*k, v.as_str())));
    let lookup = |name: &str| {
        let pick = |vars: &[(&str, &str)]| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
        pick(extra).or_else(|| pick(&base))
    };
    let mut config = Config::from_lookup(lookup).expect("test config is valid");
    config.stripe_client =
        ClientOptions { timeout: Duration::from_millis(500), max_retries: 2, backoff: Duration::from_millis(10) };
    // Time's grants are driven by the tests' own clock (`Store::grant_due`).
    config.grant_clock = false;
    adjust(&mut config);
    let app = Application::build(config).await.expect("tally starts");
    let address = format!("http://{}", app.local_addr());
    let store = app.state().store.clone();
    tokio::spawn(app.run());
    TestApp { shop: db.shop, address, client: reqwest::Client::new(), store, database_url, _db: db }
}

impl TestApp {
    /// The database URL for a connection of the test's own that reads tally's tables
    /// (on Postgres they are in tally's schema, not on the search path of a plain one).
    pub fn tables_url(&self) -> String {
        match self.database_url.starts_with("postgres") {
            true => tally_store::postgres::url_in_schema(&self.database_url, tally_store::postgres::DEFAULT_SCHEMA),
            false => self.database_url.clone(),
        }
    }

    /// Posts `event` signed with the configured secret; returns the status and body.
    pub async fn post_event(&self, event: &Value) -> (StatusCode, Value) {
        let body = event.to_string();
        let signature = tally_stripe::sign(body.as_bytes(), SECRET, now());
        self.post_webhook(body.into_bytes(), Some(&signature), "application/json").await
    }

    /// Posts an event and insists on a 200 with the given outcome.
    pub async fn deliver(&self, event: &Value, outcome: &str) {
        let (status, body) = self.post_event(event).await;
        assert_eq!(status, StatusCode::OK, "{} -> {body}", event["type"]);
        assert_eq!(body["outcome"], outcome, "{} -> {body}", event["type"]);
    }

    pub async fn post_webhook(
        &self,
        body: Vec<u8>,
        signature: Option<&str>,
        content_type: &str,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}/api/webhooks/stripe", self.address))
            .header("content-type", content_type)
            .body(body);
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        answer(request).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        answer(self.client.get(format!("{}{path}", self.address)).bearer_auth(API_KEY)).await
    }

    pub async fn billing(&self, user: &str) -> Value {
        let (status, body) = self.get(&format!("/api/users/{user}/billing")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// (tier, plan_credits, topup_credits) of a user.
    pub async fn balance(&self, user: &str) -> (String, i64, i64) {
        let b = self.billing(user).await;
        (
            b["tier"].as_str().unwrap().to_owned(),
            b["plan_credits"].as_i64().unwrap(),
            b["topup_credits"].as_i64().unwrap(),
        )
    }

    pub async fn spend(&self, user: &str, amount: i64, key: &str) -> (StatusCode, Value) {
        let body = json!({ "user_id": user, "amount": amount, "idempotency_key": key, "reason": "test" });
        self.post("/api/credits/spend", &body).await
    }

    /// How many ledger rows the user has.
    pub async fn ledger_rows(&self, user: &str) -> usize {
        let (status, rows) = self.get(&format!("/api/users/{user}/ledger?limit=500")).await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        rows.as_array().expect("a list").len()
    }

    /// A second store on the same database and catalogue: another tally process.
    pub async fn second_store(&self) -> Store {
        Store::connect(&self.database_url, std::sync::Arc::new(self.store.catalogue().clone())).await.unwrap()
    }

    /// A user's token, as the host app would issue it.
    pub fn token(&self, user: &str) -> String {
        host_token(&json!({ "sub": user, "exp": now() + 3600 }))
    }

    /// POSTs JSON to a user route with `token`.
    pub async fn post_as_token(&self, token: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        answer(self.client.post(format!("{}{path}", self.address)).bearer_auth(token).json(body)).await
    }

    /// POSTs JSON to a user route as `user`.
    pub async fn post_as(&self, user: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        answer(self.client.post(format!("{}{path}", self.address)).bearer_auth(self.token(user)).json(body)).await
    }

    /// POSTs JSON to a host-app route.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        answer(self.client.post(format!("{}{path}", self.address)).bearer_auth(API_KEY).json(body)).await
    }

    pub async fn reserve(&self, user: &str, amount: i64, key: &str, ttl_seconds: i64) -> (StatusCode, Value) {
        let body = json!({ "user_id": user, "amount": amount, "idempotency_key": key, "ttl_seconds": ttl_seconds });
        self.post("/api/credits/reserve", &body).await
    }

    pub async fn commit(&self, reservation: &str, amount: i64) -> (StatusCode, Value) {
        self.post(&format!("/api/credits/reservations/{reservation}/commit"), &json!({ "amount": amount })).await
    }

    pub async fn release(&self, reservation: &str) -> (StatusCode, Value) {
        self.post(&format!("/api/credits/reservations/{reservation}/release"), &json!({})).await
    }

    pub async fn stored(&self, event_id: &str) -> Option<StoredEvent> {
        self.store.event(event_id).await.unwrap()
    }

    pub async fn stored_count(&self) -> i64 {
        self.store.count_events().await.unwrap()
    }

    /// The books balance (every account equals the sum of its ledger rows), nothing was
    /// granted twice, and every tier has its subscription: `tally audit` finds nothing.
    pub async fn assert_books_balance(&self) {
        assert_eq!(self.store.audit().await.unwrap().violations, Vec::<String>::new());
    }
}

/// Sends `request`; its status and JSON body (null when the body is not JSON).
async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("tally answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// One customer's Stripe objects, to build the events of their story.
pub struct Customer {
    pub user: String,
    pub customer: String,
    pub shape: Shape,
    /// The catalogue they buy from: its items and what its prices charge.
    pub shop: &'static Shop,
}

impl Customer {
    pub fn new(user: &str, shape: Shape, shop: &'static Shop) -> Customer {
        Customer { user: user.to_owned(), customer: format!("cus_{user}"), shape, shop }
    }

    /// What a month of the plan with this id or price charges: the high plan's, else the
    /// low plan's (also for a price the shop does not sell, which only needs to be paid).
    fn plan_amount(&self, plan: &str) -> i64 {
        let high = &self.shop.high;
        if plan == high.id || plan == high.price { high.amount } else { self.shop.low.amount }
    }

    pub fn event(&self, event_type: &str, created: i64, object: Value) -> Value {
        let id = format!("evt_{}", unique());
        fake::event(self.shape, event_type, &id, created, object)
    }

    /// checkout.session.completed in subscription mode.
    pub fn checkout(&self, session: &str, sub: &str, item: &str, payment_status: &str, created: i64) -> Value {
        let spec = CheckoutSpec {
            id: session,
            user: &self.user,
            item,
            payment_status,
            customer: &self.customer,
            subscription: Some(sub),
            payment_intent: None,
            amount: self.plan_amount(item),
        };
        self.event("checkout.session.completed", created, fake::checkout_session(self.shape, &spec))
    }

    /// checkout.session.completed (or async_payment_succeeded) in payment mode: the
    /// shop's pack.
    pub fn topup(
        &self,
        event_type: &str,
        session: &str,
        payment_intent: &str,
        payment_status: &str,
        created: i64,
    ) -> Value {
        let spec = CheckoutSpec {
            id: session,
            user: &self.user,
            item: self.shop.pack.id,
            payment_status,
            customer: &self.customer,
            subscription: None,
            payment_intent: Some(payment_intent),
            amount: self.shop.pack.amount,
        };
        self.event(event_type, created, fake::checkout_session(self.shape, &spec))
    }

    /// An invoice event; `user` false leaves the user to be found by customer or subscription.
    #[allow(clippy::too_many_arguments)]
    pub fn invoice(
        &self,
        event_type: &str,
        id: &str,
        sub: &str,
        price: &str,
        reason: &str,
        period_start: i64,
        created: i64,
    ) -> Value {
        let status = if event_type == "invoice.payment_failed" { "open" } else { "paid" };
        self.event(event_type, created, self.invoice_object(id, sub, price, reason, period_start, status))
    }

    /// An invoice as the API returns it: `paid`, or `open` (unpaid).
    pub fn invoice_object(
        &self,
        id: &str,
        sub: &str,
        price: &str,
        reason: &str,
        period_start: i64,
        status: &str,
    ) -> Value {
        let spec = InvoiceSpec {
            id,
            subscription: sub,
            customer: &self.customer,
            user: None,
            price,
            billing_reason: reason,
            period_start,
            period_end: period_start + MONTH,
            amount: self.plan_amount(price),
            status,
        };
        fake::invoice(self.shape, &spec)
    }

    /// A customer.subscription.* event; the first period starts at `start_date`.
    #[allow(clippy::too_many_arguments)]
    pub fn subscription(
        &self,
        event_type: &str,
        sub: &str,
        price: &str,
        status: &str,
        start_date: i64,
        period_start: i64,
        cancel_at_period_end: bool,
        created: i64,
    ) -> Value {
        let object = self.subscription_object(sub, price, status, start_date, period_start, cancel_at_period_end);
        self.event(event_type, created, object)
    }

    /// A subscription as the API lists it.
    pub fn subscription_object(
        &self,
        sub: &str,
        price: &str,
        status: &str,
        start_date: i64,
        period_start: i64,
        cancel_at_period_end: bool,
    ) -> Value {
        let spec = SubscriptionSpec {
            id: sub,
            customer: &self.customer,
            user: Some(&self.user),
            price,
            status,
            start_date,
            period_start,
            period_end: period_start + MONTH,
            cancel_at_period_end,
        };
        fake::subscription(self.shape, &spec)
    }

    /// charge.refunded for the charge of a pack bought through `payment_intent`.
    pub fn refund(&self, charge: &str, payment_intent: &str, amount_refunded: i64, created: i64) -> Value {
        let amount = self.shop.pack.amount;
        let spec = ChargeSpec { id: charge, payment_intent, customer: &self.customer, amount, amount_refunded };
        self.event("charge.refunded", created, fake::charge(self.shape, &spec))
    }
}
