//! Holds on credits as jobs of the writer's batch: reserve before a metered call,
//! commit the actual cost after it, or release. A hold counts only until it expires, so
//! nothing has to run to free it; an expired hold is marked (with its ledger row) when
//! it is next touched.
//!
//! The reservation rows are read and written inside the batch's transaction, after the
//! account is locked; the unit forgets the user's held total after each change, so the
//! jobs after it (a spend of the same user) count the new hold.

use sqlx::AnyConnection;
use tally_core::{Account, Ledger};

use crate::model::Reservation;
use crate::unit::Unit;
use crate::{StoreError, now, rows};

/// A hold job.
pub(crate) enum Hold {
    /// Holds `amount`; the same key returns the same reservation.
    Reserve { user_id: String, amount: i64, key: String, ttl_seconds: i64 },
    /// Ends a held reservation.
    Settle { id: String, how: Settle },
}

/// How a held reservation ends.
pub(crate) enum Settle {
    /// Takes this much (at most what is held) and frees the rest.
    Commit(i64),
    Release,
}

impl Hold {
    /// The spend reference of a reserve's key: a key used for a spend is not a hold's.
    pub fn spend_reference(&self) -> Option<String> {
        match self {
            Hold::Reserve { key, .. } => Some(spend_reference(key)),
            Hold::Settle { .. } => None,
        }
    }

    /// The user whose account the job locks, when known before it runs.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Hold::Reserve { user_id, .. } => Some(user_id),
            Hold::Settle { .. } => None,
        }
    }
}

type Row = (String, String, i64, Option<i64>, String, i64);

/// The ledger reference of the hold made with idempotency key `key`.
pub(crate) fn hold_reference(key: &str) -> String {
    format!("hold:{key}")
}

/// The ledger reference of the spend made with idempotency key `key`.
pub(crate) fn spend_reference(key: &str) -> String {
    format!("spend:{key}")
}

fn reservation((id, user_id, amount, committed, status, expires_at): Row, t: i64) -> Reservation {
    let status = if status == "held" && expires_at <= t { "expired".to_owned() } else { status };
    Reservation { reservation_id: id, user_id, amount, committed, status, expires_at }
}

/// Applies a hold job: the reservation and the account after it, or this job's refusal
/// (the inner error); the outer error is the batch's.
pub(crate) async fn apply_hold(
    unit: &mut Unit<'_>,
    hold: &Hold,
) -> Result<Result<(Reservation, Account), StoreError>, StoreError> {
    match hold {
        Hold::Reserve { user_id, amount, key, ttl_seconds } => reserve(unit, user_id, *amount, key, *ttl_seconds).await,
        Hold::Settle { id, how } => settle(unit, id, how).await,
    }
}

async fn reserve(
    unit: &mut Unit<'_>,
    user_id: &str,
    amount: i64,
    key: &str,
    ttl_seconds: i64,
) -> Result<Result<(Reservation, Account), StoreError>, StoreError> {
    let t = now();
    let mut account = unit.account(user_id).await?.account.clone();
    account.reserved = unit.reserved(user_id).await?;
    let existing: Option<Row> = sqlx::query_as(
        "select id, user_id, amount, committed, status, expires_at from reservations where idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(unit.conn())
    .await?;
    match existing {
        Some(row) if row.1 != user_id => Ok(Err(StoreError::KeyReused("another user"))),
        Some(row) if row.2 != amount => Ok(Err(StoreError::KeyReused("another amount"))),
        Some(row) => Ok(Ok((reservation(row, t), account))),
        None if unit.reference(&spend_reference(key)).await?.is_some() => Ok(Err(StoreError::KeyReused("a spend"))),
        None => {
            let id = format!("res_{}", hex::encode(rand::random::<[u8; 12]>()));
            let mut ledger = Ledger::new(account);
            // The hold's ledger row is named by its key, so that a spend with the same key
            // finds it among the references it reads anyway (see credits.rs).
            if let Err(refused) = ledger.reserve(amount, &hold_reference(key)) {
                return Ok(Err(refused.into()));
            }
            let expires_at = t.saturating_add(ttl_seconds);
            sqlx::query(
                "insert into reservations (id, user_id, idempotency_key, amount, status, expires_at, created_at, updated_at)
                 values ($1, $2, $3, $4, 'held', $5, $6, $6)",
            )
            .bind(&id)
            .bind(user_id)
            .bind(key)
            .bind(amount)
            .bind(expires_at)
            .bind(t)
            .execute(unit.conn())
            .await?;
            let account = ledger.account.clone();
            unit.post(ledger);
            unit.forget_reserved(user_id);
            let held = Reservation {
                reservation_id: id,
                user_id: user_id.to_owned(),
                amount,
                committed: None,
                status: "held".into(),
                expires_at,
            };
            Ok(Ok((held, account)))
        }
    }
}

async fn settle(
    unit: &mut Unit<'_>,
    id: &str,
    how: &Settle,
) -> Result<Result<(Reservation, Account), StoreError>, StoreError> {
    let t = now();
    let user_id: Option<String> = sqlx::query_scalar("select user_id from reservations where id = $1")
        .bind(id)
        .fetch_optional(unit.conn())
        .await?;
    let Some(user_id) = user_id else {
        return Ok(Err(StoreError::NotFound(format!("reservation {id}"))));
    };
    // Lock the account first, then read the hold: a concurrent settle waits here.
    let mut account = unit.account(&user_id).await?.account.clone();
    account.reserved = rows::reserved_credits(unit.conn(), &user_id, Some(id), t).await?;
    let row: Row =
        sqlx::query_as("select id, user_id, amount, committed, status, expires_at from reservations where id = $1")
            .bind(id)
            .fetch_one(unit.conn())
            .await?;
    let held = row.2;
    let current = reservation(row, t);
    let mut ledger = Ledger::new(account);
    let (status, committed) = match (current.status.as_str(), how) {
        ("held", Settle::Commit(amount)) if *amount > held => {
            return Ok(Err(StoreError::Invalid(format!("amount: {amount} is more than the {held} held"))));
        }
        ("held", Settle::Commit(amount)) => ("committed", Some(ledger.commit(held, *amount, &format!("commit:{id}")))),
        ("held", Settle::Release) => {
            ledger.release(held, "release", &format!("release:{id}"));
            ("released", None)
        }
        ("expired", _) => {
            // Freed by time already; recorded once (the batch commits it), then answered as gone.
            mark(unit.conn(), id, "expired", None, t).await?;
            ledger.release(held, "expire", &format!("expire:{id}"));
            unit.post(ledger);
            unit.forget_reserved(&user_id);
            return Ok(Err(StoreError::Settled("expired".into())));
        }
        (settled, _) => return Ok(Err(StoreError::Settled(settled.to_owned()))),
    };
    mark(unit.conn(), id, status, committed, t).await?;
    let account = ledger.account.clone();
    unit.post(ledger);
    unit.forget_reserved(&user_id);
    Ok(Ok((Reservation { status: status.to_owned(), committed, ..current }, account)))
}

async fn mark(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
    committed: Option<i64>,
    t: i64,
) -> Result<(), StoreError> {
    sqlx::query("update reservations set status = $2, committed = $3, updated_at = $4 where id = $1")
        .bind(id)
        .bind(status)
        .bind(committed)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
