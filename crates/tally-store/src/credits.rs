//! Reading balances and spending credits.

use std::collections::HashMap;

use sqlx::{AnyConnection, AssertSqlSafe};
use tally_core::rules;
use tally_core::{Account, Bucket, Ledger};

use crate::model::{Billing, Grant, LedgerRow, Spend, SubscriptionView};
use crate::rows;
use crate::unit::{Unit, placeholders};
use crate::writer::{Done, Work};
use crate::{Store, StoreError, now};

impl Store {
    /// The user's billing state; a user tally has never seen is a new free user.
    pub async fn billing(&self, user_id: &str) -> Result<Billing, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row: Option<rows::AccountRow> = sqlx::query_as(
            "select tier, plan_credits, topup_credits, funded_by, funded_at from accounts where user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
        let account = match row {
            Some(row) => {
                let mut account = rows::account(user_id, row);
                account.reserved = rows::reserved_credits(&mut conn, user_id, None, now()).await?;
                account
            }
            None => Account::new_user(user_id, &self.catalogue),
        };
        billing_of(&mut conn, account).await
    }
    /// The user's Stripe customer, if tally knows one.
    pub async fn stripe_customer(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let customer: Option<Option<String>> =
            sqlx::query_scalar("select stripe_customer_id from accounts where user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(customer.flatten())
    }

    /// Records the user's Stripe customer unless one is recorded already; returns the
    /// one kept, so that concurrent first checkouts agree on one customer.
    pub async fn link_stripe_customer(&self, user_id: &str, customer: &str) -> Result<String, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut unit = Unit::new(&mut tx, &self.catalogue);
        unit.account(user_id).await?;
        // A new account's opening row.
        unit.flush().await?;
        let kept: Option<String> = sqlx::query_scalar(
            "update accounts set stripe_customer_id = coalesce(stripe_customer_id, $2) where user_id = $1
             returning stripe_customer_id",
        )
        .bind(user_id)
        .bind(customer)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(kept.unwrap_or_else(|| customer.to_owned()))
    }

    /// Spends credits, plan bucket first. The same key spends once: a repeat answers
    /// with the current state and changes nothing.
    pub async fn spend(&self, spend: Spend<'_>) -> Result<Billing, StoreError> {
        let change = Change::Spend { amount: spend.amount, reason: spend.reason.to_owned() };
        self.once(spend.user_id, format!("spend:{}", spend.idempotency_key), change).await
    }

    /// Adjusts a bucket by hand (may be negative, never below zero); the same key
    /// adjusts once.
    pub async fn grant(&self, grant: Grant<'_>) -> Result<Billing, StoreError> {
        let change = Change::Grant { bucket: grant.bucket, amount: grant.amount, reason: grant.reason.to_owned() };
        self.once(grant.user_id, format!("grant:{}", grant.key), change).await
    }

    /// Makes `change` to the user's account once per ledger `reference`, through the
    /// writer (see [`crate::writer`]).
    pub(crate) async fn once(&self, user_id: &str, reference: String, change: Change) -> Result<Billing, StoreError> {
        let work = Work::Once(Once { user_id: user_id.to_owned(), reference, change });
        match self.writer.submit(work).await? {
            Done::Billing(billing) => Ok(billing),
            Done::Ingested(_) => unreachable!("a spend is answered with the account"),
        }
    }

