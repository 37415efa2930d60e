//! `tally trigger`: the offline stand-in for `stripe trigger`. It builds the events
//! Stripe would send for a user's next step, continuing from what the database knows
//! of that user, signs them with the configured (or dev) webhook secret, and posts them.

use anyhow::{Context, bail};
use serde_json::Value;
use tally_core::{Item, Plan};
use tally_server::{Config, DEV_WEBHOOK_SECRET_KEY};
use tally_store::{Store, TriggerState};
use tally_stripe::fake::{self, ChargeSpec, CheckoutSpec, InvoiceSpec, Shape, SubscriptionSpec};

const MONTH: i64 = 30 * 24 * 3600;

#[derive(clap::Args)]
pub struct Args {
    /// checkout.session.completed, checkout.session.async_payment_succeeded, invoice.paid,
    /// invoice.payment_succeeded, invoice.payment_failed, customer.subscription.updated,
    /// customer.subscription.deleted or charge.refunded.
    event: String,
    /// The user the event is about.
    #[arg(long, default_value = "dev-user")]
    user: String,
    /// What was bought (checkout) or changed to (subscription.updated).
    #[arg(long, value_parser = ["pro", "enterprise", "topup"])]
    item: Option<String>,
    /// Where to post; default: the webhook route at TALLY_BIND.
    #[arg(long)]
    url: Option<String>,
    /// The API shape of the payload: 2023 (invoice.subscription) or 2026 (invoice.parent).
    #[arg(long, default_value = "2026", value_parser = ["2023", "2026"])]
    api_version: String,
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await?;
    let secret = match config.webhook_secrets.first() {
        Some(secret) => secret.clone(),
        None => store
            .setting(DEV_WEBHOOK_SECRET_KEY)
            .await?
            .context("no webhook secret: set STRIPE_WEBHOOK_SECRET or run `tally serve` once to create one")?,
    };
    let state = store.trigger_state(&args.user).await?;
    let story = Story {
        shape: if args.api_version == "2023" { Shape::V2023 } else { Shape::V2026 },
        user: &args.user,
        customer: state.customer.clone().unwrap_or_else(|| new_id("cus")),
        now: tally_store::now(),
        config: &config,
    };
    let item = args.item.as_deref().and_then(Item::parse);
    let events = story.events(&args.event, item, &state)?;
    let url = args.url.clone().unwrap_or_else(|| {
        let host =
            if config.bind.ip().is_unspecified() { "127.0.0.1".to_owned() } else { config.bind.ip().to_string() };
        format!("http://{host}:{}/api/webhooks/stripe", config.bind.port())
    });
    let client = reqwest::Client::new();
    for event in events {
        let body = event.to_string();
        let header = tally_stripe::sign(body.as_bytes(), &secret, tally_store::now());
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .header("stripe-signature", header)
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot post to {url}; is `tally serve` running?"))?;
        let status = response.status();
        let answer = response.text().await.unwrap_or_default();
        println!(
            "{} {} -> {} {}",
            event["type"].as_str().unwrap_or("?"),
            event["id"].as_str().unwrap_or("?"),
            status.as_u16(),
            answer
        );
        if !status.is_success() {
            bail!("tally answered {status}");
        }
    }
    Ok(())
}

/// The next chapter of one user's life as a Stripe customer.
struct Story<'a> {
    shape: Shape,
    user: &'a str,
    customer: String,
    now: i64,
    config: &'a Config,
}

