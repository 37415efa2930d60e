//! Reading one account's row and its holds, and subscription rows; locking and
//! writing them is [`crate::unit`]'s.

use sqlx::AnyConnection;
use tally_core::Account;
use tally_core::rules::SubscriptionState;

use crate::StoreError;

type Conn = AnyConnection;

/// `tier, plan_credits, topup_credits, funded_by, funded_at` of an accounts row.
pub type AccountRow = (String, i64, i64, Option<String>, i64);

/// The account a row describes; reserved credits are counted separately.
pub fn account(user_id: &str, (tier, plan_credits, topup_credits, funded_by, funded_at): AccountRow) -> Account {
    Account {
        user_id: user_id.to_owned(),
        // Kept as stored: a tier the catalogue no longer has is reported (audit, start-up),
        // never guessed.
        tier,
        plan_credits,
        topup_credits,
        funded_by,
        funded_at,
        reserved: 0,
    }
}

/// The columns of a subscriptions row, in this order.
pub const SUBSCRIPTION_COLUMNS: &str = "id, user_id, status, plan, price_id, current_period_start, current_period_end,
    cancel_at_period_end, state_at";

/// A subscriptions row, as [`SUBSCRIPTION_COLUMNS`] selects it.
pub type SubscriptionRow = (String, String, String, Option<String>, Option<String>, Option<i64>, Option<i64>, i64, i64);

pub fn subscription(row: SubscriptionRow) -> SubscriptionState {
    let (id, user_id, status, plan, price_id, current_period_start, current_period_end, cancel, state_at) = row;
    SubscriptionState {
        id,
        user_id,
        status,
        plan,
        price_id,
        current_period_start,
        current_period_end,
        cancel_at_period_end: cancel != 0,
        state_at,
    }
}

/// The credits held by the user's live reservations at time `t`.
pub async fn reserved_credits(conn: &mut Conn, user_id: &str, t: i64) -> Result<i64, StoreError> {
    let held: i64 = sqlx::query_scalar(
        "select cast(coalesce(sum(amount), 0) as bigint) from reservations
         where user_id = $1 and status = 'held' and expires_at > $2",
    )
    .bind(user_id)
    .bind(t)
    .fetch_one(&mut *conn)
    .await?;
    Ok(held)
}
