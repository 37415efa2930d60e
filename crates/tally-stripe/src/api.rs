//! The Stripe calls tally makes, with Stripe's own parameter names.

use serde::Deserialize;
use tally_core::event::CheckoutSession;
use tally_core::{Catalogue, Interval, Price as CataloguePrice, Product};

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
    /// The plan or pack id, kept in the session's metadata.
    pub item: &'a str,
    /// A plan's recurring price (subscription mode) rather than a pack's one-time one.
    pub subscription: bool,
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
            pair("mode", if self.subscription { "subscription" } else { "payment" }),
            pair("customer", self.customer),
            pair("client_reference_id", self.user_id),
            pair("line_items[0][price]", self.price_id),
            pair("line_items[0][quantity]", "1"),
            pair("metadata[user_id]", self.user_id),
            pair("metadata[item]", self.item),
            pair("success_url", self.success_url),
            pair("cancel_url", self.cancel_url),
        ];
        if self.subscription {
            form.push(pair("subscription_data[metadata][user_id]", self.user_id));
        } else {
            form.push(pair("payment_intent_data[metadata][user_id]", self.user_id));
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
    pub product: Option<String>,
    pub unit_amount: Option<i64>,
    pub currency: Option<String>,
    pub recurring: Option<Recurring>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Recurring {
    pub interval: String,
}

impl Price {
    /// Whether this Stripe price sells what the catalogue's price says.
    fn matches(&self, want: &CataloguePrice) -> bool {
        self.unit_amount == Some(want.amount)
            && self.currency.as_deref() == Some(want.currency.as_str())
            && self.recurring.as_ref().map(|r| r.interval.as_str()) == want.interval.map(Interval::as_str)
    }
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
        self.get(&format!("/v1/customers/{}", path_segment(id)), &[]).await
    }

    pub async fn create_checkout_session(&self, request: &CheckoutRequest<'_>) -> Result<CreatedSession, StripeError> {
        self.post("/v1/checkout/sessions", &request.form(), &new_key("checkout")).await
    }

    /// A Checkout Session as the webhook would carry it, read the same tolerant way.
    pub async fn retrieve_checkout_session(&self, id: &str) -> Result<RetrievedSession, StripeError> {
        let path = format!("/v1/checkout/sessions/{}", path_segment(id));
        let raw: Box<serde_json::value::RawValue> = self.get(&path, &[]).await?;
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

    /// A product for a catalogue item.
    pub async fn create_product(&self, item: &str, name: &str) -> Result<String, StripeError> {
        let form = [("name".to_owned(), name.to_owned()), ("metadata[tally_item]".to_owned(), item.to_owned())];
        let product: Created = self.post("/v1/products", &form, &new_key("product")).await?;
        Ok(product.id)
    }

    /// A price of `product`, under `lookup_key`; `transfer` moves the key from an older
    /// price of the same item (a changed amount), so that a rerun finds this one.
    pub async fn create_price(
        &self,
        product: &str,
        lookup_key: &str,
        price: &CataloguePrice,
        transfer: bool,
    ) -> Result<Price, StripeError> {
        let mut form = vec![
            ("product".to_owned(), product.to_owned()),
            ("currency".to_owned(), price.currency.clone()),
            ("unit_amount".to_owned(), price.amount.to_string()),
            ("lookup_key".to_owned(), lookup_key.to_owned()),
        ];
        if let Some(interval) = price.interval {
            form.push(("recurring[interval]".to_owned(), interval.as_str().to_owned()));
        }
        if transfer {
            form.push(("transfer_lookup_key".to_owned(), "true".to_owned()));
        }
        let key = format!("tally-price-{lookup_key}-{}-{}", price.currency, price.amount);
        self.post("/v1/prices", &form, &key).await
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

/// One page of a Stripe list, newest first, each object kept raw.
#[derive(Debug, Deserialize)]
pub struct RawPage {
    pub data: Vec<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub has_more: bool,
}

impl StripeClient {
    /// Events of one handled type created at or after `since`, a page at a time. One
    /// type per list (`type`, not `types[]`), which every Stripe API version and
    /// localstripe answer alike.
    pub async fn list_events(
        &self,
        event_type: &str,
        since: i64,
        starting_after: Option<&str>,
    ) -> Result<RawPage, StripeError> {
        let since = since.to_string();
        let mut query = vec![("type", event_type), ("created[gte]", since.as_str()), ("limit", "100")];
        if let Some(after) = starting_after {
            query.push(("starting_after", after));
        }
        self.get("/v1/events", &query).await
    }

    /// Every subscription, whatever its status, a page at a time.
    pub async fn list_subscriptions(&self, starting_after: Option<&str>) -> Result<RawPage, StripeError> {
        let mut query = vec![("status", "all"), ("limit", "100")];
        if let Some(after) = starting_after {
            query.push(("starting_after", after));
        }
        self.get("/v1/subscriptions", &query).await
    }

    /// An invoice, raw, to be read the way its webhook would be.
    pub async fn retrieve_invoice(&self, id: &str) -> Result<Box<serde_json::value::RawValue>, StripeError> {
        self.get(&format!("/v1/invoices/{}", path_segment(id)), &[]).await
    }
}

/// The lookup key of an item's price: `tally_{item}` for a monthly or one-time price (so
/// the default catalogue keeps the keys it always had), `tally_{item}_year` for a yearly one.
pub fn lookup_key(item: &str, interval: Option<Interval>) -> String {
    match interval {
        Some(Interval::Year) => format!("tally_{item}_year"),
        _ => format!("tally_{item}"),
    }
}

/// A catalogue price that `tally stripe-setup` found or created in Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsuredPrice {
    pub item: String,
    /// Its position in the item's `prices`.
    pub index: usize,
    pub id: String,
    /// Made now, rather than found from an earlier run.
    pub created: bool,
}

impl StripeClient {
    /// Gives every catalogue price without an id one: the active Stripe price under its
    /// lookup key when that sells the same amount, currency and interval, else a new
    /// one (on the item's existing product when it has one). A rerun duplicates nothing.
    pub async fn ensure_catalogue(&self, catalogue: &Catalogue) -> Result<Vec<EnsuredPrice>, StripeError> {
        let items: Vec<Product<'_>> =
            catalogue.plans.iter().map(Product::Plan).chain(catalogue.packs.iter().map(Product::Pack)).collect();
        let mut ensured = Vec::new();
        for item in items {
            let wanted: Vec<(usize, &CataloguePrice, String)> = item
                .prices()
                .iter()
                .enumerate()
                .filter(|(_, p)| p.id.is_none())
                .map(|(i, p)| (i, p, lookup_key(item.id(), p.interval)))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let all_keys: Vec<String> = item.prices().iter().map(|p| lookup_key(item.id(), p.interval)).collect();
            let key_refs: Vec<&str> = all_keys.iter().map(String::as_str).collect();
            let existing = self.prices_by_lookup_key(&key_refs).await?;
            let mut product = existing.iter().find_map(|p| p.product.clone());
            for (index, price, key) in wanted {
                let found = existing.iter().find(|p| p.lookup_key.as_deref() == Some(key.as_str()));
                if let Some(found) = found.filter(|p| p.matches(price)) {
                    ensured.push(EnsuredPrice { item: item.id().into(), index, id: found.id.clone(), created: false });
                    continue;
                }
                let product_id = match &product {
                    Some(id) => id.clone(),
                    None => self.create_product(item.id(), item.name()).await?,
                };
                product = Some(product_id.clone());
                let made = self.create_price(&product_id, &key, price, found.is_some()).await?;
                ensured.push(EnsuredPrice { item: item.id().into(), index, id: made.id, created: true });
            }
        }
        Ok(ensured)
    }
}

/// Everything but unreserved characters, so that an id is always one path segment.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `id` as one path segment of a Stripe URL: `../` and `?` cannot reach another endpoint.
pub fn path_segment(id: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(id, SEGMENT).to_string();
    // "." and ".." are path steps even when every other character is plain.
    if encoded.trim_matches('.').is_empty() { encoded.replace('.', "%2E") } else { encoded }
}

/// Whether `id` has the shape of a Checkout Session id: `cs_` and letters, digits, `_`.
pub fn is_checkout_session_id(id: &str) -> bool {
    id.len() <= 255
        && id
            .strip_prefix("cs_")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// A fresh idempotency key for one logical call (kept across its retries).
fn new_key(what: &str) -> String {
    format!("tally-{what}-{}", hex::encode(rand::random::<[u8; 16]>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_always_one_path_segment() {
        assert_eq!(path_segment("cs_test_a1B2"), "cs_test_a1B2");
        assert_eq!(path_segment("../../v1/customers/cus_1"), "..%2F..%2Fv1%2Fcustomers%2Fcus_1");
        assert_eq!(path_segment("x?expand[]=y#z"), "x%3Fexpand%5B%5D%3Dy%23z");
        assert_eq!(path_segment(".."), "%2E%2E");
    }

    #[test]
    fn only_checkout_session_shapes_are_session_ids() {
        assert!(is_checkout_session_id("cs_test_a1b2C3"));
        for bad in ["", "cs_", "../cs_1", "cs_1/../x", "pi_123", "cs_1%2F", "cs_\u{0}"] {
            assert!(!is_checkout_session_id(bad), "{bad:?}");
        }
    }
}
