//! The invariants `tally audit` checks: the books balance, no period or top-up is
//! granted twice, and every account's tier matches the subscription that funds it.

use std::collections::BTreeMap;

use crate::{Store, StoreError};

impl Store {
    /// Every broken invariant, one line each; empty when all hold.
    pub async fn audit(&self) -> Result<Vec<String>, StoreError> {
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
        Ok(problems)
    }
}
