//! Tolerant event parsing: reads only the fields tally needs, from either API shape.
//!
//! The envelope decides whether a body is an event at all (else 400). The object is then
//! read by type; a known type whose object cannot be read is still a stored event, with
//! the reason kept, so it can be replayed once tally understands it.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use tally_core::event::{BillingReason, Charge, CheckoutMode, CheckoutSession, Invoice, Owner, PlanLine, Subscription};
use tally_core::input::{InvalidField, check_id};
use tally_core::{BillingEvent, EventKind};

/// Why a body is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not a Stripe event: {0}")]
    NotAnEvent(String),
}

/// An event whose envelope was read; its object may still have been unreadable.
#[derive(Debug, Clone)]
pub struct ParsedEvent {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub livemode: bool,
    /// The normalized event, or why its object could not be read.
    pub event: Result<BillingEvent, String>,
}

impl ParsedEvent {
    /// The input limits on what the webhook edge stores (CONTRACT §3), checked before the
    /// database: the event's id and type and, when its object was read, every id the
    /// object names and every time it carries.
    pub fn check_limits(&self) -> Result<(), InvalidField> {
        check_id("id", &self.id)?;
        // Stored with the event whatever it is, known or not (found by fuzzing: a DEL byte).
        check_id("type", &self.event_type)?;
        self.event.as_ref().map_or(Ok(()), |event| event.check_ids().and_then(|()| event.check_times()))
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    id: String,
    object: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    #[serde(default)]
    livemode: bool,
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    object: &'a RawValue,
}

/// Reads a webhook body.
pub fn parse_event(payload: &[u8]) -> Result<ParsedEvent, ParseError> {
    let envelope: Envelope = serde_json::from_slice(payload).map_err(|e| {
        if e.is_data() { ParseError::NotAnEvent(e.to_string()) } else { ParseError::NotJson(e.to_string()) }
    })?;
    if envelope.object.as_deref().is_some_and(|o| o != "event") {
        return Err(ParseError::NotAnEvent("`object` is not \"event\"".into()));
    }
    if envelope.id.is_empty() || envelope.event_type.is_empty() {
        return Err(ParseError::NotAnEvent("empty `id` or `type`".into()));
    }
    let raw = envelope.data.object.get();
    let kind = read_kind(&envelope.event_type, raw).map_err(|e| format!("{}: {e}", envelope.event_type));
    Ok(ParsedEvent {
        event: kind.map(|kind| BillingEvent { id: envelope.id.clone(), created: envelope.created, kind }),
        id: envelope.id,
        event_type: envelope.event_type,
        created: envelope.created,
        livemode: envelope.livemode,
    })
}

fn read_kind(event_type: &str, raw: &str) -> Result<EventKind, serde_json::Error> {
    Ok(match event_type {
        "checkout.session.completed" => EventKind::Checkout(read::<CheckoutObject>(raw)?.into_session(false)),
        "checkout.session.async_payment_succeeded" => {
            EventKind::Checkout(read::<CheckoutObject>(raw)?.into_session(true))
        }
        "invoice.paid" | "invoice.payment_succeeded" => EventKind::InvoicePaid(read::<InvoiceObject>(raw)?.into()),
        "invoice.payment_failed" => EventKind::InvoicePaymentFailed(read::<InvoiceObject>(raw)?.into()),
        "customer.subscription.created" | "customer.subscription.updated" => {
            EventKind::SubscriptionChanged(read::<SubscriptionObject>(raw)?.into())
        }
        "customer.subscription.deleted" => EventKind::SubscriptionDeleted(read::<SubscriptionObject>(raw)?.into()),
        "charge.refunded" => EventKind::ChargeRefunded(read::<ChargeObject>(raw)?.into()),
        "customer.created" | "customer.updated" => {
            let customer: CustomerObject = read(raw)?;
            EventKind::CustomerChanged(Owner {
                user_id: user_of(customer.metadata.as_ref()),
                customer: Some(customer.id),
            })
        }
        _ => EventKind::Unhandled,
    })
}

/// A Checkout Session object as the API returns it, with its `created`.
pub fn checkout_session(raw: &str) -> Result<(CheckoutSession, i64), serde_json::Error> {
    let object: CheckoutObject = read(raw)?;
    let created = object.created.unwrap_or(0);
    Ok((object.into_session(false), created))
}

fn read<T: DeserializeOwned>(raw: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(raw)
}

/// A field Stripe sends as an id, or as the object when expanded. Read by hand rather
/// than as an untagged enum, which would copy every expanded object (a price, a plan)
/// into a buffer before trying each variant: the most expensive step of a webhook's
/// parse.
struct Expandable(String);

impl Expandable {
    fn id(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for Expandable {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdOrObject;

        impl<'de> serde::de::Visitor<'de> for IdOrObject {
            type Value = Expandable;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an id or an object with an id")
            }

            fn visit_str<E: serde::de::Error>(self, id: &str) -> Result<Expandable, E> {
                Ok(Expandable(id.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Expandable, A::Error> {
                let mut id = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "id" && id.is_none() {
                        id = Some(map.next_value::<String>()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                id.map(Expandable).ok_or_else(|| serde::de::Error::missing_field("id"))
            }
        }

        deserializer.deserialize_any(IdOrObject)
    }
}

fn id_of(field: Option<Expandable>) -> Option<String> {
    field.map(Expandable::id).filter(|id| !id.is_empty())
}

/// The metadata keys tally sets; other keys are not read.
#[derive(Deserialize, Default)]
struct Metadata {
    user_id: Option<String>,
    item: Option<String>,
}

fn user_of(metadata: Option<&Metadata>) -> Option<String> {
    metadata.and_then(|m| m.user_id.clone()).filter(|u| !u.is_empty())
}

#[derive(Deserialize)]
struct CheckoutObject {
    id: String,
    created: Option<i64>,
    mode: Option<String>,
    payment_status: Option<String>,
    client_reference_id: Option<String>,
    metadata: Option<Metadata>,
    subscription: Option<Expandable>,
    payment_intent: Option<Expandable>,
    customer: Option<Expandable>,
}

impl CheckoutObject {
    fn into_session(self, async_succeeded: bool) -> CheckoutSession {
        let mode = match self.mode.as_deref() {
            Some("subscription") => CheckoutMode::Subscription,
            Some("payment") => CheckoutMode::Payment,
            _ => CheckoutMode::Other,
        };
        let user_id = user_of(self.metadata.as_ref()).or(self.client_reference_id.filter(|c| !c.is_empty()));
        CheckoutSession {
            id: self.id,
            mode,
            paid: async_succeeded || self.payment_status.as_deref() == Some("paid"),
            item: self.metadata.and_then(|m| m.item).filter(|i| !i.is_empty()),
            subscription: id_of(self.subscription),
            payment_intent: id_of(self.payment_intent),
            owner: Owner { user_id, customer: id_of(self.customer) },
        }
    }
}

/// `subscription_details` (2023: on the invoice; 2025+: under `parent`).
#[derive(Deserialize)]
struct SubscriptionDetails {
    subscription: Option<Expandable>,
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct InvoiceParent {
    subscription_details: Option<SubscriptionDetails>,
}

#[derive(Deserialize)]
struct InvoiceObject {
    id: String,
    billing_reason: Option<String>,
    amount_paid: Option<i64>,
    customer: Option<Expandable>,
    metadata: Option<Metadata>,
    /// 2023 shape.
    subscription: Option<Expandable>,
    subscription_details: Option<SubscriptionDetails>,
    /// 2025+ shape.
    parent: Option<InvoiceParent>,
    lines: Option<List<InvoiceLine>>,
}

#[derive(Deserialize)]
struct List<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
}

#[derive(Deserialize)]
struct Period {
    start: Option<i64>,
    end: Option<i64>,
}

#[derive(Deserialize)]
struct InvoiceLine {
    period: Option<Period>,
    /// 2023 shape: `subscription` or `invoiceitem`, a `proration` flag, and the price
    /// (or, before prices, the plan).
    #[serde(rename = "type")]
    line_type: Option<String>,
    proration: Option<bool>,
    price: Option<Expandable>,
    plan: Option<Expandable>,
    /// 2025+ shape: the parent says what the line is; the price is under `pricing`.
    parent: Option<LineParent>,
    pricing: Option<LinePricing>,
}

#[derive(Deserialize)]
struct LinePricing {
    price_details: Option<PriceDetails>,
}

#[derive(Deserialize)]
struct PriceDetails {
    price: Option<Expandable>,
}

#[derive(Deserialize)]
struct LineParent {
    #[serde(rename = "type")]
    parent_type: Option<String>,
    subscription_item_details: Option<ParentDetails>,
    invoice_item_details: Option<ParentDetails>,
}

#[derive(Deserialize)]
struct ParentDetails {
    proration: Option<bool>,
}

impl InvoiceLine {
    /// Whether the line pays for a subscription item's period, as opposed to a
    /// proration or a one-off invoice item.
    fn pays_a_period(&self) -> bool {
        let proration = self.proration.unwrap_or(false)
            || self.parent.as_ref().is_some_and(|p| {
                [&p.subscription_item_details, &p.invoice_item_details]
                    .into_iter()
                    .flatten()
                    .any(|d| d.proration.unwrap_or(false))
            });
        let subscription_item = match (&self.parent, self.line_type.as_deref()) {
            (Some(parent), _) => {
                parent.parent_type.as_deref() == Some("subscription_item_details")
                    || (parent.parent_type.is_none() && parent.subscription_item_details.is_some())
            }
            (None, Some(line_type)) => line_type == "subscription",
            (None, None) => true,
        };
        subscription_item && !proration
    }

    fn into_plan_line(self) -> PlanLine {
        let current = self.pricing.and_then(|p| p.price_details).and_then(|d| d.price);
        PlanLine {
            price_id: id_of(current.or(self.price).or(self.plan)),
            period_start: self.period.as_ref().and_then(|p| p.start),
            period_end: self.period.and_then(|p| p.end),
        }
    }
}

impl From<InvoiceObject> for Invoice {
    fn from(inv: InvoiceObject) -> Invoice {
        let details = inv.parent.and_then(|p| p.subscription_details).or(inv.subscription_details);
        let (details_sub, details_meta) = match details {
            Some(d) => (d.subscription, d.metadata),
            None => (None, None),
        };
        let user_id = user_of(details_meta.as_ref()).or_else(|| user_of(inv.metadata.as_ref()));
        let lines = inv.lines.map(|l| l.data).unwrap_or_default();
        Invoice {
            id: inv.id,
            subscription: id_of(details_sub).or(id_of(inv.subscription)),
            billing_reason: match inv.billing_reason.as_deref() {
                Some("subscription_create") => BillingReason::SubscriptionCreate,
                Some("subscription_cycle") => BillingReason::SubscriptionCycle,
                _ => BillingReason::Other,
            },
            amount_paid: inv.amount_paid,
            plan_lines: lines.into_iter().filter(InvoiceLine::pays_a_period).map(InvoiceLine::into_plan_line).collect(),
            owner: Owner { user_id, customer: id_of(inv.customer) },
        }
    }
}

#[derive(Deserialize)]
struct SubscriptionObject {
    id: String,
    #[serde(default)]
    status: String,
    customer: Option<Expandable>,
    metadata: Option<Metadata>,
    start_date: Option<i64>,
    #[serde(default)]
    cancel_at_period_end: bool,
    cancel_at: Option<i64>,
    /// 2023 shape.
    current_period_start: Option<i64>,
    current_period_end: Option<i64>,
    items: Option<List<SubscriptionItem>>,
}

#[derive(Deserialize)]
struct SubscriptionItem {
    price: Option<Expandable>,
    plan: Option<Expandable>,
    /// 2025+ shape.
    current_period_start: Option<i64>,
    current_period_end: Option<i64>,
}

impl From<SubscriptionObject> for Subscription {
    fn from(sub: SubscriptionObject) -> Subscription {
        let item = sub.items.and_then(|l| l.data.into_iter().next());
        let (price_id, item_start, item_end) = match item {
            Some(i) => (id_of(i.price.or(i.plan)), i.current_period_start, i.current_period_end),
            None => (None, None, None),
        };
        Subscription {
            id: sub.id,
            status: sub.status,
            price_id,
            start_date: sub.start_date,
            current_period_start: sub.current_period_start.or(item_start),
            current_period_end: sub.current_period_end.or(item_end),
            // Newer portals cancel "at period end" by setting cancel_at instead.
            cancel_at_period_end: sub.cancel_at_period_end || sub.cancel_at.is_some(),
            owner: Owner { user_id: user_of(sub.metadata.as_ref()), customer: id_of(sub.customer) },
        }
    }
}

#[derive(Deserialize)]
struct CustomerObject {
    id: String,
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct ChargeObject {
    id: String,
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    amount_refunded: i64,
    payment_intent: Option<Expandable>,
    customer: Option<Expandable>,
    metadata: Option<Metadata>,
}

impl From<ChargeObject> for Charge {
    fn from(c: ChargeObject) -> Charge {
        Charge {
            id: c.id,
            payment_intent: id_of(c.payment_intent),
            amount: c.amount,
            amount_refunded: c.amount_refunded,
            owner: Owner { user_id: user_of(c.metadata.as_ref()), customer: id_of(c.customer) },
        }
    }
}

/// The fields of a listed subscription that its webhook does not need.
#[derive(Deserialize)]
struct ListedExtras {
    latest_invoice: Option<Expandable>,
    #[serde(default)]
    livemode: bool,
}

/// A subscription from `GET /v1/subscriptions`, read the way its webhook would be.
#[derive(Debug, Clone)]
pub struct ListedSubscription {
    pub subscription: Subscription,
    /// The newest invoice: the one that opened the current period, unless a plan change
    /// was billed since.
    pub latest_invoice: Option<String>,
    pub livemode: bool,
}

pub fn listed_subscription(raw: &str) -> Result<ListedSubscription, serde_json::Error> {
    let extras: ListedExtras = read(raw)?;
    Ok(ListedSubscription {
        subscription: read::<SubscriptionObject>(raw)?.into(),
        latest_invoice: id_of(extras.latest_invoice),
        livemode: extras.livemode,
    })
}

#[derive(Deserialize)]
struct InvoiceObjectStatus {
    status: Option<String>,
    created: Option<i64>,
    #[serde(default)]
    livemode: bool,
}

/// What `tally sync` asks of an invoice before it applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvoiceStatus {
    pub paid: bool,
    pub created: i64,
    pub livemode: bool,
}

pub fn invoice_status(raw: &str) -> Result<InvoiceStatus, serde_json::Error> {
    let invoice: InvoiceObjectStatus = read(raw)?;
    Ok(InvoiceStatus {
        paid: invoice.status.as_deref() == Some("paid"),
        created: invoice.created.unwrap_or(0),
        livemode: invoice.livemode,
    })
}

/// An event around an object read from the API, as a webhook would carry it: `tally
/// sync` repairs through the webhook's own path, and the event is stored for replay.
pub fn envelope(id: &str, event_type: &str, created: i64, livemode: bool, object: &RawValue) -> String {
    serde_json::json!({
        "id": id,
        "object": "event",
        "type": event_type,
        "created": created,
        "livemode": livemode,
        "data": { "object": object },
    })
    .to_string()
}
