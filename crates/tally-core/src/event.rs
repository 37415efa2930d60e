//! The normalized billing event: only the fields tally acts on, read from whichever
//! Stripe API shape delivered them (tally-stripe does the reading).

/// A verified Stripe event, reduced to what the credit rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingEvent {
    pub id: String,
    /// Stripe's `created` (unix seconds): the order of events on Stripe's side.
    pub created: i64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// checkout.session.completed, or checkout.session.async_payment_succeeded (always paid).
    Checkout(CheckoutSession),
    /// invoice.paid or invoice.payment_succeeded.
    InvoicePaid(Invoice),
    InvoicePaymentFailed(Invoice),
    /// customer.subscription.created or .updated.
    SubscriptionChanged(Subscription),
    SubscriptionDeleted(Subscription),
    ChargeRefunded(Charge),
    /// customer.created or .updated: tells which user a Stripe customer is.
    CustomerChanged(Owner),
    /// A type tally does not act on: stored as ignored.
    Unhandled,
}

/// Where the user behind an object may be found, best clue first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    /// `metadata.user_id` or `client_reference_id`: set by tally's own checkout.
    pub user_id: Option<String>,
    /// The Stripe customer, matched against the stored `stripe_customer_id`.
    pub customer: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutMode {
    Subscription,
    Payment,
    /// setup mode, or anything else that sells nothing.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub mode: CheckoutMode,
    /// payment_status is `paid` (or the event is async_payment_succeeded).
    pub paid: bool,
    /// `metadata.item`, as tally's checkout sets it: a plan or pack id of the catalogue.
    pub item: Option<String>,
    pub subscription: Option<String>,
    pub payment_intent: Option<String>,
    pub owner: Owner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingReason {
    /// The first invoice of a subscription: pays its first period.
    SubscriptionCreate,
    /// A renewal: pays the period that starts at the line's `period.start`.
    SubscriptionCycle,
    /// Prorations, manual invoices and the rest: they open no period.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    pub id: String,
    pub subscription: Option<String>,
    pub billing_reason: BillingReason,
    /// What was paid (smallest unit); a first invoice of nothing starts a trial.
    pub amount_paid: Option<i64>,
    /// The lines that pay for a subscription item's period: neither prorations nor
    /// one-off invoice items, which name other periods and prices.
    pub plan_lines: Vec<PlanLine>,
    pub owner: Owner,
}

/// An invoice line that pays for a period of a subscription price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLine {
    pub price_id: Option<String>,
    pub period_start: Option<i64>,
    pub period_end: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub status: String,
    pub price_id: Option<String>,
    pub start_date: Option<i64>,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub owner: Owner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub id: String,
    pub payment_intent: Option<String>,
    /// What was charged and, cumulatively, what has been refunded (smallest unit).
    pub amount: i64,
    pub amount_refunded: i64,
    pub owner: Owner,
}

impl EventKind {
    /// Who the event is about, as far as the object itself says.
    pub fn owner(&self) -> Option<&Owner> {
        match self {
            EventKind::Checkout(s) => Some(&s.owner),
            EventKind::InvoicePaid(i) | EventKind::InvoicePaymentFailed(i) => Some(&i.owner),
            EventKind::SubscriptionChanged(s) | EventKind::SubscriptionDeleted(s) => Some(&s.owner),
            EventKind::ChargeRefunded(c) => Some(&c.owner),
            EventKind::CustomerChanged(owner) => Some(owner),
            EventKind::Unhandled => None,
        }
    }

    /// The subscription the event is about, if any.
    pub fn subscription_id(&self) -> Option<&str> {
        match self {
            EventKind::Checkout(s) => s.subscription.as_deref(),
            EventKind::InvoicePaid(i) | EventKind::InvoicePaymentFailed(i) => i.subscription.as_deref(),
            EventKind::SubscriptionChanged(s) | EventKind::SubscriptionDeleted(s) => Some(&s.id),
            EventKind::ChargeRefunded(_) | EventKind::CustomerChanged(_) | EventKind::Unhandled => None,
        }
    }

    /// The payment intent whose top-up the event is about (refunds).
    pub fn payment_intent(&self) -> Option<&str> {
        match self {
            EventKind::ChargeRefunded(c) => c.payment_intent.as_deref(),
            _ => None,
        }
    }
}
