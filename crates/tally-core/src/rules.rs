//! The credit rules of CONTRACT §1: given an event and the state it touches, what changes.
//!
//! Subscriptions grant by billing period. A period is named by its start, except the
//! first, which is named [`FIRST_PERIOD`] because the checkout session that pays for it
//! carries no dates. Each period grants the allowance of the best plan paid for in it,
//! exactly once: the first grant of a period resets the plan bucket, a better plan later
//! in the same period adds the difference, and anything older than the newest granted
//! period changes nothing. So the events of one period give the same balance in
//! whatever order they arrive.

use crate::account::{Account, Bucket, Ledger};
use crate::event::{
    BillingEvent, BillingReason, Charge, CheckoutMode, CheckoutSession, EventKind, Invoice, Subscription,
};
use crate::plan::{Catalog, Item, Plan};

/// The name of a subscription's first period.
pub const FIRST_PERIOD: i64 = 0;

/// A subscription as tally last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub id: String,
    pub user_id: String,
    pub status: String,
    pub plan: Option<Plan>,
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
    pub seen: Option<Plan>,
    /// The plan whose allowance this period has granted; `None` until it is paid.
    pub granted: Option<Plan>,
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
    /// checkout has not arrived): it is kept as unmatched, for replay.
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
    match invoice.billing_reason {
        BillingReason::SubscriptionCreate => Some(FIRST_PERIOD),
        BillingReason::SubscriptionCycle | BillingReason::Other => {
            invoice.plan_lines.iter().find_map(|line| line.period_start)
        }
    }
}

