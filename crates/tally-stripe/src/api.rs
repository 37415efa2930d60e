//! The Stripe calls tally makes, with Stripe's own parameter names.

use serde::Deserialize;
use tally_core::Item;
use tally_core::event::CheckoutSession;

use crate::client::{StripeClient, StripeError};

#[derive(Debug, Clone, Deserialize)]
pub struct Customer {
    pub id: String,
}

/// Any object Stripe made, when only its id matters.
#[derive(Debug, Clone, Deserialize)]
struct Created {
    id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreatedSession {
    pub id: String,
    pub url: String,
}

/// A Checkout Session fetched from the API, normalized and raw.
#[derive(Debug, Clone)]
pub struct RetrievedSession {
    pub session: CheckoutSession,
    pub created: i64,
    pub raw: String,
}

/// What tally puts in a Checkout Session; the price comes from configuration only.
#[derive(Debug, Clone)]
pub struct CheckoutRequest<'a> {
    pub user_id: &'a str,
    pub item: Item,
    pub price_id: &'a str,
    pub customer: &'a str,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
    pub allow_promotion_codes: bool,
}

impl CheckoutRequest<'_> {
    /// The form Stripe's API reference documents for POST /v1/checkout/sessions.
    pub fn form(&self) -> Vec<(String, String)> {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let mut form = vec![
            pair("mode", if self.item == Item::Topup { "payment" } else { "subscription" }),
            pair("customer", self.customer),
            pair("client_reference_id", self.user_id),
            pair("line_items[0][price]", self.price_id),
            pair("line_items[0][quantity]", "1"),
            pair("metadata[user_id]", self.user_id),
            pair("metadata[item]", self.item.as_str()),
            pair("success_url", self.success_url),
            pair("cancel_url", self.cancel_url),
        ];
        if self.item == Item::Topup {
            form.push(pair("payment_intent_data[metadata][user_id]", self.user_id));
        } else {
            form.push(pair("subscription_data[metadata][user_id]", self.user_id));
        }
        if self.allow_promotion_codes {
            form.push(pair("allow_promotion_codes", "true"));
        }
        form
    }
}

/// A price found or made by `tally stripe-setup`.
#[derive(Debug, Clone, Deserialize)]
pub struct Price {
    pub id: String,
    pub lookup_key: Option<String>,
}

#[derive(Deserialize)]
struct List<T> {
    data: Vec<T>,
}

impl StripeClient {
    /// The user's Stripe customer. The key derives from the user id, so concurrent
    /// first clicks make one customer.
    pub async fn create_customer(&self, user_id: &str) -> Result<Customer, StripeError> {
        let form = [("metadata[user_id]".to_owned(), user_id.to_owned())];
        self.post("/v1/customers", &form, &format!("tally-customer-{user_id}")).await
    }

    pub async fn retrieve_customer(&self, id: &str) -> Result<serde_json::Value, StripeError> {
        self.get(&format!("/v1/customers/{id}"), &[]).await
    }

    pub async fn create_checkout_session(&self, request: &CheckoutRequest<'_>) -> Result<CreatedSession, StripeError> {
        self.post("/v1/checkout/sessions", &request.form(), &new_key("checkout")).await
    }

    /// A Checkout Session as the webhook would carry it, read the same tolerant way.
    pub async fn retrieve_checkout_session(&self, id: &str) -> Result<RetrievedSession, StripeError> {
        let raw: Box<serde_json::value::RawValue> = self.get(&format!("/v1/checkout/sessions/{id}"), &[]).await?;
        let (session, created) =
            crate::parse::checkout_session(raw.get()).map_err(|e| StripeError::Decode(e.to_string()))?;
        Ok(RetrievedSession { session, created, raw: raw.get().to_owned() })
    }

    pub async fn create_portal_session(&self, customer: &str, return_url: &str) -> Result<CreatedSession, StripeError> {
        let form = [("customer".to_owned(), customer.to_owned()), ("return_url".to_owned(), return_url.to_owned())];
        self.post("/v1/billing_portal/sessions", &form, &new_key("portal")).await
    }

