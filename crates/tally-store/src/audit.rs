//! The invariants `tally audit` checks: the books balance, no period or top-up is
//! granted twice, and every account's tier matches the subscription that funds it;
//! events whose metadata named another user than their customer's owner; and what the
//! catalogue no longer covers: tiers it does not have, live subscriptions
//! on prices it does not name, and events kept unmatched for an unknown price.

use std::collections::BTreeMap;

use tally_core::rules::UNKNOWN_PRICE;

use crate::{Store, StoreError};

/// What `tally audit` finds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Broken invariants: `tally audit` exits 1.
    pub violations: Vec<String>,
    /// Worth a look, but no invariant is broken: events kept for a price the catalogue
    /// does not name (another product of the app's, or one to add to the file), and
    /// events whose metadata named another user than their customer's owner.
    pub notices: Vec<String>,
}

/// What the database holds that the catalogue does not name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drift {
    /// Prices of live subscriptions that no plan names (nor lists as legacy), with how many.
    pub unknown_prices: Vec<(String, i64)>,
    /// Tiers of accounts that the catalogue does not have, with how many.
    pub unknown_tiers: Vec<(String, i64)>,
    /// Events kept as unmatched because of an unknown price.
    pub unknown_price_events: Vec<String>,
}

impl Store {
    /// Every broken invariant and every notice, one line each.
    pub async fn audit(&self) -> Result<Audit, StoreError> {
        let mut problems: Vec<String> = self
            .unbalanced_accounts()
            .await?
            .into_iter()
            .map(|user| format!("{user}: balances differ from the sums of the ledger"))
            .collect();

        // A period's first grant is its one `subscription_period` row.
        let references: Vec<String> =
            sqlx::query_scalar("select reference from ledger where reason = 'subscription_period'")
                .fetch_all(&self.pool)
                .await?;
        let mut per_period: BTreeMap<String, usize> = BTreeMap::new();
        for reference in references {
            let period = reference.rsplit_once(':').map_or(reference.as_str(), |(period, _plan)| period).to_owned();
            *per_period.entry(period).or_default() += 1;
        }
        problems.extend(per_period.into_iter().filter(|(_, n)| *n > 1).map(|(p, n)| format!("{p}: granted {n} times")));

        let topups: Vec<(String, i64)> = sqlx::query_as(
            "select reference, count(*) from ledger where reason = 'topup' group by reference having count(*) > 1",
        )
        .fetch_all(&self.pool)
        .await?;
        problems.extend(topups.into_iter().map(|(r, n)| format!("{r}: granted {n} times")));

        // The tier is the plan the funding subscription's newest period granted.
        let tiers: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
            "select a.user_id, a.tier, s.status,
                    (select p.granted from periods p where p.subscription_id = a.funded_by and p.granted is not null
                     order by p.start desc limit 1)
             from accounts a left join subscriptions s on s.id = a.funded_by
             where a.funded_by is not null",
        )
        .fetch_all(&self.pool)
        .await?;
        for (user, tier, status, granted) in tiers {
            if status.as_deref() == Some("canceled") {
                problems.push(format!("{user}: funded by a canceled subscription"));
            } else if granted.as_deref() != Some(tier.as_str()) {
                problems
                    .push(format!("{user}: tier {tier}, but its subscription granted {}", granted.unwrap_or_default()));
            }
        }
        let free_but_funded: Vec<String> =
            sqlx::query_scalar("select user_id from accounts where funded_by is null and tier <> 'free'")
                .fetch_all(&self.pool)
                .await?;
        problems.extend(free_but_funded.into_iter().map(|u| format!("{u}: a paid tier with no subscription")));

        let conflicts: Vec<(String, String, String)> =
            sqlx::query_as("select event_id, owner, named from ownership_conflicts order by recorded_at, event_id")
                .fetch_all(&self.pool)
                .await?;
        let mut notices: Vec<String> = conflicts
            .into_iter()
            .map(|(event, owner, named)| {
                format!("event {event}: names user {named}, but its Stripe customer is {owner}'s; applied to {owner}")
            })
            .collect();

        let drift = self.catalogue_drift().await?;
        problems.extend(
            drift
                .unknown_tiers
                .iter()
                .map(|(tier, n)| format!("tier {tier}: {n} accounts hold a tier the catalogue does not have")),
        );
        problems.extend(
            drift.unknown_prices.iter().map(|(price, n)| {
                format!("price {price}: {n} live subscriptions on a price the catalogue does not name")
            }),
        );
        notices.extend(drift.unknown_price_events.iter().map(|id| {
            format!(
                "event {id}: unmatched, its price is not in the catalogue \
                 (if it is yours, name it in the file, then `tally replay --unmatched`)"
            )
        }));
        Ok(Audit { violations: problems, notices })
    }

    /// What the database holds that the catalogue does not name.
    pub async fn catalogue_drift(&self) -> Result<Drift, StoreError> {
        let prices: Vec<(String, i64)> = sqlx::query_as(
            "select price_id, count(*) from subscriptions
             where status in ('active', 'trialing', 'past_due', 'unpaid') and price_id is not null
             group by price_id order by price_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let tiers: Vec<(String, i64)> =
            sqlx::query_as("select tier, count(*) from accounts group by tier order by tier")
                .fetch_all(&self.pool)
                .await?;
        let events: Vec<String> = sqlx::query_scalar(
            "select id from events where outcome = 'unmatched' and note = $1 order by received_at, id",
        )
        .bind(UNKNOWN_PRICE)
        .fetch_all(&self.pool)
        .await?;
        Ok(Drift {
            unknown_prices: prices.into_iter().filter(|(p, _)| self.catalogue.product_of_price(p).is_none()).collect(),
            unknown_tiers: tiers.into_iter().filter(|(t, _)| !self.catalogue.knows_tier(t)).collect(),
            unknown_price_events: events,
        })
    }
}
