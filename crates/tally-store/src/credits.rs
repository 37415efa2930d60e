//! Jobs on one account in the writer's batch: spends, operator grants and time's grants
//! (a change made once per ledger reference), and checkout's Stripe customer link.

use tally_core::rules;
use tally_core::{Account, Bucket, Ledger};

use crate::StoreError;
use crate::holds::hold_reference;
use crate::unit::Unit;

/// A change to one account, made once per ledger reference.
pub(crate) struct Once {
    pub user_id: String,
    pub reference: String,
    pub change: Change,
}

pub(crate) enum Change {
    Spend {
        amount: i64,
        reason: String,
    },
    Grant {
        bucket: Bucket,
        amount: i64,
        reason: String,
    },
    /// The month of a long (yearly) period due at `now` (see [`rules::grant_month`]).
    Month {
        subscription_id: String,
        now: i64,
    },
    /// A monthly free tier's reset for the month of `now` (see [`rules::grant_free_month`]).
    FreeMonth {
        now: i64,
    },
}

impl Change {
    /// What the change moves in all, when a repeat must move the same: a retry of a
    /// spend or grant is one with the same amount.
    fn delta(&self) -> Option<i64> {
        match self {
            Change::Spend { amount, .. } => Some(-amount),
            Change::Grant { amount, .. } => Some(*amount),
            Change::Month { .. } | Change::FreeMonth { .. } => None,
        }
    }

    /// Makes the change, deciding on the state the unit holds (read after the lock).
    async fn apply(&self, unit: &mut Unit<'_>, ledger: &mut Ledger, reference: &str) -> Result<(), StoreError> {
        match self {
            Change::Spend { amount, reason } => Ok(ledger.spend(*amount, reason, reference)?),
            Change::Grant { bucket, amount, reason } => {
                Ok(ledger.adjust(*bucket, *amount, reason, reference.to_owned())?)
            }
            Change::Month { subscription_id, now } => {
                let (subscription, latest) = unit.latest_granted_period(subscription_id).await?;
                let (Some(subscription), Some(latest)) = (subscription, latest) else {
                    return Err(StoreError::Invalid("no granted period to renew monthly".into()));
                };
                rules::grant_month(ledger, &subscription, &latest, *now, unit.catalogue)
                    .map_err(|why| StoreError::Invalid(why.into()))
            }
            Change::FreeMonth { now } => {
                rules::grant_free_month(ledger, unit.catalogue, *now).map_err(|why| StoreError::Invalid(why.into()))
            }
        }
    }
}

/// Makes the change to the user's account once per ledger reference: a repeat by the
/// same user changes nothing; another user's reference is a conflict.
pub(crate) async fn apply_once(unit: &mut Unit<'_>, once: &Once) -> Result<Result<Account, StoreError>, StoreError> {
    let mut account = unit.account(&once.user_id).await?.account.clone();
    account.reserved = unit.reserved(&once.user_id).await?;
    match unit.reference(&once.reference).await? {
        // A retry: the same user, moving the same.
        Some(used) if used.user_id == once.user_id && once.change.delta().is_none_or(|d| d == used.delta) => {
            Ok(Ok(account))
        }
        Some(used) if used.user_id != once.user_id => Ok(Err(StoreError::KeyReused("another user"))),
        Some(_) => Ok(Err(StoreError::KeyReused("another amount"))),
        None => {
            if let Change::Spend { .. } = once.change
                && let Some(key) = once.reference.strip_prefix("spend:")
                && unit.reference(&hold_reference(key)).await?.is_some()
            {
                return Ok(Err(StoreError::KeyReused("a reservation")));
            }
            let mut ledger = Ledger::new(account);
            match once.change.apply(unit, &mut ledger, &once.reference).await {
                Ok(()) => {}
                // The database failing is the batch's error; a refusal is this job's.
                Err(e @ (StoreError::Unavailable(_) | StoreError::Database(_))) => return Err(e),
                Err(refused) => return Ok(Err(refused)),
            }
            let account = ledger.account.clone();
            let moved = ledger.entries.iter().map(|e| e.delta).sum();
            unit.post(ledger);
            unit.remember_reference(&once.reference, &once.user_id, moved);
            Ok(Ok(account))
        }
    }
}

/// Records the user's Stripe customer unless one is recorded already; the one kept, so
/// that concurrent first checkouts agree on one customer. A customer another user has
/// is refused.
pub(crate) async fn apply_link(
    unit: &mut Unit<'_>,
    user_id: &str,
    customer: &str,
) -> Result<Result<String, StoreError>, StoreError> {
    unit.link_customer(user_id, customer).await?;
    let held = unit.account(user_id).await?;
    Ok(held.customer.clone().ok_or_else(|| StoreError::Conflict("the Stripe customer belongs to another user".into())))
}
