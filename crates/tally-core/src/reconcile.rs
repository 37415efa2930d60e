//! What `tally sync` repairs: how a subscription as Stripe lists it differs from the
//! one tally keeps. Stripe is the truth; each difference is repaired by applying
//! Stripe's object through the credit rules, so a repair grants only what the webhook
//! would have granted, and only once (periods and ledger references are the keys).

use std::collections::BTreeSet;

use crate::catalogue::Catalogue;
use crate::event::Subscription;
use crate::rules::{self, SubscriptionState, TRIAL_PERIOD};

/// One field that differs, as tally has it and as Stripe has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiff {
    pub field: &'static str,
    pub tally: String,
    pub stripe: String,
}

/// How a Stripe subscription differs from tally's record of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Status, plan, period or cancellation differ: tally needs Stripe's subscription.
    pub state: Vec<FieldDiff>,
    /// Stripe shows the subscription active in a period that tally has not granted:
    /// tally needs the invoice that paid it.
    pub period_unpaid: bool,
}

impl Comparison {
    pub fn is_empty(&self) -> bool {
        self.state.is_empty() && !self.period_unpaid
    }
}

/// Statuses under which a subscription tally has never seen is worth recording; the
/// others (incomplete, expired, canceled) never granted anything.
const LIVE: [&str; 5] = ["active", "trialing", "past_due", "unpaid", "paused"];

/// Compares Stripe's `stripe` with tally's `kept` (and the starts of the periods it has
/// granted). `None` when the subscription is none of tally's business: a price outside
/// the catalogue that tally never kept, or one that never went live.
pub fn compare(
    stripe: &Subscription,
    kept: Option<(&SubscriptionState, &BTreeSet<i64>)>,
    catalogue: &Catalogue,
) -> Option<Comparison> {
    let plan = stripe.price_id.as_deref().and_then(|p| catalogue.plan_of_price(p)).map(|p| p.id.clone());
    let Some((kept, granted)) = kept else {
        if plan.is_none() || !LIVE.contains(&stripe.status.as_str()) {
            return None;
        }
        let state = vec![diff("subscription", "not kept", &stripe.status)];
        return Some(Comparison { state, period_unpaid: in_unpaid_period(stripe, &BTreeSet::new()) });
    };
    if kept.is_canceled() {
        // Canceled is final, at Stripe as in tally's rules.
        return Some(Comparison::default());
    }
    let mut state = Vec::new();
    if kept.status != stripe.status {
        state.push(diff("status", &kept.status, &stripe.status));
    }
    let stripe_plan = match (&plan, &stripe.price_id) {
        (Some(plan), _) => plan.clone(),
        (None, Some(price)) => format!("{price} (not in the catalogue)"),
        (None, None) => "none".into(),
    };
    if kept.plan.as_deref() != plan.as_deref() {
        state.push(diff("plan", kept.plan.as_deref().unwrap_or("none"), &stripe_plan));
    }
    if stripe.current_period_end.is_some() && kept.current_period_end != stripe.current_period_end {
        state.push(diff("period_end", &time(kept.current_period_end), &time(stripe.current_period_end)));
    }
    if kept.cancel_at_period_end != stripe.cancel_at_period_end {
        let flag = |b: bool| if b { "yes" } else { "no" }.to_owned();
        state.push(diff("cancel_at_period_end", &flag(kept.cancel_at_period_end), &flag(stripe.cancel_at_period_end)));
    }
    Some(Comparison { state, period_unpaid: plan.is_some() && in_unpaid_period(stripe, granted) })
}

/// Whether Stripe shows the subscription active (or trialing) in a period of which
/// tally has granted nothing. The first period may be granted under its own name or
/// under its start (invoices that name no billing reason), so any granted period that
/// starts at or after the current one covers it.
fn in_unpaid_period(stripe: &Subscription, granted: &BTreeSet<i64>) -> bool {
    let Some(period) = rules::subscription_period(stripe) else { return false };
    let covered = granted.contains(&period)
        || stripe.current_period_start.is_some_and(|start| granted.range(start..).next().is_some());
    match stripe.status.as_str() {
        "active" => !covered,
        "trialing" => period == TRIAL_PERIOD && !covered,
        _ => false,
    }
}

fn diff(field: &'static str, tally: &str, stripe: &str) -> FieldDiff {
    FieldDiff { field, tally: tally.to_owned(), stripe: stripe.to_owned() }
}