    /// The user's ledger rows, newest first, up to `limit`, older than row `before`.
    pub async fn ledger(&self, user_id: &str, limit: i64, before: Option<i64>) -> Result<Vec<LedgerRow>, StoreError> {
        type Row = (i64, String, i64, i64, String, String, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "select id, bucket, delta, balance_after, reason, reference, created_at from ledger
             where user_id = $1 and id < $3 order by id desc limit $2",
        )
        .bind(user_id)
        .bind(limit)
        .bind(before.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, bucket, delta, balance_after, reason, reference, created_at)| LedgerRow {
                id,
                bucket,
                delta,
                balance_after,
                reason,
                reference,
                created_at,
            })
            .collect())
    }

    /// Whether every account's balances equal the sums of its ledger rows; the users
    /// where they do not.
    pub async fn unbalanced_accounts(&self) -> Result<Vec<String>, StoreError> {
        let users: Vec<String> = sqlx::query_scalar(
            "select a.user_id from accounts a
             left join (select user_id,
                     cast(sum(case when bucket = 'plan' then delta else 0 end) as bigint) as plan_sum,
                     cast(sum(case when bucket = 'topup' then delta else 0 end) as bigint) as topup_sum
                 from ledger group by user_id) l on l.user_id = a.user_id
             where coalesce(l.plan_sum, 0) <> a.plan_credits or coalesce(l.topup_sum, 0) <> a.topup_credits",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(users)
    }
}

/// The billing state of `account`, with the subscription its billing shows.
pub(crate) async fn billing_of(conn: &mut AnyConnection, account: Account) -> Result<Billing, StoreError> {
    let view = subscription_views(conn, [&account]).await?.remove(&account.user_id);
    Ok(billing(account, view))
}

/// The subscription each account's billing shows: the one that funds its plan, else
/// the user's newest; one query for all of them.
pub(crate) async fn subscription_views<'a>(
    conn: &mut AnyConnection,
    accounts: impl IntoIterator<Item = &'a Account>,
) -> Result<HashMap<String, SubscriptionView>, StoreError> {
    let funded_by: HashMap<&str, Option<&str>> =
        accounts.into_iter().map(|a| (a.user_id.as_str(), a.funded_by.as_deref())).collect();
    if funded_by.is_empty() {
        return Ok(HashMap::new());
    }
    type Row = (String, String, String, Option<String>, Option<i64>, i64, i64);
    let sql = format!(
        "select user_id, id, status, plan, current_period_end, cancel_at_period_end, updated_at
         from subscriptions where user_id in ({})",
        placeholders(1, funded_by.len())
    );
    let mut query = sqlx::query_as::<_, Row>(AssertSqlSafe(sql));
    for user in funded_by.keys() {
        query = query.bind(*user);
    }
    let mut best: HashMap<String, ((bool, i64, String), SubscriptionView)> = HashMap::new();
    for (user, id, status, plan, current_period_end, cancel, updated_at) in query.fetch_all(&mut *conn).await? {
        let funds = funded_by.get(user.as_str()).copied().flatten() == Some(id.as_str());
        let rank = (funds, updated_at, id.clone());
        let view = SubscriptionView { id, status, plan, current_period_end, cancel_at_period_end: cancel != 0 };
        if best.get(&user).is_none_or(|(r, _)| rank > *r) {
            best.insert(user, (rank, view));
        }
    }
    Ok(best.into_iter().map(|(user, (_, view))| (user, view)).collect())
}

/// The billing state of `account`, shown with `subscription`.
pub(crate) fn billing(account: Account, subscription: Option<SubscriptionView>) -> Billing {
    Billing {
        credits: account.credits(),
        user_id: account.user_id,
        tier: account.tier,
        plan_credits: account.plan_credits,
        topup_credits: account.topup_credits,
        reserved_credits: account.reserved,
        subscription,
    }
}

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
    match unit.reference_owner(&once.reference).await? {
        Some(owner) if owner == once.user_id => Ok(Ok(account)),
        Some(_) => Ok(Err(StoreError::Conflict("the key was used for another user".into()))),
        None => {
            let mut ledger = Ledger::new(account);
            match once.change.apply(unit, &mut ledger, &once.reference).await {
                Ok(()) => {}
                // The database failing is the batch's error; a refusal is this job's.
                Err(e @ (StoreError::Unavailable(_) | StoreError::Database(_))) => return Err(e),
                Err(refused) => return Ok(Err(refused)),
            }
            let account = ledger.account.clone();
            unit.post(ledger);
            unit.remember_reference(&once.reference, &once.user_id);
            Ok(Ok(account))
        }
    }
}
