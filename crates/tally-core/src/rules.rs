//! The credit rules of CONTRACT §1: given an event and the state it touches, what changes.
//!
//! Subscriptions grant by billing period. A period is named by its start, except the
//! first, which is named [`FIRST_PERIOD`] because the checkout session that pays for it
//! carries no dates. Each period grants the allowance of the best plan paid for in it,
//! exactly once: the first grant of a period resets the plan bucket, a better plan later
//! in the same period adds the difference, and anything older than the newest granted
//! period changes nothing. So the events of one period give the same balance in
//! whatever order they arrive. "Best" is the catalogue's `rank`; a trial is a period
//! of its own, named [`TRIAL_PERIOD`], that grants the plan's trial credits.
//!
//! An event whose price the catalogue does not have grants nothing: it is kept as
//! unmatched with the note [`UNKNOWN_PRICE`], to apply again once the file names it.

use crate::account::{Account, Bucket, Ledger};
use crate::calendar;
use crate::catalogue::{Catalogue, FREE, Product};
use crate::event::{
    BillingEvent, BillingReason, Charge, CheckoutMode, CheckoutSession, EventKind, Invoice, Subscription,
};

/// The name of a subscription's first period.
pub const FIRST_PERIOD: i64 = 0;

/// The name of a subscription's trial, before its first paid period.
pub const TRIAL_PERIOD: i64 = -1;

/// The note of an event kept as unmatched because its price is not in the catalogue.
pub const UNKNOWN_PRICE: &str = "unknown_price";

/// A subscription as tally last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub id: String,
    pub user_id: String,
    pub status: String,
    /// The plan id of its price, as the catalogue named it.
    pub plan: Option<String>,
    /// The Stripe price it was last seen on.
    pub price_id: Option<String>,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    /// `created` of the newest event applied to this state; 0 before any authoritative one.
    pub state_at: i64,
}

impl SubscriptionState {
    /// A subscription tally has not seen before; no event has set its state yet.
    pub fn new(id: &str, user_id: &str) -> SubscriptionState {
        SubscriptionState {
            id: id.to_owned(),
            user_id: user_id.to_owned(),
            status: String::new(),
            plan: None,
            price_id: None,
            current_period_start: None,
            current_period_end: None,
            cancel_at_period_end: false,
            state_at: 0,
        }
    }

    pub fn is_canceled(&self) -> bool {
        self.status == "canceled"
    }
}

/// What one billing period of a subscription has granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub subscription_id: String,
    pub start: i64,
    /// The best plan the subscription showed as active in this period, paid or not yet.
    pub seen: Option<String>,
    /// The plan whose allowance this period has granted; `None` until it is paid.
    pub granted: Option<String>,
}

/// A paid top-up and how much of it has been refunded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topup {
    pub session_id: String,
    pub user_id: String,
    pub payment_intent: Option<String>,
    pub credits: i64,
    pub refunded_credits: i64,
}

/// How the store should find the top-up an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopupKey<'a> {
    Session(&'a str),
    PaymentIntent(&'a str),
}

/// The state an event touches, loaded (and locked) by the store.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub account: Account,
    pub subscription: Option<SubscriptionState>,
    /// The period named by [`period_of`] for this event.
    pub period: Option<Period>,
    /// The start of the newest period of the subscription that has granted.
    pub latest_granted: Option<i64>,
    /// The top-up named by [`topup_of`] for this event.
    pub topup: Option<Topup>,
}

/// What the store writes back, in the same transaction.
#[derive(Debug, Clone)]
pub struct Changes {
    pub ledger: Ledger,
    pub subscription: Option<SubscriptionState>,
    pub period: Option<Period>,
    pub topup: Option<Topup>,
    /// Why nothing changed, when nothing did.
    pub note: Option<&'static str>,
    /// The event is about something tally has not seen yet (a refund of a top-up whose
    /// checkout has not arrived) or a price the catalogue does not have: it is kept as
    /// unmatched, for replay.
    pub unmatched: bool,
}

impl Changes {
    pub fn changed_anything(&self) -> bool {
        !self.ledger.entries.is_empty() || self.subscription.is_some() || self.period.is_some() || self.topup.is_some()
    }
}