fn time(t: Option<i64>) -> String {
    t.map_or_else(|| "none".into(), crate::calendar::moment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Owner;
    use crate::rules::FIRST_PERIOD;

    fn catalogue() -> Catalogue {
        Catalogue::default_with(Some("p_pro".into()), Some("p_ent".into()), Some("p_top".into()))
    }

    /// At Stripe: in its second period, which started at 1_000.
    fn stripe(price: &str, status: &str) -> Subscription {
        Subscription {
            id: "sub".into(),
            status: status.into(),
            price_id: Some(price.into()),
            start_date: Some(500),
            current_period_start: Some(1_000),
            current_period_end: Some(2_000),
            cancel_at_period_end: false,
            owner: Owner::default(),
        }
    }

    /// What tally keeps when it has seen everything Stripe has.
    fn kept(plan: &str, status: &str) -> SubscriptionState {
        SubscriptionState {
            status: status.into(),
            plan: Some(plan.into()),
            price_id: Some("p_pro".into()),
            current_period_start: Some(1_000),
            current_period_end: Some(2_000),
            ..SubscriptionState::new("sub", "u")
        }
    }

    fn fields(c: &Comparison) -> Vec<(&str, &str, &str)> {
        c.state.iter().map(|f| (f.field, f.tally.as_str(), f.stripe.as_str())).collect()
    }

    #[test]
    fn a_subscription_tally_matches_has_no_difference() {
        let granted = BTreeSet::from([FIRST_PERIOD, 1_000]);
        let c = compare(&stripe("p_pro", "active"), Some((&kept("pro", "active"), &granted)), &catalogue());
        assert_eq!(c, Some(Comparison::default()));
    }

    #[test]
    fn every_field_that_differs_is_named_with_both_sides() {
        let mut at_stripe = stripe("p_ent", "past_due");
        at_stripe.cancel_at_period_end = true;
        let mut ours = kept("pro", "active");
        ours.current_period_end = Some(1_000);
        let granted = BTreeSet::from([1_000]);
        let c = compare(&at_stripe, Some((&ours, &granted)), &catalogue()).unwrap();
        assert_eq!(
            fields(&c),
            [
                ("status", "active", "past_due"),
                ("plan", "pro", "enterprise"),
                ("period_end", "1970-01-01 00:16:40 UTC", "1970-01-01 00:33:20 UTC"),
                ("cancel_at_period_end", "no", "yes"),
            ]
        );
        assert!(!c.period_unpaid, "past due is not a period to grant");
    }

    #[test]
    fn an_active_period_tally_has_not_granted_is_unpaid() {
        let ours = kept("pro", "active");
        let only_the_first = BTreeSet::from([FIRST_PERIOD]);
        let c = compare(&stripe("p_pro", "active"), Some((&ours, &only_the_first)), &catalogue()).unwrap();
        assert!(c.state.is_empty() && c.period_unpaid);
        // A period granted under its start (an invoice without a billing reason) covers it.
        let by_start = BTreeSet::from([1_000]);
        assert!(!compare(&stripe("p_pro", "active"), Some((&ours, &by_start)), &catalogue()).unwrap().period_unpaid);
    }

    #[test]
    fn the_first_period_is_covered_by_its_own_name() {
        let mut first = stripe("p_pro", "active");
        first.current_period_start = Some(500);
        let mut ours = kept("pro", "active");
        ours.current_period_start = Some(500);
        let granted = BTreeSet::from([FIRST_PERIOD]);
        assert_eq!(compare(&first, Some((&ours, &granted)), &catalogue()), Some(Comparison::default()));
    }

    #[test]
    fn a_live_subscription_tally_never_kept_is_a_difference() {
        let c = compare(&stripe("p_pro", "active"), None, &catalogue()).unwrap();
        assert_eq!(fields(&c), [("subscription", "not kept", "active")]);
        assert!(c.period_unpaid);
        let trial = compare(&stripe("p_pro", "trialing"), None, &catalogue()).unwrap();
        assert!(trial.period_unpaid, "its trial credits are owed");
    }

    #[test]
    fn what_is_not_tallys_or_never_went_live_is_left_alone() {
        assert_eq!(compare(&stripe("p_other_product", "active"), None, &catalogue()), None);
        for status in ["incomplete", "incomplete_expired", "canceled"] {
            assert_eq!(compare(&stripe("p_pro", status), None, &catalogue()), None, "{status}");
        }
    }

    #[test]
    fn a_move_to_a_price_outside_the_catalogue_is_named_as_such() {
        let granted = BTreeSet::from([1_000]);
        let c = compare(&stripe("p_legacy", "active"), Some((&kept("pro", "active"), &granted)), &catalogue());
        assert_eq!(fields(&c.unwrap()), [("plan", "pro", "p_legacy (not in the catalogue)")]);
    }

    #[test]
    fn canceled_in_tally_is_final() {
        let ours = kept("pro", "canceled");
        let c = compare(&stripe("p_pro", "active"), Some((&ours, &BTreeSet::new())), &catalogue());
        assert_eq!(c, Some(Comparison::default()));
    }
}
