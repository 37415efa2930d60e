//! Realistic Stripe events, built from Stripe's own fixture objects in either API shape.
//!
//! `tally trigger` posts these to a running tally, and the test suites use them, so both
//! exercise the same payloads a real Stripe account would send.

use serde_json::{Value, json};

/// The API version a webhook endpoint is pinned to decides the shape of its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `2023-10-16`, as the integration guide pins: `invoice.subscription`,
    /// `subscription.current_period_*`.
    V2023,
    /// `2026-09-30.endive` (async-stripe 1.0): `invoice.parent.subscription_details`,
    /// `items.data[].current_period_*`, `lines.data[].pricing.price_details`.
    V2026,
}

impl Shape {
    pub fn api_version(self) -> &'static str {
        match self {
            Shape::V2023 => "2023-10-16",
            Shape::V2026 => "2026-09-30.endive",
        }
    }

    fn template(self, name: &str) -> Value {
        let text = match (self, name) {
            (Shape::V2023, "event") => include_str!("../fixtures/2023-08-16/event.json"),
            (Shape::V2023, "checkout.session") => include_str!("../fixtures/2023-08-16/checkout.session.json"),
            (Shape::V2023, "invoice") => include_str!("../fixtures/2023-08-16/invoice.json"),
            (Shape::V2023, "subscription") => include_str!("../fixtures/2023-08-16/subscription.json"),
            (Shape::V2023, "charge") => include_str!("../fixtures/2023-08-16/charge.json"),
            (Shape::V2026, "event") => include_str!("../fixtures/2026-current/event.json"),
            (Shape::V2026, "checkout.session") => include_str!("../fixtures/2026-current/checkout.session.json"),
            (Shape::V2026, "invoice") => include_str!("../fixtures/2026-current/invoice.json"),
            (Shape::V2026, "subscription") => include_str!("../fixtures/2026-current/subscription.json"),
            (Shape::V2026, "charge") => include_str!("../fixtures/2026-current/charge.json"),
            _ => unreachable!("no fixture named {name}"),
        };
        serde_json::from_str(text).expect("fixtures are valid JSON")
    }
}

/// Wraps an object in an event envelope.
pub fn event(shape: Shape, event_type: &str, id: &str, created: i64, object: Value) -> Value {
    let mut event = shape.template("event");
    event["id"] = json!(id);
    event["type"] = json!(event_type);
    event["created"] = json!(created);
    event["api_version"] = json!(shape.api_version());
    event["livemode"] = json!(false);
    event["data"] = json!({ "object": object });
    event
}

fn metadata(user: Option<&str>) -> Value {
    match user {
        Some(user) => json!({ "user_id": user }),
        None => json!({}),
    }
}

/// A Checkout Session, as in checkout.session.completed.
#[derive(Debug, Clone)]
pub struct CheckoutSpec<'a> {
    pub id: &'a str,
    pub user: &'a str,
    /// `pro`, `enterprise` or `topup`: the item tally's checkout put in the metadata.
    pub item: &'a str,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: &'a str,
    pub customer: &'a str,
    pub subscription: Option<&'a str>,
    pub payment_intent: Option<&'a str>,
    pub amount: i64,
}

pub fn checkout_session(shape: Shape, spec: &CheckoutSpec) -> Value {
    let mut s = shape.template("checkout.session");
    let subscription_mode = spec.subscription.is_some();
    s["id"] = json!(spec.id);
    s["mode"] = json!(if subscription_mode { "subscription" } else { "payment" });
    s["status"] = json!("complete");
    s["payment_status"] = json!(spec.payment_status);
    s["client_reference_id"] = json!(spec.user);
    s["metadata"] = json!({ "user_id": spec.user, "item": spec.item });
    s["customer"] = json!(spec.customer);
    s["subscription"] = json!(spec.subscription);
    s["payment_intent"] = json!(spec.payment_intent);
    s["amount_subtotal"] = json!(spec.amount);
    s["amount_total"] = json!(spec.amount);
    s
}

/// An invoice of a subscription.
#[derive(Debug, Clone)]
pub struct InvoiceSpec<'a> {
    pub id: &'a str,
    pub subscription: &'a str,
    pub customer: &'a str,
    pub user: Option<&'a str>,
    pub price: &'a str,
    /// `subscription_create`, `subscription_cycle`, `subscription_update`, ...
    pub billing_reason: &'a str,
    pub period_start: i64,
    pub period_end: i64,
    pub amount: i64,
    /// `paid` or `open` (a failed payment).
    pub status: &'a str,
}

