//! What a billing answer shows: an account's balances and the subscription its billing
//! shows (the one that funds its plan, else the user's newest).

use std::collections::HashMap;

use sqlx::AnyConnection;
use tally_core::Account;

use crate::StoreError;
use crate::model::{Billing, SubscriptionView};
use crate::sql::fetch_in;

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
    let sql = "select user_id, id, status, plan, current_period_end, cancel_at_period_end, updated_at
               from subscriptions where user_id in ({keys})";
    let users: Vec<&str> = funded_by.keys().copied().collect();
    let rows: Vec<Row> = fetch_in(conn, sql, None, &users).await?;
    let mut best: HashMap<String, ((bool, i64, String), SubscriptionView)> = HashMap::new();
    for (user, id, status, plan, current_period_end, cancel, updated_at) in rows {
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