/// The subscription period an event pays for or shows, if any.
pub fn period_of(kind: &EventKind) -> Option<i64> {
    match kind {
        EventKind::Checkout(s) if s.mode == CheckoutMode::Subscription => Some(FIRST_PERIOD),
        EventKind::InvoicePaid(i) => invoice_period(i),
        EventKind::SubscriptionChanged(s) => subscription_period(s),
        _ => None,
    }
}

/// The period an invoice pays for: the first, or the one its plan line starts. A
/// proration-only invoice (an upgrade billed at once) pays for no period of its own.
fn invoice_period(invoice: &Invoice) -> Option<i64> {
    if starts_trial(invoice) {
        return Some(TRIAL_PERIOD);
    }
    match invoice.billing_reason {
        BillingReason::SubscriptionCreate => Some(FIRST_PERIOD),
        BillingReason::SubscriptionCycle | BillingReason::Other => {
            invoice.plan_lines.iter().find_map(|line| line.period_start)
        }
    }
}

/// Whether an invoice opens a trial: the first invoice of a subscription, for nothing.
/// (A first invoice made free by a coupon reads the same; it grants the trial credits,
/// which default to the plan's allowance.)
fn starts_trial(invoice: &Invoice) -> bool {
    invoice.billing_reason == BillingReason::SubscriptionCreate && invoice.amount_paid == Some(0)
}

/// The period a subscription object is in; the one that starts at `start_date` is the
/// first, and a trialing one is in its trial.
pub fn subscription_period(sub: &Subscription) -> Option<i64> {
    if sub.status == "trialing" {
        return Some(TRIAL_PERIOD);
    }
    match (sub.current_period_start, sub.start_date) {
        (Some(start), Some(first)) if start <= first => Some(FIRST_PERIOD),
        (start, _) => start,
    }
}

/// The top-up an event is about, if any.
pub fn topup_of(kind: &EventKind) -> Option<TopupKey<'_>> {
    match kind {
        EventKind::Checkout(s) if s.mode == CheckoutMode::Payment => Some(TopupKey::Session(&s.id)),
        EventKind::ChargeRefunded(c) => c.payment_intent.as_deref().map(TopupKey::PaymentIntent),
        _ => None,
    }
}

/// Applies one event to the state it touches.
pub fn apply(event: &BillingEvent, snapshot: Snapshot, catalogue: &Catalogue) -> Changes {
    let mut step = Step {
        catalogue,
        created: event.created,
        subscription: snapshot.subscription,
        period: snapshot.period,
        latest_granted: snapshot.latest_granted,
        changes: Changes {
            ledger: Ledger::new(snapshot.account),
            subscription: None,
            period: None,
            topup: None,
            note: None,
            unmatched: false,
        },
    };
    match &event.kind {
        EventKind::Checkout(session) => match session.mode {
            CheckoutMode::Subscription => step.subscription_checkout(session),
            CheckoutMode::Payment => step.topup_checkout(session, snapshot.topup),
            CheckoutMode::Other => step.ignore("checkout mode sells nothing"),
        },
        EventKind::InvoicePaid(invoice) => step.invoice_paid(invoice),
        EventKind::InvoicePaymentFailed(invoice) => step.invoice_failed(invoice),
        EventKind::SubscriptionChanged(sub) => step.subscription_changed(sub),
        EventKind::SubscriptionDeleted(sub) => step.subscription_deleted(sub),
        EventKind::ChargeRefunded(charge) => step.refund(charge, snapshot.topup),
        // The store links the customer to the user; no credits move.
        EventKind::CustomerChanged(_) => step.ignore("customer already linked"),
        EventKind::Unhandled => step.ignore("event type not handled"),
    }
    step.changes
}

/// A period longer than this grants its allowance monthly (any interval above a month).
const LONGEST_MONTH: i64 = 31 * 86_400;

/// A month of a long (yearly) period after its first: due at each monthly anniversary
/// of the period's start, granted once under [`MonthDue::reference`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthDue {
    pub subscription_id: String,
    pub period_start: i64,
    /// 1 for the month after the period's first, and so on.
    pub index: u32,
}

impl MonthDue {
    pub fn reference(&self) -> String {
        format!("month:{}:{}:{}", self.subscription_id, self.period_start, self.index)
    }
}

