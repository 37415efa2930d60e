//! The catalogue as data: checkout and the pricing route follow the file, yearly prices
//! grant monthly by the clock (driven here by hand), trials, legacy prices, unknown
//! prices kept for replay, and a changed catalogue. Each runs on both backends with
//! [`STUDIO`], a catalogue unlike the guide's.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tally_stripe::fake::{self, CheckoutSpec, InvoiceSpec, Shape, SubscriptionSpec};

use crate::fake_stripe::FakeStripe;
use crate::helpers::{Db, MONTH, STUDIO, STUDIO_TOML, TestApp, now, spawn_app, spawn_app_with, spawn_app_with_stripe};
use crate::on_both_backends;

on_both_backends!(
    checkout_sells_the_yearly_price_of_a_plan_and_a_pack_from_the_file,
    checkout_refuses_an_item_or_interval_the_catalogue_lacks,
    the_catalogue_route_offers_plans_and_packs_without_legacy_prices,
    a_yearly_price_grants_its_allowance_every_month,
    concurrent_ticks_grant_a_month_once,
    after_downtime_only_the_current_month_is_granted,
    a_tick_the_database_refuses_loses_no_month,
    a_trial_grants_its_credits_once_then_the_first_paid_period_the_allowance,
    a_legacy_price_keeps_its_subscribers_granted,
    an_unknown_price_is_kept_unmatched_and_applied_once_the_file_names_it,
    a_changed_allowance_applies_from_the_next_grant,
    a_monthly_free_tier_is_reset_once_a_month,
    a_tier_the_catalogue_no_longer_has_is_reported_not_guessed,
);

const DAY: i64 = 86_400;
const YEAR: i64 = 365 * DAY;

async fn studio(db: Db) -> TestApp {
    spawn_app(db.with_shop(&STUDIO)).await
}

/// Builds a user's Stripe events with exact periods (the suite's `Customer` assumes months).
struct Story<'a> {
    user: &'a str,
    shape: Shape,
}