pub fn invoice(shape: Shape, spec: &InvoiceSpec) -> Value {
    let mut inv = shape.template("invoice");
    let paid = spec.status == "paid";
    inv["id"] = json!(spec.id);
    inv["customer"] = json!(spec.customer);
    inv["billing_reason"] = json!(spec.billing_reason);
    inv["status"] = json!(spec.status);
    inv["amount_due"] = json!(spec.amount);
    inv["amount_paid"] = json!(if paid { spec.amount } else { 0 });
    inv["amount_remaining"] = json!(if paid { 0 } else { spec.amount });
    inv["total"] = json!(spec.amount);
    inv["subtotal"] = json!(spec.amount);
    // Stripe's invoice-level period is the one just ended; the line holds the paid one.
    inv["period_start"] = json!(spec.period_start);
    inv["period_end"] = json!(spec.period_start);
    let mut line = inv["lines"]["data"][0].take();
    line["amount"] = json!(spec.amount);
    line["period"] = json!({ "start": spec.period_start, "end": spec.period_end });
    line["invoice"] = json!(spec.id);
    match shape {
        Shape::V2023 => {
            inv["paid"] = json!(paid);
            inv["subscription"] = json!(spec.subscription);
            inv["subscription_details"] = json!({ "metadata": metadata(spec.user) });
            line["type"] = json!("subscription");
            line["proration"] = json!(false);
            line["subscription"] = json!(spec.subscription);
            line["price"]["id"] = json!(spec.price);
            line["price"]["type"] = json!("recurring");
            line["price"]["unit_amount"] = json!(spec.amount);
        }
        Shape::V2026 => {
            inv.as_object_mut().expect("invoice is an object").remove("subscription");
            inv["parent"] = json!({
                "type": "subscription_details",
                "quote_details": null,
                "subscription_details": { "subscription": spec.subscription, "metadata": metadata(spec.user) },
            });
            line["parent"] = json!({
                "type": "subscription_item_details",
                "invoice_item_details": null,
                "subscription_item_details": {
                    "invoice_item": null,
                    "proration": false,
                    "proration_details": { "credited_items": null },
                    "subscription": spec.subscription,
                    "subscription_item": format!("si_{}", spec.subscription),
                },
            });
            line["pricing"] = json!({
                "type": "price_details",
                "price_details": { "price": spec.price, "product": "prod_tally" },
                "unit_amount_decimal": spec.amount.to_string(),
            });
        }
    }
    inv["lines"]["data"] = json!([line]);
    inv
}

/// A subscription object, as in customer.subscription.*.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub user: Option<&'a str>,
    pub price: &'a str,
    pub status: &'a str,
    pub start_date: i64,
    pub period_start: i64,
    pub period_end: i64,
    pub cancel_at_period_end: bool,
}

pub fn subscription(shape: Shape, spec: &SubscriptionSpec) -> Value {
    let mut sub = shape.template("subscription");
    sub["id"] = json!(spec.id);
    sub["customer"] = json!(spec.customer);
    sub["metadata"] = metadata(spec.user);
    sub["status"] = json!(spec.status);
    sub["start_date"] = json!(spec.start_date);
    sub["created"] = json!(spec.start_date);
    sub["billing_cycle_anchor"] = json!(spec.start_date);
    sub["cancel_at_period_end"] = json!(spec.cancel_at_period_end);
    sub["cancel_at"] = if spec.cancel_at_period_end { json!(spec.period_end) } else { Value::Null };
    sub["canceled_at"] = Value::Null;
    sub["ended_at"] = Value::Null;
    let mut item = sub["items"]["data"][0].take();
    item["subscription"] = json!(spec.id);
    item["price"]["id"] = json!(spec.price);
    if item.get("plan").is_some_and(Value::is_object) {
        item["plan"]["id"] = json!(spec.price);
    }
    match shape {
        Shape::V2023 => {
            sub["current_period_start"] = json!(spec.period_start);
            sub["current_period_end"] = json!(spec.period_end);
        }
        Shape::V2026 => {
            let object = sub.as_object_mut().expect("subscription is an object");
            object.remove("current_period_start");
            object.remove("current_period_end");
            item["current_period_start"] = json!(spec.period_start);
            item["current_period_end"] = json!(spec.period_end);
        }
    }
    sub["items"]["data"] = json!([item]);
    sub
}

/// A charge, as in charge.refunded (`amount_refunded` is cumulative).
#[derive(Debug, Clone)]
pub struct ChargeSpec<'a> {
    pub id: &'a str,
    pub payment_intent: &'a str,
    pub customer: &'a str,
    pub amount: i64,
    pub amount_refunded: i64,
}

pub fn charge(shape: Shape, spec: &ChargeSpec) -> Value {
    let mut c = shape.template("charge");
    c["id"] = json!(spec.id);
    c["payment_intent"] = json!(spec.payment_intent);
    c["customer"] = json!(spec.customer);
    c["amount"] = json!(spec.amount);
    c["amount_captured"] = json!(spec.amount);
    c["amount_refunded"] = json!(spec.amount_refunded);
    c["refunded"] = json!(spec.amount_refunded >= spec.amount);
    c["paid"] = json!(true);
    c["status"] = json!("succeeded");
    c
}

/// Puts a proration line before an invoice's plan line, as Stripe does on the renewal
/// after a plan change ("Unused time on Pro after ...").
pub fn add_proration(shape: Shape, invoice: &mut Value, price: &str, period_start: i64, period_end: i64, amount: i64) {
    let lines = invoice["lines"]["data"].as_array_mut().expect("an invoice has lines");
    let mut line = lines[0].clone();
    line["amount"] = json!(amount);
    line["period"] = json!({ "start": period_start, "end": period_end });
    match shape {
        Shape::V2023 => {
            line["type"] = json!("invoiceitem");
            line["proration"] = json!(true);
            line["price"]["id"] = json!(price);
        }
        Shape::V2026 => {
            let subscription = line["parent"]["subscription_item_details"]["subscription"].clone();
            line["parent"] = json!({
                "type": "invoice_item_details",
                "subscription_item_details": null,
                "invoice_item_details": {
                    "invoice_item": "ii_proration",
                    "proration": true,
                    "proration_details": { "credited_items": null },
                    "subscription": subscription,
                },
            });
            line["pricing"]["price_details"]["price"] = json!(price);
        }
    }
    lines.insert(0, line);
}