/// The period a subscription object is in; the one that starts at `start_date` is the first.
fn subscription_period(sub: &Subscription) -> Option<i64> {
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
pub fn apply(event: &BillingEvent, snapshot: Snapshot, catalog: &Catalog) -> Changes {
    let mut step = Step {
        catalog,
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

/// One event's application in progress.
struct Step<'a> {
    catalog: &'a Catalog,
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

    fn plan_of_price(&self, price_id: Option<&str>) -> Option<Plan> {
        price_id.and_then(|p| self.catalog.plan_for_price(p))
    }

    /// The best tally plan an invoice's plan lines pay for.
    fn plan_of_invoice(&self, invoice: &Invoice) -> Option<Plan> {
        invoice.plan_lines.iter().filter_map(|line| self.plan_of_price(line.price_id.as_deref())).max()
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
        let plan = session.item.and_then(Item::plan).or_else(|| self.subscription.as_ref().and_then(|s| s.plan));
        let Some(plan) = plan else {
            return self.ignore("checkout names no plan");
        };
        if self.subscription.is_none() {
            // Known only from checkout so far: the subscription's own events carry its
            // authoritative state, so this row must not look newer than they are.
            let state = SubscriptionState {
                status: "active".into(),
                plan: Some(plan),
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
        if session.item != Some(Item::Topup) {
            // tally's own checkout always names the item; other payments are not ours.
            return self.ignore("payment checkout for an item that is not a top-up");
        }
        if existing.is_some() {
            return self.ignore("top-up already granted");
        }
        let credits = self.catalog.topup.credits;
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
        if line_plan.is_none() && self.subscription.is_none() {
            return self.ignore("invoice is not for a tally plan");
        }
        self.observe(sub_id, |state| {
            state.status = "active".into();
            state.plan = line_plan.or(state.plan);
        });
        let Some(plan) = line_plan.or_else(|| self.subscription.as_ref().and_then(|s| s.plan)) else {
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
            return self.ignore("invoice is not for a tally plan");
        }
        self.observe(sub_id, |state| {
            state.status = "past_due".into();
            state.plan = plan.or(state.plan);
        });
    }

    fn subscription_changed(&mut self, sub: &Subscription) {
        if sub.status == "canceled" {
            return self.subscription_deleted(sub);
        }
        let plan = self.plan_of_price(sub.price_id.as_deref());
        if plan.is_none() && self.subscription.is_none() {
            return self.ignore("subscription is not for a tally plan");
        }
        self.observe(&sub.id, |state| {
            state.status = sub.status.clone();
            state.plan = plan.or(state.plan);
            state.current_period_end = sub.current_period_end.or(state.current_period_end);
            state.cancel_at_period_end = sub.cancel_at_period_end;
        });
        if let (Some(plan), Some(start)) = (plan, subscription_period(sub))
            && sub.status == "active"
            && !self.canceled()
        {
            self.show_period(&sub.id, start, plan);
        }
    }

    fn subscription_deleted(&mut self, sub: &Subscription) {
        let already_canceled = self.canceled();
        if !already_canceled {
            let plan = self.plan_of_price(sub.price_id.as_deref());
            let user_id = self.user_id();
            let state = self.subscription.get_or_insert_with(|| SubscriptionState {
                plan,
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
            ledger.reset_plan(self.catalog.free_credits, "subscription_ended", format!("ended:{}", sub.id));
            ledger.account.tier = Plan::Free;
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
    fn pay_period(&mut self, sub_id: &str, start: i64, plan: Plan) {
        if self.canceled() {
            return self.ignore("subscription is canceled");
        }
        if self.latest_granted.is_some_and(|latest| latest > start) {
            return self.ignore("a newer period has already been granted");
        }
        let period = self.take_period(sub_id, start);
        let best = period.seen.map_or(plan, |seen| seen.max(plan));
        self.grant(period, best);
    }

    /// The subscription shows `plan` as active in the period starting at `start`: an
    /// upgrade if that period is paid, otherwise remembered for when it is.
    fn show_period(&mut self, sub_id: &str, start: i64, plan: Plan) {
        if self.latest_granted.is_some_and(|latest| latest > start) {
            return;
        }
        let mut period = self.take_period(sub_id, start);
        if period.granted.is_some() {
            return self.grant(period, plan);
        }
        if period.seen.is_none_or(|seen| plan > seen) {
            period.seen = Some(plan);
            self.changes.period = Some(period);
        }
    }

    /// Brings the period's grant up to `plan`: a new period resets the plan bucket, a
    /// better plan in a granted period adds the difference, anything else is a no-op.
    fn grant(&mut self, mut period: Period, plan: Plan) {
        let account = &self.changes.ledger.account;
        let other_funds = account.funded_by.as_deref().is_some_and(|f| f != period.subscription_id);
        if other_funds && self.created < account.funded_at {
            // A late payment of one subscription must not displace a later-paid one.
            return self.ignore("another subscription was paid for later");
        }
        let reference = format!("period:{}:{}:{}", period.subscription_id, period.start, plan.as_str());
        let allowance = self.catalog.allowance(plan);
        let ledger = &mut self.changes.ledger;
        match period.granted {
            None => ledger.reset_plan(allowance, "subscription_period", reference),
            Some(granted) if plan > granted => {
                let more = allowance - self.catalog.allowance(granted);
                ledger.post(Bucket::Plan, more, "subscription_upgrade", reference);
            }
            Some(_) => return self.ignore("period already granted"),
        }
        ledger.account.tier = plan;
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
        let target = topup.credits * refunded / charge.amount;
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
    use crate::event::{Owner, Subscription as SubObject};

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        c.pro.price_id = Some("p_pro".into());
        c.enterprise.price_id = Some("p_ent".into());
        c
    }

    fn snapshot(plan_credits: i64, topup_credits: i64) -> Snapshot {
        let mut account = Account::new_user("u", &catalog());
        account.plan_credits = plan_credits;
        account.topup_credits = topup_credits;
        Snapshot { account, subscription: None, period: None, latest_granted: None, topup: None }
    }

    fn event(kind: EventKind) -> BillingEvent {
        BillingEvent { id: "evt".into(), created: 1_000, kind }
    }

    fn checkout(item: Item) -> EventKind {
        EventKind::Checkout(CheckoutSession {
            id: "cs".into(),
            mode: CheckoutMode::Subscription,
            paid: true,
            item: Some(item),
            subscription: Some("sub".into()),
            payment_intent: None,
            owner: Owner::default(),
        })
    }

    fn updated(price: &str) -> EventKind {
        EventKind::SubscriptionChanged(SubObject {
            id: "sub".into(),
            status: "active".into(),
            price_id: Some(price.into()),
            start_date: Some(500),
            current_period_start: Some(500),
            current_period_end: Some(900),
            cancel_at_period_end: false,
            owner: Owner::default(),
        })
    }

    #[test]
    fn the_first_payment_of_a_period_resets_the_plan_bucket() {
        let changes = apply(&event(checkout(Item::Pro)), snapshot(40, 7), &catalog());
        assert_eq!(changes.ledger.account.plan_credits, 2_500);
        assert_eq!(changes.ledger.account.topup_credits, 7);
        assert_eq!(changes.ledger.account.tier, Plan::Pro);
        assert_eq!(changes.period.unwrap().granted, Some(Plan::Pro));
    }

    #[test]
    fn a_period_already_granted_grants_nothing_more() {
        let mut s = snapshot(10, 0);
        s.period =
            Some(Period { subscription_id: "sub".into(), start: FIRST_PERIOD, seen: None, granted: Some(Plan::Pro) });
        s.latest_granted = Some(FIRST_PERIOD);
        let changes = apply(&event(checkout(Item::Pro)), s, &catalog());
        assert!(changes.ledger.entries.is_empty());
        assert_eq!(changes.note, Some("period already granted"));
    }

    #[test]
    fn a_better_plan_in_a_granted_period_adds_the_difference() {
        let mut s = snapshot(100, 0);
        s.period =
            Some(Period { subscription_id: "sub".into(), start: FIRST_PERIOD, seen: None, granted: Some(Plan::Pro) });
        s.latest_granted = Some(FIRST_PERIOD);
        let changes = apply(&event(updated("p_ent")), s, &catalog());
        assert_eq!(changes.ledger.account.plan_credits, 100 + 7_500);
        assert_eq!(changes.ledger.account.tier, Plan::Enterprise);
    }

    #[test]
    fn a_plan_seen_before_payment_is_granted_with_it() {
        let seen = apply(&event(updated("p_ent")), snapshot(100, 0), &catalog());
        assert!(seen.ledger.entries.is_empty(), "nothing is granted before payment");
        let mut s = snapshot(100, 0);
        s.period = seen.period;
        let paid = apply(&event(checkout(Item::Pro)), s, &catalog());
        assert_eq!(paid.ledger.account.plan_credits, 10_000);
    }

    #[test]
    fn a_payment_for_an_older_period_changes_nothing() {
        let mut s = snapshot(100, 0);
        s.latest_granted = Some(5_000);
        let changes = apply(&event(checkout(Item::Enterprise)), s, &catalog());
        assert!(changes.ledger.entries.is_empty());
    }

    #[test]
    fn deleting_a_subscription_that_funds_nothing_keeps_the_balance() {
        let mut s = snapshot(2_000, 0);
        s.account.tier = Plan::Pro;
        s.account.funded_by = Some("other".into());
        let EventKind::SubscriptionChanged(obj) = updated("p_pro") else { unreachable!() };
        let changes = apply(&event(EventKind::SubscriptionDeleted(obj)), s, &catalog());
        assert_eq!(changes.ledger.account.plan_credits, 2_000);
        assert_eq!(changes.subscription.unwrap().status, "canceled");
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
        let charge = |refunded| {
            EventKind::ChargeRefunded(Charge {
                id: "ch".into(),
                payment_intent: Some("pi".into()),
                amount: 2_000,
                amount_refunded: refunded,
                owner: Owner::default(),
            })
        };
        let mut s = snapshot(0, 600);
        s.topup = Some(topup.clone());
        let changes = apply(&event(charge(1_000)), s, &catalog());
        assert_eq!(changes.ledger.account.topup_credits, 350, "half refunded: 500 owed, 250 taken before");
        let mut s = snapshot(0, 600);
        s.topup = Some(topup);
        assert!(apply(&event(charge(500)), s, &catalog()).ledger.entries.is_empty());
    }
}