    /// Active prices with these lookup keys.
    pub async fn prices_by_lookup_key(&self, keys: &[&str]) -> Result<Vec<Price>, StripeError> {
        let mut query: Vec<(&str, &str)> = keys.iter().map(|k| ("lookup_keys[]", *k)).collect();
        query.push(("active", "true"));
        let list: List<Price> = self.get("/v1/prices", &query).await?;
        Ok(list.data)
    }

    /// A product and its price, found again by `lookup_key` on a rerun.
    pub async fn create_product_with_price(
        &self,
        name: &str,
        lookup_key: &str,
        unit_amount: i64,
        monthly: bool,
    ) -> Result<Price, StripeError> {
        let product: Created = self
            .post("/v1/products", &[("name".to_owned(), name.to_owned())], &format!("tally-product-{lookup_key}"))
            .await?;
        let mut form = vec![
            ("product".to_owned(), product.id),
            ("currency".to_owned(), "usd".to_owned()),
            ("unit_amount".to_owned(), unit_amount.to_string()),
            ("lookup_key".to_owned(), lookup_key.to_owned()),
        ];
        if monthly {
            form.push(("recurring[interval]".to_owned(), "month".to_owned()));
        }
        self.post("/v1/prices", &form, &format!("tally-price-{lookup_key}")).await
    }
}

/// The event types tally acts on: what `tally sync` asks Stripe for.
pub const HANDLED_EVENTS: [&str; 11] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "charge.refunded",
    "customer.created",
    "customer.updated",
];

/// One page of `GET /v1/events`, newest first, each event kept raw.
#[derive(Debug, Deserialize)]
pub struct EventPage {
    pub data: Vec<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub has_more: bool,
}

impl StripeClient {
    /// Events of the handled types created at or after `since`, a page at a time.
    pub async fn list_events(&self, since: i64, starting_after: Option<&str>) -> Result<EventPage, StripeError> {
        let since = since.to_string();
        let mut query: Vec<(&str, &str)> = HANDLED_EVENTS.iter().map(|t| ("types[]", *t)).collect();
        query.extend([("created[gte]", since.as_str()), ("limit", "100")]);
        if let Some(after) = starting_after {
            query.push(("starting_after", after));
        }
        self.get("/v1/events", &query).await
    }
}

/// The products and prices of CONTRACT §1, by lookup key: (env var, lookup key, name,
/// cents, monthly).
pub const CATALOG: [(&str, &str, &str, i64, bool); 3] = [
    ("STRIPE_PRO_PRICE_ID", "tally_pro", "Pro: 2,500 credits a month", 4_900, true),
    ("STRIPE_ENTERPRISE_PRICE_ID", "tally_enterprise", "Enterprise: 10,000 credits a month", 19_900, true),
    ("STRIPE_TOPUP_PRICE_ID", "tally_topup", "1,000 credits", 2_000, false),
];

impl StripeClient {
    /// Finds tally's prices by lookup key and creates the missing ones, so a rerun
    /// duplicates nothing; returns `(env var, price id)` for each.
    pub async fn ensure_catalog(&self) -> Result<Vec<(&'static str, String)>, StripeError> {
        let keys: Vec<&str> = CATALOG.iter().map(|(_, key, ..)| *key).collect();
        let existing = self.prices_by_lookup_key(&keys).await?;
        let mut lines = Vec::new();
        for (env, key, name, cents, monthly) in CATALOG {
            let found = existing.iter().find(|p| p.lookup_key.as_deref() == Some(key));
            let id = match found {
                Some(price) => price.id.clone(),
                None => self.create_product_with_price(name, key, cents, monthly).await?.id,
            };
            lines.push((env, id));
        }
        Ok(lines)
    }
}

/// A fresh idempotency key for one logical call (kept across its retries).
fn new_key(what: &str) -> String {
    format!("tally-{what}-{}", hex::encode(rand::random::<[u8; 16]>()))
}