/// The month of the subscription's current period that is due at `now`: only an
/// active subscription whose period is longer than a month, past its first month.
/// After downtime this is the current month alone: plan credits never roll over.
pub fn month_due(sub: &SubscriptionState, now: i64) -> Option<MonthDue> {
    let (start, end) = (sub.current_period_start?, sub.current_period_end?);
    if sub.status != "active" || now >= end || end.saturating_sub(start) <= LONGEST_MONTH {
        return None;
    }
    let index = calendar::month_index(start, now);
    (index >= 1).then(|| MonthDue { subscription_id: sub.id.clone(), period_start: start, index })
}

/// Grants a due month: the plan bucket is reset to the allowance of the plan that the
/// current period granted (`latest`), as the catalogue has it now. Only while the
/// subscription still funds the account; once per reference, which the store checks.
pub fn grant_month(
    ledger: &mut Ledger,
    sub: &SubscriptionState,
    latest: &Period,
    now: i64,
    catalogue: &Catalogue,
) -> Result<(), &'static str> {
    let due = month_due(sub, now).ok_or("no month is due")?;
    if ledger.account.funded_by.as_deref() != Some(sub.id.as_str()) {
        return Err("the subscription does not fund the account");
    }
    let plan = latest.granted.as_deref().ok_or("the period is not paid")?;
    let allowance = catalogue.allowance(plan).ok_or(UNKNOWN_PRICE)?;
    ledger.reset_plan(allowance, "monthly_allowance", due.reference());
    Ok(())
}

/// The reference of a free account's monthly reset in the calendar month of `now`.
pub fn free_month_reference(user_id: &str, now: i64) -> String {
    format!("free:{user_id}:{}", calendar::month_name(now))
}

/// Resets a free account's plan bucket for the month of `now`, when the catalogue's
/// free tier resets monthly; once per [`free_month_reference`], which the store checks.
pub fn grant_free_month(ledger: &mut Ledger, catalogue: &Catalogue, now: i64) -> Result<(), &'static str> {
    if !catalogue.free.monthly || ledger.account.tier != FREE {
        return Err("the account is not on a monthly free tier");
    }
    let reference = free_month_reference(&ledger.account.user_id, now);
    ledger.reset_plan(catalogue.free.credits, "free_month", reference);
    Ok(())
}

/// One event's application in progress.
struct Step<'a> {
    catalogue: &'a Catalogue,
    created: i64,
    subscription: Option<SubscriptionState>,
    period: Option<Period>,
    latest_granted: Option<i64>,
    changes: Changes,
}

