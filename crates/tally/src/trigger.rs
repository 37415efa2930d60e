//! `tally trigger`: the offline stand-in for `stripe trigger`. It builds the events
//! Stripe would send for a user's next step, continuing from what the database knows
//! of that user, signs them with the configured (or dev) webhook secret, and posts them.

use anyhow::{Context, bail};
use serde_json::Value;
use tally_core::{Catalogue, Interval, Price, Product};
use tally_server::{Config, DEV_WEBHOOK_SECRET_KEY};
use tally_store::TriggerState;
use tally_stripe::fake::{self, ChargeSpec, CheckoutSpec, InvoiceSpec, Shape, SubscriptionSpec};

const MONTH: i64 = 30 * 24 * 3600;
const YEAR: i64 = 365 * 24 * 3600;

#[derive(clap::Args)]
pub struct Args {
    /// checkout.session.completed, checkout.session.async_payment_succeeded, invoice.paid,
    /// invoice.payment_succeeded, invoice.payment_failed, customer.subscription.updated,
    /// customer.subscription.deleted or charge.refunded.
    event: String,
    /// The user the event is about.
    #[arg(long, default_value = "dev-user")]
    user: String,
    /// The catalogue's plan or pack id bought (checkout) or changed to
    /// (subscription.updated); default: the first plan.
    #[arg(long)]
    item: Option<String>,
    /// Which of the plan's prices: month or year; default: its first.
    #[arg(long, value_parser = ["month", "year"])]
    interval: Option<String>,
    /// Where to post; default: the webhook route at TALLY_BIND.
    #[arg(long)]
    url: Option<String>,
    /// The API shape of the payload: 2023 (invoice.subscription) or 2026 (invoice.parent).
    #[arg(long, default_value = "2026", value_parser = ["2023", "2026"])]
    api_version: String,
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let store = config.connect_store().await?;
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
        catalogue: &config.catalogue,
    };
    let interval = args.interval.as_deref().and_then(Interval::parse);
    let events = story.events(&args.event, args.item.as_deref(), interval, &state)?;
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

/// A catalogue price that a story pays: the item it sells and its Stripe id.
struct Priced<'a> {
    item: Product<'a>,
    price: &'a Price,
    id: &'a str,
}

impl Priced<'_> {
    /// How long one period of this price lasts.
    fn period(&self) -> i64 {
        if self.price.interval == Some(Interval::Year) { YEAR } else { MONTH }
    }
}

/// The next chapter of one user's life as a Stripe customer.
struct Story<'a> {
    shape: Shape,
    user: &'a str,
    customer: String,
    now: i64,
    catalogue: &'a Catalogue,
}

