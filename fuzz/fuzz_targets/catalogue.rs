//! The catalogue file parser (`Catalogue::from_toml`) on any text.
//!
//! Beyond "no panic" and a one-line error: a catalogue it accepts keeps its own
//! invariants (CONTRACT §1), the ones the credit rules rely on without checking again.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use tally_core::{Catalogue, FREE, Interval};

/// The most credits one plan or pack may be worth (the parser's bound).
const MAX_CREDITS: i64 = 1_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Catalogue::from_toml(text) {
        Ok(catalogue) => invariants(&catalogue),
        Err(e) => assert!(!e.to_string().contains('\n'), "an error on two lines: {e}"),
    }
});

fn invariants(c: &Catalogue) {
    assert!(!c.plans.is_empty() || !c.packs.is_empty(), "nothing to sell");
    assert!((0..=MAX_CREDITS).contains(&c.free.credits), "free credits {}", c.free.credits);

    let mut items = HashSet::new();
    let mut ranks = HashSet::new();
    let mut price_ids = HashSet::new();
    for plan in &c.plans {
        item_id(&plan.id, &mut items);
        assert!(ranks.insert(plan.rank), "rank {} twice", plan.rank);
        assert!(plan.rank > i64::MIN, "a plan at the free tier's rank");
        assert!((1..=MAX_CREDITS).contains(&plan.credits), "{}: credits {}", plan.id, plan.credits);
        assert!((1..=MAX_CREDITS).contains(&plan.trial_allowance()), "{}: trial credits", plan.id);
        name(&plan.name);
        assert!(!plan.prices.is_empty(), "plan {} without a price", plan.id);
        let mut intervals = HashSet::new();
        for price in &plan.prices {
            let interval = price.interval.expect("a plan price bills each month or year");
            assert!(intervals.insert(interval), "{}: two {interval:?} prices", plan.id);
            price_ok(price, &mut price_ids);
        }
        for legacy in &plan.legacy_prices {
            price_id(legacy, &mut price_ids);
        }
        assert!(plan.prices.iter().all(|p| matches!(p.interval, Some(Interval::Month | Interval::Year))));
    }
    // A better plan never grants less, so events of a period give one balance in any order.
    for a in &c.plans {
        for b in &c.plans {
            assert!(!(a.rank > b.rank && a.credits < b.credits), "{} ranks above {} with fewer credits", a.id, b.id);
            assert!(c.better(&a.id, FREE), "{} is not better than free", a.id);
        }
    }
    for pack in &c.packs {
        item_id(&pack.id, &mut items);
        assert!((1..=MAX_CREDITS).contains(&pack.credits), "{}: credits {}", pack.id, pack.credits);
        name(&pack.name);
        assert!(!pack.prices.is_empty(), "pack {} without a price", pack.id);
        for price in &pack.prices {
            assert_eq!(price.interval, None, "{}: a pack price with an interval", pack.id);
            price_ok(price, &mut price_ids);
        }
    }
    // Every price id maps back to exactly the item that lists it.
    for plan in &c.plans {
        for id in
            plan.prices.iter().filter_map(|p| p.id.as_deref()).chain(plan.legacy_prices.iter().map(String::as_str))
        {
            assert_eq!(c.plan_of_price(id).map(|p| p.id.as_str()), Some(plan.id.as_str()), "{id}");
        }
    }
    for pack in &c.packs {
        for id in pack.prices.iter().filter_map(|p| p.id.as_deref()) {
            assert_eq!(c.product_of_price(id).map(|p| p.id()), Some(pack.id.as_str()), "{id}");
        }
    }
}

/// Plan and pack ids are one namespace of short lowercase words, and never the free tier.
fn item_id(id: &str, seen: &mut HashSet<String>) {
    assert!((1..=32).contains(&id.len()), "id {id:?}");
    assert!(id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'), "{id:?}");
    assert_ne!(id, FREE);
    assert!(seen.insert(id.to_owned()), "id {id:?} twice");
}

fn name(name: &str) {
    assert!(!name.trim().is_empty() && name.chars().count() <= 100, "name {name:?}");
}

fn price_ok(price: &tally_core::Price, seen: &mut HashSet<String>) {
    assert!(price.amount > 0, "amount {}", price.amount);
    assert!(price.currency.len() == 3 && price.currency.bytes().all(|b| b.is_ascii_lowercase()));
    if let Some(id) = &price.id {
        price_id(id, seen);
    }
}

/// A Stripe price id names one thing in the whole file, and is printable ASCII.
fn price_id(id: &str, seen: &mut HashSet<String>) {
    assert!((1..=255).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()), "price id {id:?}");
    assert!(seen.insert(id.to_owned()), "price id {id:?} twice");
}