impl Step<'_> {
    fn ignore(&mut self, why: &'static str) {
        self.changes.note.get_or_insert(why);
    }

    fn user_id(&self) -> String {
        self.changes.ledger.account.user_id.clone()
    }

    /// Keeps the event as unmatched: the catalogue has none of its prices.
    fn unknown_price(&mut self) {
        self.changes.unmatched = true;
        self.ignore(UNKNOWN_PRICE);
    }

    fn plan_of_price(&self, price_id: Option<&str>) -> Option<String> {
        price_id.and_then(|p| self.catalogue.plan_of_price(p)).map(|plan| plan.id.clone())
    }

    /// The better of two plans by rank; `a` when neither is better.
    fn best(&self, a: String, b: String) -> String {
        if self.catalogue.better(&b, &a) { b } else { a }
    }

    /// The best plan an invoice's plan lines pay for.
    fn plan_of_invoice(&self, invoice: &Invoice) -> Option<String> {
        let plans = invoice.plan_lines.iter().filter_map(|line| self.plan_of_price(line.price_id.as_deref()));
        plans.reduce(|a, b| self.best(a, b))
    }

    /// Whether the invoice's plan lines name a price at all: when none of them is a plan
    /// of the catalogue, the invoice is for an unknown price rather than for nothing.
    fn invoice_names_a_price(invoice: &Invoice) -> bool {
        invoice.plan_lines.iter().any(|line| line.price_id.is_some())
    }

    /// The plan bucket a period of `plan` grants: its trial credits in a trial.
    fn allowance(&self, plan: &str, period_start: i64) -> Option<i64> {
        match self.catalogue.plan(plan) {
            Some(p) if period_start == TRIAL_PERIOD => Some(p.trial_allowance()),
            _ => self.catalogue.allowance(plan),
        }
    }

    fn canceled(&self) -> bool {
        self.subscription.as_ref().is_some_and(SubscriptionState::is_canceled)
    }

    /// Updates the subscription's state from an event that is not older than the state
    /// we hold. A canceled subscription stays canceled.
    fn observe(&mut self, id: &str, update: impl FnOnce(&mut SubscriptionState)) {
        let user_id = self.user_id();
        let state = self.subscription.get_or_insert_with(|| SubscriptionState::new(id, &user_id));
        if state.is_canceled() || state.state_at > self.created {
            return;
        }
        let before = state.clone();
        update(state);
        state.state_at = self.created;
        if *state != before {
            self.changes.subscription = Some(state.clone());
        }
    }

    fn subscription_checkout(&mut self, session: &CheckoutSession) {
        let Some(sub_id) = session.subscription.as_deref() else {
            return self.ignore("subscription checkout without a subscription");
        };
        if !session.paid {
            return self.ignore("checkout not paid");
        }
        let item_plan = session.item.as_deref().and_then(|id| self.catalogue.plan(id)).map(|p| p.id.clone());
        let Some(plan) = item_plan.or_else(|| self.subscription.as_ref().and_then(|s| s.plan.clone())) else {
            return match session.item {
                // tally's checkout named a plan the catalogue no longer has.
                Some(_) => self.unknown_price(),
                None => self.ignore("checkout names no plan"),
            };
        };
        if self.subscription.is_none() {
            // Known only from checkout so far: the subscription's own events carry its
            // authoritative state, so this row must not look newer than they are.
            let state = SubscriptionState {
                status: "active".into(),
                plan: Some(plan.clone()),
                ..SubscriptionState::new(sub_id, &self.user_id())
            };
            self.subscription = Some(state.clone());
            self.changes.subscription = Some(state);
        }
        self.pay_period(sub_id, FIRST_PERIOD, plan);
    }

    fn topup_checkout(&mut self, session: &CheckoutSession, existing: Option<Topup>) {
        if !session.paid {
            return self.ignore("checkout not paid");
        }
        let Some(item) = session.item.as_deref() else {
            // tally's own checkout always names the item; other payments are not ours.
            return self.ignore("payment checkout names no pack");
        };
        let Some(Product::Pack(pack)) = self.catalogue.item(item) else {
            return self.unknown_price();
        };
        if existing.is_some() {
            return self.ignore("top-up already granted");
        }
        let credits = pack.credits;
        self.changes.ledger.post(Bucket::Topup, credits, "topup", format!("topup:{}", session.id));
        self.changes.topup = Some(Topup {
            session_id: session.id.clone(),
            user_id: self.user_id(),
            payment_intent: session.payment_intent.clone(),
            credits,
            refunded_credits: 0,
        });
    }

    fn invoice_paid(&mut self, invoice: &Invoice) {
        let Some(sub_id) = invoice.subscription.as_deref() else {
            return self.ignore("invoice without a subscription");
        };
        let line_plan = self.plan_of_invoice(invoice);
        if line_plan.is_none() && Self::invoice_names_a_price(invoice) {
            return self.unknown_price();
        }
        if line_plan.is_none() && self.subscription.is_none() {
            return self.ignore("invoice is not for a tally plan");
        }
        let line = invoice.plan_lines.iter().find(|line| line.period_start.is_some());
        let trial = starts_trial(invoice);
        self.observe(sub_id, |state| {
            state.status = if trial { "trialing" } else { "active" }.into();
            state.plan = line_plan.clone().or(state.plan.take());
            if let Some(line) = line {
                state.price_id = line.price_id.clone().or(state.price_id.take());
                state.current_period_start = line.period_start;
                state.current_period_end = line.period_end.or(state.current_period_end);
            }
        });
        let Some(plan) = line_plan.or_else(|| self.subscription.as_ref().and_then(|s| s.plan.clone())) else {
            return self.ignore("invoice price is not a tally plan");
        };
        match invoice_period(invoice) {
            Some(start) => self.pay_period(sub_id, start, plan),
            None => self.ignore("invoice opens no period"),
        }
    }

    fn invoice_failed(&mut self, invoice: &Invoice) {
        let Some(sub_id) = invoice.subscription.as_deref() else {
            return self.ignore("invoice without a subscription");
        };
        let plan = self.plan_of_invoice(invoice);
        if plan.is_none() && self.subscription.is_none() {
            return if Self::invoice_names_a_price(invoice) {
                self.unknown_price()
            } else {
                self.ignore("invoice is not for a tally plan")
            };
        }
        self.observe(sub_id, |state| {
            state.status = "past_due".into();
            state.plan = plan.or(state.plan.take());
        });
    }

    fn subscription_changed(&mut self, sub: &Subscription) {
        if sub.status == "canceled" {
            return self.subscription_deleted(sub);
        }
        let plan = self.plan_of_price(sub.price_id.as_deref());
        if plan.is_none() && sub.price_id.is_some() {
            return self.unknown_price();
        }
        if plan.is_none() && self.subscription.is_none() {
            return self.ignore("subscription is not for a tally plan");
        }
        self.observe(&sub.id, |state| {
            state.status = sub.status.clone();
            state.plan = plan.clone().or(state.plan.take());
            state.price_id = sub.price_id.clone().or(state.price_id.take());
            state.current_period_start = sub.current_period_start.or(state.current_period_start);
            state.current_period_end = sub.current_period_end.or(state.current_period_end);
            state.cancel_at_period_end = sub.cancel_at_period_end;
        });
        let (Some(plan), Some(start)) = (plan, subscription_period(sub)) else { return };
        if self.canceled() {
            return;
        }
        match sub.status.as_str() {
            "active" => self.show_period(&sub.id, start, plan),
            // A trial gives the tier and its credits at once.
            "trialing" => self.pay_period(&sub.id, start, plan),
            _ => {}
        }
    }

    fn subscription_deleted(&mut self, sub: &Subscription) {
        let already_canceled = self.canceled();
        if !already_canceled {
            let plan = self.plan_of_price(sub.price_id.as_deref());
            let user_id = self.user_id();
            let state = self.subscription.get_or_insert_with(|| SubscriptionState {
                plan,
                price_id: sub.price_id.clone(),
                current_period_start: sub.current_period_start,
                current_period_end: sub.current_period_end,
                cancel_at_period_end: sub.cancel_at_period_end,
                ..SubscriptionState::new(&sub.id, &user_id)
            });
            state.status = "canceled".into();
            state.state_at = state.state_at.max(self.created);
            self.changes.subscription = Some(state.clone());
        }
        let ledger = &mut self.changes.ledger;
        if ledger.account.funded_by.as_deref() == Some(sub.id.as_str()) {
            // The tier ends with the subscription; bought top-ups stay.
            ledger.reset_plan(self.catalogue.free.credits, "subscription_ended", format!("ended:{}", sub.id));
            ledger.account.tier = FREE.into();
            ledger.account.funded_by = None;
        } else if already_canceled {
            self.ignore("subscription already deleted");
        }
    }

    /// The period the snapshot loaded, or a new one that has seen and granted nothing.
    fn take_period(&mut self, sub_id: &str, start: i64) -> Period {
        self.period.take().unwrap_or_else(|| Period {
            subscription_id: sub_id.to_owned(),
            start,
            seen: None,
            granted: None,
        })
    }

    /// A payment for `plan` in the period starting at `start`.
    fn pay_period(&mut self, sub_id: &str, start: i64, plan: String) {
        if self.canceled() {
            return self.ignore("subscription is canceled");
        }
        if self.latest_granted.is_some_and(|latest| latest > start) {
            return self.ignore("a newer period has already been granted");
        }
        let period = self.take_period(sub_id, start);
        let best = match period.seen.clone() {
            Some(seen) => self.best(plan, seen),
            None => plan,
        };
        self.grant(period, best);
    }

    /// The subscription shows `plan` as active in the period starting at `start`: an
    /// upgrade if that period is paid, otherwise remembered for when it is.
    fn show_period(&mut self, sub_id: &str, start: i64, plan: String) {
        if self.latest_granted.is_some_and(|latest| latest > start) {
            return;
        }
        let mut period = self.take_period(sub_id, start);
        if period.granted.is_some() {
            return self.grant(period, plan);
        }
        if period.seen.as_deref().is_none_or(|seen| self.catalogue.better(&plan, seen)) {
            period.seen = Some(plan);
            self.changes.period = Some(period);
        }
    }

    /// Brings the period's grant up to `plan`: a new period resets the plan bucket, a
    /// better plan in a granted period adds the difference, anything else is a no-op.
    fn grant(&mut self, mut period: Period, plan: String) {
        let account = &self.changes.ledger.account;
        let other_funds = account.funded_by.as_deref().is_some_and(|f| f != period.subscription_id);
        if other_funds && self.created < account.funded_at {
            // A late payment of one subscription must not displace a later-paid one.
            return self.ignore("another subscription was paid for later");
        }
        let Some(allowance) = self.allowance(&plan, period.start) else {
            return self.unknown_price();
        };
        let (reason, reference) = if period.start == TRIAL_PERIOD {
            ("trial", format!("trial:{}:{}", period.subscription_id, plan))
        } else {
            ("subscription_period", format!("period:{}:{}:{}", period.subscription_id, period.start, plan))
        };
        let upgrade_from = match period.granted.as_deref() {
            None => None,
            // Both are known plans, or `better` would have said no.
            Some(granted) if self.catalogue.better(&plan, granted) => self.allowance(granted, period.start),
            Some(_) => return self.ignore("period already granted"),
        };
        let ledger = &mut self.changes.ledger;
        match upgrade_from {
            None => ledger.reset_plan(allowance, reason, reference),
            Some(before) => ledger.post(Bucket::Plan, (allowance - before).max(0), "subscription_upgrade", reference),
        }
        ledger.account.tier = plan.clone();
        ledger.account.funded_by = Some(period.subscription_id.clone());
        ledger.account.funded_at = ledger.account.funded_at.max(self.created);
        period.granted = Some(plan);
        self.changes.period = Some(period);
    }

    fn refund(&mut self, charge: &Charge, topup: Option<Topup>) {
        let Some(mut topup) = topup else {
            // Perhaps its checkout has not arrived yet: keep it for replay.
            self.changes.unmatched = true;
            return self.ignore("charge is not a known top-up");
        };
        if charge.amount <= 0 {
            return self.ignore("charge has no amount");
        }
        let refunded = charge.amount_refunded.clamp(0, charge.amount);
        // In i128: a hostile amount near i64::MAX must not overflow the product.
        let target = (i128::from(topup.credits) * i128::from(refunded) / i128::from(charge.amount)) as i64;
        if target <= topup.refunded_credits {
            return self.ignore("refund already taken into account");
        }
        // Credits already spent cannot be taken back, and held ones stay held: the
        // refund takes what is free in the top-up bucket, and says when that was less.
        let owed = target - topup.refunded_credits;
        let account = &self.changes.ledger.account;
        let take = owed.min(account.topup_credits).min(account.available());
        if take == 0 {
            return self.ignore("no free top-up credits to take back");
        }
        let reason = if take < owed { "topup_refund_partial" } else { "topup_refund" };
        // Only what was taken counts as refunded, so a replay later can take the rest.
        topup.refunded_credits += take;
        let reference = format!("refund:{}:{}", charge.id, topup.refunded_credits);
        self.changes.ledger.post(Bucket::Topup, -take, reason, reference);
        self.changes.topup = Some(topup);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Owner, PlanLine, Subscription as SubObject};

    fn catalogue() -> Catalogue {
        Catalogue::default_with(Some("p_pro".into()), Some("p_ent".into()), Some("p_top".into()))
    }

    fn snapshot(plan_credits: i64, topup_credits: i64) -> Snapshot {
        let mut account = Account::new_user("u", &catalogue());
        account.plan_credits = plan_credits;
        account.topup_credits = topup_credits;
        Snapshot { account, subscription: None, period: None, latest_granted: None, topup: None }
    }

    fn event(kind: EventKind) -> BillingEvent {
        BillingEvent { id: "evt".into(), created: 1_000, kind }
    }

    fn checkout(item: &str) -> EventKind {
        EventKind::Checkout(CheckoutSession {
            id: "cs".into(),
            mode: CheckoutMode::Subscription,
            paid: true,
            item: Some(item.into()),
            subscription: Some("sub".into()),
            payment_intent: None,
            owner: Owner::default(),
        })
    }

    fn subscription(price: &str, status: &str) -> SubObject {
        SubObject {
            id: "sub".into(),
            status: status.into(),
            price_id: Some(price.into()),
            start_date: Some(500),
            current_period_start: Some(500),
            current_period_end: Some(900),
            cancel_at_period_end: false,
            owner: Owner::default(),
        }
    }

    fn updated(price: &str) -> EventKind {
        EventKind::SubscriptionChanged(subscription(price, "active"))
    }

    fn first_invoice(price: &str, amount_paid: i64) -> EventKind {
        EventKind::InvoicePaid(Invoice {
            id: "in".into(),
            subscription: Some("sub".into()),
            billing_reason: BillingReason::SubscriptionCreate,
            amount_paid: Some(amount_paid),
            plan_lines: vec![PlanLine { price_id: Some(price.into()), period_start: Some(500), period_end: Some(900) }],
            owner: Owner::default(),
        })
    }

    fn granted(plan: &str, start: i64) -> Period {
        Period { subscription_id: "sub".into(), start, seen: None, granted: Some(plan.into()) }
    }

    #[test]
    fn the_first_payment_of_a_period_resets_the_plan_bucket() {
        let changes = apply(&event(checkout("pro")), snapshot(40, 7), &catalogue());
        assert_eq!(changes.ledger.account.plan_credits, 2_500);
        assert_eq!(changes.ledger.account.topup_credits, 7);
        assert_eq!(changes.ledger.account.tier, "pro");
        assert_eq!(changes.period.unwrap().granted.as_deref(), Some("pro"));
    }

    #[test]
    fn a_period_already_granted_grants_nothing_more() {
        let mut s = snapshot(10, 0);
        s.period = Some(granted("pro", FIRST_PERIOD));
        s.latest_granted = Some(FIRST_PERIOD);
        let changes = apply(&event(checkout("pro")), s, &catalogue());
        assert!(changes.ledger.entries.is_empty());
        assert_eq!(changes.note, Some("period already granted"));
    }

    #[test]
    fn a_better_plan_in_a_granted_period_adds_the_difference() {
        let mut s = snapshot(100, 0);
        s.period = Some(granted("pro", FIRST_PERIOD));
        s.latest_granted = Some(FIRST_PERIOD);
        let changes = apply(&event(updated("p_ent")), s, &catalogue());
        assert_eq!(changes.ledger.account.plan_credits, 100 + 7_500);
        assert_eq!(changes.ledger.account.tier, "enterprise");
    }

    #[test]
    fn rank_not_the_allowance_decides_what_is_better() {
        // A plan that ranks higher with fewer credits is still an upgrade, by zero credits.
        let mut c = catalogue();
        c.plans[1].credits = 1_000;
        let mut s = snapshot(100, 0);
        s.period = Some(granted("pro", FIRST_PERIOD));
        s.latest_granted = Some(FIRST_PERIOD);
        let changes = apply(&event(updated("p_ent")), s, &c);
        assert_eq!(changes.ledger.account.tier, "enterprise");
        assert_eq!(changes.ledger.account.plan_credits, 100);
    }

    #[test]
    fn a_plan_seen_before_payment_is_granted_with_it() {
        let seen = apply(&event(updated("p_ent")), snapshot(100, 0), &catalogue());
        assert!(seen.ledger.entries.is_empty(), "nothing is granted before payment");
        let mut s = snapshot(100, 0);
        s.period = seen.period;
        let paid = apply(&event(checkout("pro")), s, &catalogue());
        assert_eq!(paid.ledger.account.plan_credits, 10_000);
    }

    #[test]
    fn a_payment_for_an_older_period_changes_nothing() {
        let mut s = snapshot(100, 0);
        s.latest_granted = Some(5_000);
        let changes = apply(&event(checkout("enterprise")), s, &catalogue());
        assert!(changes.ledger.entries.is_empty());
    }

    #[test]
    fn deleting_a_subscription_that_funds_nothing_keeps_the_balance() {
        let mut s = snapshot(2_000, 0);
        s.account.tier = "pro".into();
        s.account.funded_by = Some("other".into());
        let EventKind::SubscriptionChanged(obj) = updated("p_pro") else { unreachable!() };
        let changes = apply(&event(EventKind::SubscriptionDeleted(obj)), s, &catalogue());
        assert_eq!(changes.ledger.account.plan_credits, 2_000);
        assert_eq!(changes.subscription.unwrap().status, "canceled");
    }

    #[test]
    fn an_unknown_price_grants_nothing_and_is_kept_for_replay() {
        for kind in [updated("p_unknown"), first_invoice("p_unknown", 4_900), checkout("gone")] {
            let changes = apply(&event(kind), snapshot(100, 0), &catalogue());
            assert!(changes.unmatched, "kept as unmatched");
            assert_eq!(changes.note, Some(UNKNOWN_PRICE));
            assert!(!changes.changed_anything());
        }
    }

    #[test]
    fn a_legacy_price_is_honoured() {
        let mut c = catalogue();
        c.plans[0].legacy_prices.push("p_pro_2024".into());
        let changes = apply(&event(first_invoice("p_pro_2024", 2_900)), snapshot(100, 0), &c);
        assert_eq!(changes.ledger.account.tier, "pro");
        assert_eq!(changes.ledger.account.plan_credits, 2_500);
    }

    #[test]
    fn a_trial_grants_its_credits_once_whichever_event_comes_first() {
        let mut c = catalogue();
        c.plans[0].trial_credits = Some(50);
        let trialing = EventKind::SubscriptionChanged(subscription("p_pro", "trialing"));
        for (first, second) in [(trialing.clone(), first_invoice("p_pro", 0)), (first_invoice("p_pro", 0), trialing)] {
            let one = apply(&event(first), snapshot(100, 0), &c);
            assert_eq!((one.ledger.account.tier.as_str(), one.ledger.account.plan_credits), ("pro", 50));
            let mut s = snapshot(50, 0);
            s.account = one.ledger.account;
            s.subscription = one.subscription;
            s.latest_granted = Some(TRIAL_PERIOD);
            s.period = one.period;
            let two = apply(&event(second), s, &c);
            assert!(two.ledger.entries.is_empty(), "{:?}", two.ledger.entries);
        }
    }

    #[test]
    fn a_yearly_period_is_due_monthly_and_only_while_it_funds_the_account() {
        let year = 365 * 86_400;
        let sub = SubscriptionState {
            status: "active".into(),
            plan: Some("pro".into()),
            current_period_start: Some(crate::calendar::anniversary(1_767_225_600, 0)),
            current_period_end: Some(1_767_225_600 + year),
            ..SubscriptionState::new("sub", "u")
        };
        let start = 1_767_225_600; // 2026-01-01
        assert_eq!(month_due(&sub, start + 10 * 86_400), None, "the first month is the period's own grant");
        let due = month_due(&sub, start + 40 * 86_400).unwrap();
        assert_eq!(due.reference(), format!("month:sub:{start}:1"));
        assert_eq!(month_due(&sub, start + year), None, "the period is over");

        let mut ledger = Ledger::new(snapshot(30, 0).account);
        assert!(
            grant_month(&mut ledger, &sub, &granted("pro", FIRST_PERIOD), start + 40 * 86_400, &catalogue()).is_err()
        );
        ledger.account.funded_by = Some("sub".into());
        grant_month(&mut ledger, &sub, &granted("pro", FIRST_PERIOD), start + 40 * 86_400, &catalogue()).unwrap();
        assert_eq!(ledger.account.plan_credits, 2_500);

        let monthly = SubscriptionState { current_period_end: Some(start + 30 * 86_400), ..sub };
        assert_eq!(month_due(&monthly, start + 29 * 86_400), None, "a monthly price grants by its period");
    }

    #[test]
    fn refunds_take_the_refunded_share_once() {
        let topup = Topup {
            session_id: "cs".into(),
            user_id: "u".into(),
            payment_intent: Some("pi".into()),
            credits: 1_000,
            refunded_credits: 250,
        };
        let charge = |amount, refunded| {
            EventKind::ChargeRefunded(Charge {
                id: "ch".into(),
                payment_intent: Some("pi".into()),
                amount,
                amount_refunded: refunded,
                owner: Owner::default(),
            })
        };
        let mut s = snapshot(0, 600);
        s.topup = Some(topup.clone());
        let changes = apply(&event(charge(2_000, 1_000)), s, &catalogue());
        assert_eq!(changes.ledger.account.topup_credits, 350, "half refunded: 500 owed, 250 taken before");
        let mut s = snapshot(0, 600);
        s.topup = Some(topup.clone());
        assert!(apply(&event(charge(2_000, 500)), s, &catalogue()).ledger.entries.is_empty());
        let mut s = snapshot(0, 600);
        s.topup = Some(topup);
        let huge = apply(&event(charge(i64::MAX, i64::MAX)), s, &catalogue());
        assert_eq!(huge.ledger.account.topup_credits, 0, "a full refund of a huge charge does not overflow");
    }
}