impl<'a> Story<'a> {
    /// The price of `item` (default: the first plan) at `interval` (default: its first).
    fn priced(&self, item: Option<&str>, interval: Option<Interval>) -> anyhow::Result<Priced<'a>> {
        let catalogue = self.catalogue;
        let product = match item {
            Some(id) => catalogue.item(id).with_context(|| format!("{id:?} is not a plan or pack of the catalogue"))?,
            None => Product::Plan(catalogue.plans.first().context("the catalogue has no plan")?),
        };
        let price = product
            .price_for(interval)
            .with_context(|| format!("{} has no {} price", product.id(), interval.map_or("", Interval::as_str)))?;
        let id = price
            .id
            .as_deref()
            .with_context(|| format!("a price of {} has no Stripe id yet: run `tally stripe-setup`", product.id()))?;
        Ok(Priced { item: product, price, id })
    }

    /// The price a subscription is on now: its stored price, else its plan's first.
    fn current_price(&self, plan: Option<&str>, price_id: Option<&str>) -> anyhow::Result<Priced<'a>> {
        let by_price = price_id.and_then(|id| {
            let product = self.catalogue.product_of_price(id)?;
            let price = product.prices().iter().find(|p| p.id.as_deref() == Some(id))?;
            Some(Priced { item: product, price, id: price.id.as_deref()? })
        });
        match by_price {
            Some(priced) => Ok(priced),
            None => self.priced(plan, None),
        }
    }

    fn event(&self, event_type: &str, object: Value) -> Value {
        fake::event(self.shape, event_type, &new_id("evt"), self.now, object)
    }

    fn events(
        &self,
        event_type: &str,
        item: Option<&str>,
        interval: Option<Interval>,
        state: &TriggerState,
    ) -> anyhow::Result<Vec<Value>> {
        match event_type {
            "checkout.session.completed" => {
                let priced = self.priced(item, interval)?;
                match priced.item {
                    Product::Pack(_) => Ok(vec![self.pack_checkout(&priced, "checkout.session.completed", "paid")]),
                    Product::Plan(_) => Ok(self.subscribe(&priced)),
                }
            }
            "checkout.session.async_payment_succeeded" => {
                let pack = match item {
                    Some(_) => self.priced(item, None)?,
                    None => self.priced(
                        Some(self.catalogue.packs.first().context("the catalogue has no pack")?.id.as_str()),
                        None,
                    )?,
                };
                Ok(vec![
                    self.pack_checkout(&pack, "checkout.session.completed", "unpaid"),
                    self.pack_checkout(&pack, "checkout.session.async_payment_succeeded", "paid"),
                ])
            }
            "invoice.paid" | "invoice.payment_succeeded" | "invoice.payment_failed" => {
                let (sub, priced, period_start) = self.current_subscription(state)?;
                // The period after the newest one granted.
                let start = match period_start {
                    0 => state.current_period_end.unwrap_or(self.now + priced.period()),
                    latest => latest + priced.period(),
                };
                let paid = event_type != "invoice.payment_failed";
                let invoice =
                    self.invoice(&sub, &priced, "subscription_cycle", start, if paid { "paid" } else { "open" });
                Ok(vec![self.event(event_type, invoice)])
            }
            "customer.subscription.updated" => {
                let (sub, current, period_start) = self.current_subscription(state)?;
                let to = match item {
                    Some(_) => self.priced(item, interval)?,
                    None => current,
                };
                if matches!(to.item, Product::Pack(_)) {
                    bail!("a subscription changes to a plan, not to the pack {}", to.item.id());
                }
                Ok(vec![self.event(event_type, self.subscription(&sub, &to, "active", period_start))])
            }
            "customer.subscription.deleted" => {
                let (sub, priced, period_start) = self.current_subscription(state)?;
                Ok(vec![self.event(event_type, self.subscription(&sub, &priced, "canceled", period_start))])
            }
            "charge.refunded" => {
                let (payment_intent, _) = state.topup.clone().context("this user has bought no pack to refund")?;
                // A full refund: the share of the pack's credits is the whole pack.
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
    fn subscribe(&self, priced: &Priced) -> Vec<Value> {
        let sub = new_id("sub");
        let session = CheckoutSpec {
            id: &new_id("cs"),
            user: self.user,
            item: priced.item.id(),
            payment_status: "paid",
            customer: &self.customer,
            subscription: Some(&sub),
            payment_intent: None,
            amount: priced.price.amount,
        };
        vec![
            self.event("customer.subscription.created", self.subscription(&sub, priced, "active", 0)),
            self.event("invoice.paid", self.invoice(&sub, priced, "subscription_create", self.now, "paid")),
            self.event("checkout.session.completed", fake::checkout_session(self.shape, &session)),
        ]
    }

    fn pack_checkout(&self, priced: &Priced, event_type: &str, payment_status: &str) -> Value {
        // Both events of an async payment are about the same session.
        let session_id = format!("cs_topup_{}_{}", self.user, self.now);
        let payment_intent = format!("pi_topup_{}_{}", self.user, self.now);
        let session = CheckoutSpec {
            id: &session_id,
            user: self.user,
            item: priced.item.id(),
            payment_status,
            customer: &self.customer,
            subscription: None,
            payment_intent: Some(&payment_intent),
            amount: priced.price.amount,
        };
        self.event(event_type, fake::checkout_session(self.shape, &session))
    }

    fn invoice(&self, sub: &str, priced: &Priced, reason: &str, period_start: i64, status: &str) -> Value {
        let spec = InvoiceSpec {
            id: &new_id("in"),
            subscription: sub,
            customer: &self.customer,
            user: Some(self.user),
            price: priced.id,
            billing_reason: reason,
            period_start,
            period_end: period_start + priced.period(),
            amount: priced.price.amount,
            status,
        };
        fake::invoice(self.shape, &spec)
    }

    /// A subscription object; `period_start` 0 means its first period.
    fn subscription(&self, sub: &str, priced: &Priced, status: &str, period_start: i64) -> Value {
        let period = priced.period();
        let (start_date, start) =
            if period_start == 0 { (self.now, self.now) } else { (period_start - period, period_start) };
        let spec = SubscriptionSpec {
            id: sub,
            customer: &self.customer,
            user: Some(self.user),
            price: priced.id,
            status,
            start_date,
            period_start: start,
            period_end: start + period,
            cancel_at_period_end: false,
        };
        fake::subscription(self.shape, &spec)
    }

    /// The user's subscription, the price it is on and the start of its current period.
    fn current_subscription(&self, state: &TriggerState) -> anyhow::Result<(String, Priced<'a>, i64)> {
        let Some((id, status, plan)) = &state.subscription else {
            bail!("user {:?} has no subscription yet: trigger checkout.session.completed first", self.user);
        };
        if status == "canceled" {
            bail!(
                "subscription {id} of user {:?} is canceled: start a new one with checkout.session.completed",
                self.user
            );
        }
        let priced = self.current_price(plan.as_deref(), state.price_id.as_deref())?;
        Ok((id.clone(), priced, state.latest_period.unwrap_or(0)))
    }
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(rand::random::<[u8; 12]>()))
}
