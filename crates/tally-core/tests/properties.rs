//! Properties of the credit rules over random catalogues: the events of one billing
//! period give the same balance in every order, and a long period's monthly grant is
//! due once per month whenever and however often the clock ticks.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use tally_core::calendar::{anniversary, month_index};
use tally_core::event::{BillingReason, CheckoutMode, CheckoutSession, Invoice, Owner, PlanLine, Subscription};
use tally_core::rules::{self, Period, Snapshot, SubscriptionState};
use tally_core::{Account, BillingEvent, Catalogue, EventKind, Interval, Ledger, Plan, Price};

const START: i64 = 1_767_225_600;

/// A catalogue of 1 to 4 plans with distinct ranks and random allowances.
fn catalogues() -> impl Strategy<Value = Catalogue> {
    (1usize..=4, prop::collection::vec((1i64..=50_000, -1_000i64..=1_000), 4), 0i64..=500).prop_map(
        |(n, plans, free)| {
            let mut catalogue = Catalogue::default();
            catalogue.free.credits = free;
            // A better plan grants at least as many credits (the file checks it).
            let mut plans: Vec<(i64, i64)> = plans.into_iter().take(n).collect();
            let mut credits: Vec<i64> = plans.iter().map(|(c, _)| *c).collect();
            credits.sort();
            let mut by_rank: Vec<usize> = (0..plans.len()).collect();
            by_rank.sort_by_key(|&i| plans[i].1 * 8 + i as i64);
            for (k, &i) in by_rank.iter().enumerate() {
                plans[i].0 = credits[k];
            }
            catalogue.plans = plans
                .into_iter()
                .enumerate()
                .map(|(i, (credits, rank))| Plan {
                    id: format!("plan{i}"),
                    name: format!("Plan {i}"),
                    credits,
                    // Distinct ranks in a random order.
                    rank: rank * 8 + i as i64,
                    trial_credits: None,
                    prices: vec![Price {
                        id: Some(format!("price{i}")),
                        amount: 100,
                        currency: "usd".into(),
                        interval: Some(Interval::Month),
                    }],
                    legacy_prices: Vec::new(),
                })
                .collect();
            catalogue
        },
    )
}

/// The events of a subscription's first period: its checkout, first invoice and
/// creation for plan `first`, and updates to other plans while still in that period.
fn first_period(first: usize, updates: &[usize]) -> Vec<BillingEvent> {
    let owner = Owner { user_id: Some("u".into()), customer: None };
    let subscription = |plan: usize, created: i64, n: usize| BillingEvent {
        id: format!("evt_sub_{n}"),
        created,
        kind: EventKind::SubscriptionChanged(Subscription {
            id: "sub".into(),
            status: "active".into(),
            price_id: Some(format!("price{plan}")),
            start_date: Some(START),
            current_period_start: Some(START),
            current_period_end: Some(START + 30 * 86_400),
            cancel_at_period_end: false,
            owner: owner.clone(),
        }),
    };
    let mut events = vec![
        BillingEvent {
            id: "evt_checkout".into(),
            created: START,
            kind: EventKind::Checkout(CheckoutSession {
                id: "cs".into(),
                mode: CheckoutMode::Subscription,
                paid: true,
                item: Some(format!("plan{first}")),
                subscription: Some("sub".into()),
                payment_intent: None,
                owner: owner.clone(),
            }),
        },
        BillingEvent {
            id: "evt_invoice".into(),
            created: START,
            kind: EventKind::InvoicePaid(Invoice {
                id: "in".into(),
                subscription: Some("sub".into()),
                billing_reason: BillingReason::SubscriptionCreate,
                amount_paid: Some(100),
                plan_lines: vec![PlanLine {
                    price_id: Some(format!("price{first}")),
                    period_start: Some(START),
                    period_end: Some(START + 30 * 86_400),
                }],
                owner: owner.clone(),
            }),
        },
        subscription(first, START, 0),
    ];
    events.extend(updates.iter().enumerate().map(|(i, &plan)| subscription(plan, START + 10 + i as i64, i + 1)));
    events
}

/// What the store keeps between events, applied one event at a time as it does.
struct World {
    account: Account,
    subscription: Option<SubscriptionState>,
    periods: BTreeMap<i64, Period>,
    references: HashSet<String>,
    ledger_sum: i64,
}