impl Story<'_> {
    fn price(&self, item: Item) -> String {
        let offer = self.config.catalog.offer(item);
        offer.price_id.clone().unwrap_or_else(|| tally_server::config::dev_price_id(item))
    }

    fn event(&self, event_type: &str, object: Value) -> Value {
        fake::event(self.shape, event_type, &new_id("evt"), self.now, object)
    }

    fn events(&self, event_type: &str, item: Option<Item>, state: &TriggerState) -> anyhow::Result<Vec<Value>> {
        match event_type {
            "checkout.session.completed" => match item.unwrap_or(Item::Pro) {
                Item::Topup => Ok(vec![self.topup_checkout("checkout.session.completed", "paid")]),
                plan_item => Ok(self.subscribe(plan_item)),
            },
            "checkout.session.async_payment_succeeded" => Ok(vec![
                self.topup_checkout("checkout.session.completed", "unpaid"),
                self.topup_checkout("checkout.session.async_payment_succeeded", "paid"),
            ]),
            "invoice.paid" | "invoice.payment_succeeded" | "invoice.payment_failed" => {
                let (sub, plan, period_start) = self.current_subscription(state)?;
                // The period after the newest one granted.
                let start = match period_start {
                    0 => state.current_period_end.unwrap_or(self.now + MONTH),
                    latest => latest + MONTH,
                };
                let paid = event_type != "invoice.payment_failed";
                let invoice = self.invoice(
                    &sub,
                    plan_item(plan),
                    "subscription_cycle",
                    start,
                    if paid { "paid" } else { "open" },
                );
                Ok(vec![self.event(event_type, invoice)])
            }
            "customer.subscription.updated" => {
                let (sub, plan, period_start) = self.current_subscription(state)?;
                let to = item.unwrap_or(plan_item(plan));
                if to == Item::Topup {
                    bail!("a subscription changes to pro or enterprise, not topup");
                }
                Ok(vec![self.event(event_type, self.subscription(&sub, to, "active", period_start))])
            }
            "customer.subscription.deleted" => {
                let (sub, plan, period_start) = self.current_subscription(state)?;
                Ok(vec![self.event(event_type, self.subscription(&sub, plan_item(plan), "canceled", period_start))])
            }
            "charge.refunded" => {
                let (payment_intent, _) = state.topup.clone().context("this user has bought no top-up to refund")?;
                let amount = 2_000;
                let charge = ChargeSpec {
                    id: &new_id("ch"),
                    payment_intent: &payment_intent,
                    customer: &self.customer,
                    amount,
                    amount_refunded: amount,
                };
                Ok(vec![self.event(event_type, fake::charge(self.shape, &charge))])
            }
            other => bail!("cannot trigger {other:?}; see `tally trigger --help` for the events tally acts on"),
        }
    }

    /// What Stripe sends when a checkout starts a subscription: the session, the
    /// subscription and its first invoice. tally grants the first period once.
    fn subscribe(&self, item: Item) -> Vec<Value> {
        let sub = new_id("sub");
        let session = CheckoutSpec {
            id: &new_id("cs"),
            user: self.user,
            item: item.as_str(),
            payment_status: "paid",
            customer: &self.customer,
            subscription: Some(&sub),
            payment_intent: None,
            amount: amount_of(item),
        };
        vec![
            self.event("customer.subscription.created", self.subscription(&sub, item, "active", 0)),
            self.event("invoice.paid", self.invoice(&sub, item, "subscription_create", self.now, "paid")),
            self.event("checkout.session.completed", fake::checkout_session(self.shape, &session)),
        ]
    }

    fn topup_checkout(&self, event_type: &str, payment_status: &str) -> Value {
        // Both events of an async payment are about the same session.
        let session_id = format!("cs_topup_{}_{}", self.user, self.now);
        let payment_intent = format!("pi_topup_{}_{}", self.user, self.now);
        let session = CheckoutSpec {
            id: &session_id,
            user: self.user,
            item: "topup",
            payment_status,
            customer: &self.customer,
            subscription: None,
            payment_intent: Some(&payment_intent),
            amount: amount_of(Item::Topup),
        };
        self.event(event_type, fake::checkout_session(self.shape, &session))
    }

    fn invoice(&self, sub: &str, item: Item, reason: &str, period_start: i64, status: &str) -> Value {
        let spec = InvoiceSpec {
            id: &new_id("in"),
            subscription: sub,
            customer: &self.customer,
            user: Some(self.user),
            price: &self.price(item),
            billing_reason: reason,
            period_start,
            period_end: period_start + MONTH,
            amount: amount_of(item),
            status,
        };
        fake::invoice(self.shape, &spec)
    }

    /// A subscription object; `period_start` 0 means its first period.
    fn subscription(&self, sub: &str, item: Item, status: &str, period_start: i64) -> Value {
        let (start_date, start) =
            if period_start == 0 { (self.now, self.now) } else { (period_start - MONTH, period_start) };
        let spec = SubscriptionSpec {
            id: sub,
            customer: &self.customer,
            user: Some(self.user),
            price: &self.price(item),
            status,
            start_date,
            period_start: start,
            period_end: start + MONTH,
            cancel_at_period_end: false,
        };
        fake::subscription(self.shape, &spec)
    }

    /// The user's subscription, its plan and the start of its current period.
    fn current_subscription(&self, state: &TriggerState) -> anyhow::Result<(String, Plan, i64)> {
        let Some((id, status, plan)) = &state.subscription else {
            bail!("user {:?} has no subscription yet: trigger checkout.session.completed --item pro first", self.user);
        };
        if status == "canceled" {
            bail!(
                "subscription {id} of user {:?} is canceled: start a new one with checkout.session.completed",
                self.user
            );
        }
        Ok((id.clone(), plan.unwrap_or(Plan::Pro), state.latest_period.unwrap_or(0)))
    }
}

fn plan_item(plan: Plan) -> Item {
    if plan == Plan::Enterprise { Item::Enterprise } else { Item::Pro }
}

/// What Stripe charges for an item, in cents (CONTRACT §1).
fn amount_of(item: Item) -> i64 {
    match item {
        Item::Pro => 4_900,
        Item::Enterprise => 19_900,
        Item::Topup => 2_000,
    }
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(rand::random::<[u8; 12]>()))
}
