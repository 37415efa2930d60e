//! What `tally doctor` reads from the Stripe account, read-only: the key's mode, the
//! catalogue's prices, the webhook endpoints and the Customer Portal configurations,
//! and how each compares to what tally needs.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tally_core::{Interval, Price as CataloguePrice};

use crate::api::{HANDLED_EVENTS, path_segment};
use crate::client::{StripeClient, StripeError};

/// `GET /v1/balance`: readable with any working secret or restricted key.
#[derive(Debug, Clone, Deserialize)]
pub struct Balance {
    pub livemode: bool,
}

/// A Stripe price, with the fields that decide whether it sells what the catalogue says.
#[derive(Debug, Clone, Deserialize)]
pub struct StripePrice {
    pub id: String,
    pub active: bool,
    pub livemode: bool,
    pub unit_amount: Option<i64>,
    pub currency: String,
    pub recurring: Option<crate::api::Recurring>,
}

/// A webhook endpoint of the account.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookEndpoint {
    pub id: String,
    pub url: String,
    pub enabled_events: Vec<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    pub api_version: Option<String>,
}

/// A Customer Portal configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct PortalConfiguration {
    pub id: String,
    pub active: bool,
    pub is_default: bool,
}

#[derive(Deserialize)]
struct Page<T> {
    data: Vec<T>,
    #[serde(default)]
    has_more: bool,
}

/// Objects of a list endpoint: what paging by `starting_after` needs of them.
trait Listed: DeserializeOwned {
    fn id(&self) -> &str;
}

impl Listed for WebhookEndpoint {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Listed for PortalConfiguration {
    fn id(&self) -> &str {
        &self.id
    }
}

/// The most pages read of one list: a bound for a misbehaving peer, far past any account.
const MAX_PAGES: usize = 50;

impl StripeClient {
    /// Whether the key works, and in which mode.
    pub async fn balance(&self) -> Result<Balance, StripeError> {
        self.get("/v1/balance", &[]).await
    }

    /// The price, or `None` when Stripe has none of that id (in the key's mode).
    pub async fn retrieve_price(&self, id: &str) -> Result<Option<StripePrice>, StripeError> {
        match self.get(&format!("/v1/prices/{}", path_segment(id)), &[]).await {
            Ok(price) => Ok(Some(price)),
            Err(StripeError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every webhook endpoint of the account.
    pub async fn webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StripeError> {
        self.list_all("/v1/webhook_endpoints").await
    }

    /// Every Customer Portal configuration of the account.
    pub async fn portal_configurations(&self) -> Result<Vec<PortalConfiguration>, StripeError> {
        self.list_all("/v1/billing_portal/configurations").await
    }

    async fn list_all<T: Listed>(&self, path: &str) -> Result<Vec<T>, StripeError> {
        let mut all: Vec<T> = Vec::new();
        for _ in 0..MAX_PAGES {
            let mut query = vec![("limit", "100")];
            let after = all.last().map(|o| o.id().to_owned());
            if let Some(after) = &after {
                query.push(("starting_after", after));
            }
            let page: Page<T> = self.get(path, &query).await?;
            let more = page.has_more && !page.data.is_empty();
            all.extend(page.data);
            if !more {
                break;
            }
        }
        Ok(all)
    }
}

/// How a Stripe price differs from the catalogue's, for a key in `livemode`: each
/// difference in plain words (none when it sells what the catalogue says).
pub fn price_differences(stripe: &StripePrice, want: &CataloguePrice, livemode: bool) -> Vec<String> {
    let mode = |live: bool| if live { "live" } else { "test" };
    let mut found = Vec::new();
    if !stripe.active {
        found.push("archived (inactive) in Stripe".to_owned());
    }
    if stripe.livemode != livemode {
        found.push(format!("a {}-mode price, but the key is {}-mode", mode(stripe.livemode), mode(livemode)));
    }
    if stripe.unit_amount != Some(want.amount) {
        let amount = stripe.unit_amount.map_or("none".to_owned(), |a| a.to_string());
        found.push(format!("amount {amount} in Stripe, {} in the catalogue", want.amount));
    }
    if !stripe.currency.eq_ignore_ascii_case(&want.currency) {
        found.push(format!("currency {} in Stripe, {} in the catalogue", stripe.currency, want.currency));
    }
    let interval = stripe.recurring.as_ref().map(|r| r.interval.as_str());
    if interval != want.interval.map(Interval::as_str) {
        let say = |i: Option<&str>| i.map_or("one-time".to_owned(), |i| format!("per {i}"));
        found.push(format!(
            "{} in Stripe, {} in the catalogue",
            say(interval),
            say(want.interval.map(Interval::as_str))
        ));
    }
    found
}

/// The event types tally handles that the endpoint does not send (`*` sends them all).
pub fn missing_events(endpoint: &WebhookEndpoint) -> Vec<&'static str> {
    if endpoint.enabled_events.iter().any(|e| e == "*") {
        return Vec::new();
    }
    HANDLED_EVENTS.iter().copied().filter(|wanted| !endpoint.enabled_events.iter().any(|e| e == wanted)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(events: &[&str]) -> WebhookEndpoint {
        WebhookEndpoint {
            id: "we_1".into(),
            url: "https://x/api/webhooks/stripe".into(),
            enabled_events: events.iter().map(|e| (*e).to_owned()).collect(),
            status: "enabled".into(),
            api_version: None,
        }
    }

    #[test]
    fn a_wildcard_endpoint_sends_every_handled_event() {
        assert!(missing_events(&endpoint(&["*"])).is_empty());
        assert!(missing_events(&endpoint(&HANDLED_EVENTS)).is_empty());
        assert_eq!(missing_events(&endpoint(&HANDLED_EVENTS[1..])), [HANDLED_EVENTS[0]]);
    }

    #[test]
    fn a_price_that_sells_the_catalogue_price_has_no_differences() {
        let want = CataloguePrice {
            id: Some("price_1".into()),
            amount: 4900,
            currency: "usd".into(),
            interval: Some(Interval::Month),
        };
        let mut price = StripePrice {
            id: "price_1".into(),
            active: true,
            livemode: false,
            unit_amount: Some(4900),
            currency: "usd".into(),
            recurring: Some(crate::api::Recurring { interval: "month".into() }),
        };
        assert!(price_differences(&price, &want, false).is_empty());
        assert_eq!(price_differences(&price, &want, true).len(), 1);
        price.recurring = None;
        price.active = false;
        assert_eq!(price_differences(&price, &want, false).len(), 2);
    }
}