impl World {
    fn new(catalogue: &Catalogue) -> World {
        let account = Account::new_user("u", catalogue);
        let ledger_sum = account.plan_credits;
        World { account, subscription: None, periods: BTreeMap::new(), references: HashSet::new(), ledger_sum }
    }

    fn apply(&mut self, event: &BillingEvent, catalogue: &Catalogue) {
        let start = rules::period_of(&event.kind);
        let snapshot = Snapshot {
            account: self.account.clone(),
            subscription: self.subscription.clone(),
            period: start.and_then(|s| self.periods.get(&s).cloned()),
            latest_granted: self.periods.values().filter(|p| p.granted.is_some()).map(|p| p.start).max(),
            topup: None,
        };
        let changes = rules::apply(event, snapshot, catalogue);
        for entry in &changes.ledger.entries {
            assert!(self.references.insert(entry.reference.clone()), "reference {} written twice", entry.reference);
            self.ledger_sum += entry.delta;
        }
        self.account = changes.ledger.account;
        if let Some(s) = changes.subscription {
            self.subscription = Some(s);
        }
        if let Some(p) = changes.period {
            self.periods.insert(p.start, p);
        }
    }
}

proptest! {
    #[test]
    fn one_periods_events_give_the_same_balance_in_every_order(
        catalogue in catalogues(),
        first in 0usize..4,
        updates in prop::collection::vec(0usize..4, 0..4),
        order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
    ) {
        let n = catalogue.plans.len();
        let first = first % n;
        let updates: Vec<usize> = updates.into_iter().map(|p| p % n).collect();
        let events = first_period(first, &updates);

        let mut in_order = World::new(&catalogue);
        events.iter().for_each(|e| in_order.apply(e, &catalogue));

        // A random permutation, from the drawn seed.
        let mut shuffled: Vec<&BillingEvent> = events.iter().collect();
        let mut seed = order;
        for i in (1..shuffled.len()).rev() {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            shuffled.swap(i, (seed >> 33) as usize % (i + 1));
        }
        let mut any_order = World::new(&catalogue);
        shuffled.iter().for_each(|e| any_order.apply(e, &catalogue));

        let best = std::iter::once(first).chain(updates.iter().copied())
            .max_by_key(|&p| catalogue.plans[p].rank).unwrap();
        let best = &catalogue.plans[best];
        for world in [&in_order, &any_order] {
            prop_assert_eq!(&world.account.tier, &best.id, "the best plan paid for in the period");
            prop_assert_eq!(world.account.plan_credits, best.credits, "its allowance, granted once");
            prop_assert_eq!(world.ledger_sum, world.account.plan_credits + world.account.topup_credits);
        }
    }

    #[test]
    fn a_long_periods_month_is_due_once_however_often_the_clock_ticks(
        start in 946_684_800i64..4_102_444_800,
        ticks in prop::collection::vec(0i64..365 * 86_400, 1..60),
        replicas in 1usize..4,
    ) {
        let sub = SubscriptionState {
            status: "active".into(),
            plan: Some("plan0".into()),
            current_period_start: Some(start),
            current_period_end: Some(anniversary(start, 12)),
            ..SubscriptionState::new("sub", "u")
        };
        let mut catalogue = Catalogue::default();
        catalogue.plans[0].id = "plan0".into();
        let latest = Period { subscription_id: "sub".into(), start, seen: None, granted: Some("plan0".into()) };
        let mut granted: HashSet<String> = HashSet::new();
        let mut grants = 0;
        for offset in &ticks {
            let now = start + offset;
            // Every replica ticks at the same moment; the reference is claimed once.
            for _ in 0..replicas {
                let Some(due) = rules::month_due(&sub, now) else { continue };
                if !granted.insert(due.reference()) {
                    continue;
                }
                let mut account = Account::new_user("u", &catalogue);
                account.funded_by = Some("sub".into());
                let mut ledger = Ledger::new(account);
                rules::grant_month(&mut ledger, &sub, &latest, now, &catalogue).unwrap();
                grants += 1;
            }
            let k = month_index(start, now);
            prop_assert!(anniversary(start, k) <= now && now < anniversary(start, k + 1));
        }
        let months: HashSet<u32> = ticks.iter().map(|o| month_index(start, start + o)).filter(|&k| k >= 1).collect();
        prop_assert_eq!(grants, months.len(), "one grant per month ticked in, never the first");
    }
}