impl Story<'_> {
    fn customer(&self) -> String {
        format!("cus_{}", self.user)
    }

    fn event(&self, event_type: &str, created: i64, object: Value) -> Value {
        let id = format!("evt_{}_{}_{created}_{}", self.user, event_type.replace('.', "_"), rand_id());
        fake::event(self.shape, event_type, &id, created, object)
    }

    #[allow(clippy::too_many_arguments)]
    fn subscription(&self, event_type: &str, sub: &str, price: &str, status: &str, start: i64, end: i64) -> Value {
        let spec = SubscriptionSpec {
            id: sub,
            customer: &self.customer(),
            user: Some(self.user),
            price,
            status,
            start_date: start,
            period_start: start,
            period_end: end,
            cancel_at_period_end: false,
        };
        self.event(event_type, start, fake::subscription(self.shape, &spec))
    }

    #[allow(clippy::too_many_arguments)]
    fn invoice(&self, id: &str, sub: &str, price: &str, reason: &str, start: i64, end: i64, amount: i64) -> Value {
        let spec = InvoiceSpec {
            id,
            subscription: sub,
            customer: &self.customer(),
            user: Some(self.user),
            price,
            billing_reason: reason,
            period_start: start,
            period_end: end,
            amount,
            status: "paid",
        };
        self.event("invoice.paid", start, fake::invoice(self.shape, &spec))
    }

    fn pack_checkout(&self, session: &str, item: &str, amount: i64, created: i64) -> Value {
        let spec = CheckoutSpec {
            id: session,
            user: self.user,
            item,
            payment_status: "paid",
            customer: &self.customer(),
            subscription: None,
            payment_intent: Some(&format!("pi_{session}")),
            amount,
        };
        self.event("checkout.session.completed", created, fake::checkout_session(self.shape, &spec))
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A yearly hobby subscription of `user`, paid from `start`: the first period granted.
async fn yearly_hobby(app: &TestApp, story: &Story<'_>, sub: &str, start: i64) {
    let created =
        story.subscription("customer.subscription.created", sub, "price_hobby_y", "active", start, start + YEAR);
    app.deliver(&created, "applied").await;
    let paid =
        story.invoice(&format!("in_{sub}"), sub, "price_hobby_y", "subscription_create", start, start + YEAR, 9_000);
    app.deliver(&paid, "applied").await;
    assert_eq!(app.balance(story.user).await, ("hobby".into(), 300, 0));
}

/// The references of the user's ledger rows, newest first.
async fn references(app: &TestApp, user: &str) -> Vec<String> {
    let (_, rows) = app.get(&format!("/api/users/{user}/ledger?limit=100")).await;
    rows.as_array().unwrap().iter().map(|r| r["reference"].as_str().unwrap().to_owned()).collect()
}

async fn checkout_sells_the_yearly_price_of_a_plan_and_a_pack_from_the_file(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db.with_shop(&STUDIO), &stripe).await;
    let (status, body) = app.post_as("ann", "/api/checkout", &json!({ "item": "studio", "interval": "year" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.post_as("ann", "/api/checkout", &json!({ "item": "bulk" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sessions = stripe.seen("/v1/checkout/sessions");
    let (yearly, pack) = (&sessions[0], &sessions[1]);
    assert_eq!(
        (yearly.param("mode"), yearly.param("line_items[0][price]"), yearly.param("metadata[item]")),
        (Some("subscription"), Some("price_studio_y"), Some("studio"))
    );
    assert_eq!(
        (pack.param("mode"), pack.param("line_items[0][price]"), pack.param("metadata[item]")),
        (Some("payment"), Some("price_bulk"), Some("bulk"))
    );
    // Without an interval, the first price listed.
    app.post_as("bea", "/api/checkout", &json!({ "item": "hobby" })).await;
    assert_eq!(stripe.seen("/v1/checkout/sessions")[2].param("line_items[0][price]"), Some("price_hobby_m"));
}

async fn checkout_refuses_an_item_or_interval_the_catalogue_lacks(db: Db) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with_stripe(db.with_shop(&STUDIO), &stripe).await;
    for (body, code) in [
        (json!({ "item": "pro" }), "unknown_item"),
        (json!({ "item": "free" }), "unknown_item"),
        (json!({ "item": "team", "interval": "year" }), "invalid_interval"),
        (json!({ "item": "hobby", "interval": "fortnight" }), "invalid_interval"),
    ] {
        let (status, answer) = app.post_as("ann", "/api/checkout", &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {answer}");
        assert_eq!(answer["error"], code, "{body} -> {answer}");
    }
    assert!(stripe.seen("/v1/checkout/sessions").is_empty(), "nothing reached Stripe");
}

async fn the_catalogue_route_offers_plans_and_packs_without_legacy_prices(db: Db) {
    let app = studio(db).await;
    let response = app.client.get(format!("{}/api/catalogue", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "no sign-in needed");
    let c: Value = response.json().await.unwrap();
    let ids = |list: &Value| {
        list.as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&c["plans"]), ["hobby", "studio", "team"], "in the file's order");
    assert_eq!(ids(&c["packs"]), ["boost", "bulk"]);
    assert_eq!(c["free"], json!({ "credits": 20, "monthly": false }));
    assert_eq!(
        c["plans"][0]["prices"][1],
        json!({ "id": "price_hobby_y", "amount": 9000, "currency": "usd", "interval": "year" })
    );
    assert_eq!(c["plans"][1]["trial_credits"], 150);
    assert!(!c.to_string().contains("price_hobby_2024"), "legacy prices are not offered");
}

async fn a_yearly_price_grants_its_allowance_every_month(db: Db) {
    let app = studio(db).await;
    let story = Story { user: "yuki", shape: Shape::V2026 };
    let start = now() - 10 * DAY;
    yearly_hobby(&app, &story, "sub_y", start).await;
    app.spend("yuki", 280, "k1").await;
    // Within the first month the period's own grant stands.
    assert_eq!(app.store.grant_due(start + 20 * DAY).await.unwrap().months, 0);
    assert_eq!(app.balance("yuki").await.1, 20);
    // The first monthly anniversary resets the plan bucket, once.
    let second_month = tally_core::calendar::anniversary(start, 1);
    assert_eq!(app.store.grant_due(second_month + 30).await.unwrap().months, 1);
    assert_eq!(app.balance("yuki").await, ("hobby".into(), 300, 0));
    assert_eq!(app.store.grant_due(second_month + 90).await.unwrap().months, 0, "a month grants once");
    assert!(references(&app, "yuki").await.contains(&format!("month:sub_y:{start}:1")));
    app.assert_books_balance().await;
}

async fn concurrent_ticks_grant_a_month_once(db: Db) {
    let app = studio(db).await;
    let replicas = [app.second_store().await, app.second_store().await, app.second_store().await];
    let start = now() - 40 * DAY;
    for n in 0..5 {
        let user = format!("u{n}");
        let story = Story { user: &user, shape: Shape::V2023 };
        yearly_hobby(&app, &story, &format!("sub_{n}"), start).await;
        app.spend(&user, 100, &format!("k{n}")).await;
    }
    let t = tally_core::calendar::anniversary(start, 1) + 5;
    let (a, b, c, d) = tokio::join!(
        app.store.grant_due(t),
        replicas[0].grant_due(t),
        replicas[1].grant_due(t),
        replicas[2].grant_due(t)
    );
    let granted: usize = [a, b, c, d].into_iter().map(|g| g.unwrap().months).sum();
    assert!(granted >= 5, "every month was granted by some replica ({granted})");
    for n in 0..5 {
        let user = format!("u{n}");
        assert_eq!(app.balance(&user).await, ("hobby".into(), 300, 0), "{user}");
        let months = references(&app, &user).await.into_iter().filter(|r| r.starts_with("month:")).count();
        assert_eq!(months, 1, "{user}: one monthly grant across four replicas");
    }
    app.assert_books_balance().await;
}

async fn after_downtime_only_the_current_month_is_granted(db: Db) {
    let app = studio(db).await;
    let story = Story { user: "zed", shape: Shape::V2026 };
    let start = now() - 200 * DAY;
    yearly_hobby(&app, &story, "sub_z", start).await;
    app.spend("zed", 300, "k1").await;
    // The server was down from the first month to the seventh.
    let t = tally_core::calendar::anniversary(start, 6) + DAY;
    assert_eq!(app.store.grant_due(t).await.unwrap().months, 1);
    let months: Vec<String> = references(&app, "zed").await.into_iter().filter(|r| r.starts_with("month:")).collect();
    assert_eq!(months, [format!("month:sub_z:{start}:6")], "plan credits never roll over");
    assert_eq!(app.balance("zed").await, ("hobby".into(), 300, 0));
}

async fn a_trial_grants_its_credits_once_then_the_first_paid_period_the_allowance(db: Db) {
    let app = studio(db).await;
    let story = Story { user: "tia", shape: Shape::V2026 };
    let start = now() - 14 * DAY;
    let trial_end = start + 14 * DAY;
    let trialing =
        story.subscription("customer.subscription.created", "sub_t", "price_studio_m", "trialing", start, trial_end);
    app.deliver(&trialing, "applied").await;
    assert_eq!(app.balance("tia").await, ("studio".into(), 150, 0), "the tier at once, with the trial's credits");
    // The trial's invoice, for nothing, and a redelivery of the trialing state: no more credits.
    let free_invoice = story.invoice("in_t0", "sub_t", "price_studio_m", "subscription_create", start, trial_end, 0);
    app.post_event(&free_invoice).await;
    app.post_event(&trialing).await;
    app.spend("tia", 50, "k1").await;
    assert_eq!(app.balance("tia").await, ("studio".into(), 100, 0));
    // The first paid invoice after the trial starts a normal period.
    let paid =
        story.invoice("in_t1", "sub_t", "price_studio_m", "subscription_cycle", trial_end, trial_end + MONTH, 2_900);
    app.deliver(&paid, "applied").await;
    assert_eq!(app.balance("tia").await, ("studio".into(), 1_500, 0));
    app.assert_books_balance().await;
}

async fn a_legacy_price_keeps_its_subscribers_granted(db: Db) {
    let app = studio(db).await;
    let story = Story { user: "leo", shape: Shape::V2023 };
    let t = now();
    let created =
        story.subscription("customer.subscription.created", "sub_l", "price_hobby_2024", "active", t, t + MONTH);
    app.deliver(&created, "applied").await;
    let paid = story.invoice("in_l", "sub_l", "price_hobby_2024", "subscription_create", t, t + MONTH, 500);
    app.deliver(&paid, "applied").await;
    assert_eq!(app.balance("leo").await, ("hobby".into(), 300, 0));
    app.assert_books_balance().await;
}

async fn an_unknown_price_is_kept_unmatched_and_applied_once_the_file_names_it(db: Db) {
    let app = studio(db).await;
    let story = Story { user: "uma", shape: Shape::V2026 };
    let t = now();
    let paid = story.invoice("in_u", "sub_u", "price_studio_2027", "subscription_create", t, t + MONTH, 3_900);
    let (status, body) = app.post_event(&paid).await;
    assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("unmatched")), "{body}");
    assert_eq!(app.balance("uma").await, ("free".into(), 20, 0), "never granted");
    let id = paid["id"].as_str().unwrap();
    assert_eq!(app.stored(id).await.unwrap().note.as_deref(), Some("unknown_price"));
    let audit = app.store.audit().await.unwrap();
    assert!(audit.notices.iter().any(|p| p.contains(id) && p.contains("replay")), "audit lists it: {audit:?}");

    // The file names the new price; `tally replay --unmatched` applies it, once.
    let named = STUDIO_TOML
        .replace(r#"legacy_prices = ["price_hobby_2024"]"#, "")
        .replace("[plans.studio]\n", "[plans.studio]\nlegacy_prices = [\"price_studio_2027\"]\n");
    let fixed = tally_core::Catalogue::from_toml(&named).unwrap();
    let store = tally_store::Store::connect(&app.database_url, std::sync::Arc::new(fixed)).await.unwrap();
    for event in store.events_with_outcome("unmatched").await.unwrap() {
        let parsed = tally_stripe::parse_event(event.payload.as_bytes()).unwrap();
        let outcome = tally_server::ingest_parsed(&store, &parsed, &event.payload).await.unwrap();
        assert_eq!(outcome.outcome.as_str(), "applied");
        let again = tally_server::ingest_parsed(&store, &parsed, &event.payload).await.unwrap();
        assert_eq!(again.outcome.as_str(), "duplicate");
    }
    assert_eq!(store.billing("uma").await.unwrap().tier, "studio");
    assert_eq!(store.billing("uma").await.unwrap().plan_credits, 1_500);
}

async fn a_changed_allowance_applies_from_the_next_grant(db: Db) {
    let app = studio(db).await;
    let story = Story { user: "cy", shape: Shape::V2026 };
    let t = now() - 2 * MONTH;
    let created = story.subscription("customer.subscription.created", "sub_c", "price_hobby_m", "active", t, t + MONTH);
    app.deliver(&created, "applied").await;
    app.deliver(&story.invoice("in_c1", "sub_c", "price_hobby_m", "subscription_create", t, t + MONTH, 900), "applied")
        .await;
    assert_eq!(app.balance("cy").await.1, 300);

    // The app raises hobby's allowance; a tally with the new file grants it at the renewal.
    let raised = tally_core::Catalogue::from_toml(&STUDIO_TOML.replace("credits = 300", "credits = 400")).unwrap();
    let store = tally_store::Store::connect(&app.database_url, std::sync::Arc::new(raised)).await.unwrap();
    assert_eq!(store.billing("cy").await.unwrap().plan_credits, 300, "nothing moves before the next grant");
    let renewal = story.invoice("in_c2", "sub_c", "price_hobby_m", "subscription_cycle", t + MONTH, t + 2 * MONTH, 900);
    let parsed = tally_stripe::parse_event(renewal.to_string().as_bytes()).unwrap();
    tally_server::ingest_parsed(&store, &parsed, &renewal.to_string()).await.unwrap();
    assert_eq!(store.billing("cy").await.unwrap().plan_credits, 400);
}

async fn a_monthly_free_tier_is_reset_once_a_month(db: Db) {
    let path = std::env::temp_dir().join(format!("tally-test-free-{}-{}.toml", std::process::id(), rand_id()));
    std::fs::write(&path, STUDIO_TOML.replace("credits = 20", "credits = 20\nmonthly = true")).unwrap();
    let config = path.display().to_string();
    let app = spawn_app_with(db.with_shop(&STUDIO), &[("TALLY_CONFIG", config.as_str())]).await;
    app.spend("fay", 15, "k1").await;
    let story = Story { user: "sam", shape: Shape::V2026 };
    app.deliver(&story.pack_checkout("cs_p", "boost", 500, now()), "applied").await;
    let next_month = now() + 32 * DAY;
    let granted = app.store.grant_due(next_month).await.unwrap();
    assert_eq!(granted.free, 2, "both free accounts");
    assert_eq!(app.balance("fay").await, ("free".into(), 20, 0));
    assert_eq!(app.balance("sam").await, ("free".into(), 20, 250), "packs are kept");
    assert_eq!(app.store.grant_due(next_month + DAY).await.unwrap().free, 0, "once a month");
    app.assert_books_balance().await;
}

async fn a_tier_the_catalogue_no_longer_has_is_reported_not_guessed(db: Db) {
    let app = studio(db).await;
    let story = Story { user: "old", shape: Shape::V2026 };
    let t = now();
    let created = story.subscription("customer.subscription.created", "sub_o", "price_team_m", "active", t, t + MONTH);
    app.deliver(&created, "applied").await;
    app.deliver(&story.invoice("in_o", "sub_o", "price_team_m", "subscription_create", t, t + MONTH, 9_900), "applied")
        .await;
    // A tally whose catalogue has dropped the team plan entirely.
    let without_team = STUDIO_TOML.split("[plans.team]").next().unwrap().to_owned()
        + STUDIO_TOML.split_once("[packs.boost]").map(|(_, rest)| format!("[packs.boost]{rest}")).unwrap().as_str();
    let smaller = tally_core::Catalogue::from_toml(&without_team).unwrap();
    let store = tally_store::Store::connect(&app.database_url, std::sync::Arc::new(smaller)).await.unwrap();
    let billing = store.billing("old").await.unwrap();
    assert_eq!(billing.tier, "team", "kept as stored, not turned into free");
    let problems = store.audit().await.unwrap().violations;
    assert!(problems.iter().any(|p| p.contains("tier team")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("price price_team_m")), "{problems:?}");
    let drift = store.catalogue_drift().await.unwrap();
    assert_eq!(drift.unknown_prices, [("price_team_m".to_owned(), 1)]);
}

/// A tick while the database is down fails as an outage and grants nothing; the month is
/// still due, so the next tick grants it, once.
async fn a_tick_the_database_refuses_loses_no_month(db: Db) {
    let app = studio(db).await;
    let story = Story { user: "dee", shape: Shape::V2026 };
    let start = now() - 40 * DAY;
    yearly_hobby(&app, &story, "sub_d", start).await;
    app.spend("dee", 200, "k1").await;
    let t = tally_core::calendar::anniversary(start, 1) + 60;
    let down = app.second_store().await;
    down.close().await;
    assert!(matches!(down.grant_due(t).await, Err(tally_store::StoreError::Unavailable(_))));
    assert_eq!(app.balance("dee").await.1, 100, "nothing granted");
    assert_eq!(app.store.grant_due(t).await.unwrap().months, 1);
    assert_eq!(app.store.grant_due(t + 60).await.unwrap().months, 0);
    assert_eq!(app.balance("dee").await, ("hobby".into(), 300, 0));
    app.assert_books_balance().await;
}
