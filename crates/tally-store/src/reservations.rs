//! Holds on credits: reserve before a metered call, commit the actual cost after it,
//! or release. A hold counts only until it expires, so nothing has to run to free it;
//! an expired hold is marked (with its ledger row) when it is next touched.

use sqlx::AnyConnection;
use tally_core::Ledger;

use crate::credits::billing_of;
use crate::model::{Reservation, ReservationState, Reserve};
use crate::rows;
use crate::unit::Unit;
use crate::{Store, StoreError, now};

type Row = (String, String, i64, Option<i64>, String, i64);

fn reservation((id, user_id, amount, committed, status, expires_at): Row, t: i64) -> Reservation {
    let status = if status == "held" && expires_at <= t { "expired".to_owned() } else { status };
    Reservation { reservation_id: id, user_id, amount, committed, status, expires_at }
}

/// How a held reservation ends.
enum Settle {
    Commit(i64),
    Release,
}

impl Store {
    /// Holds credits; the same key returns the same reservation.
    pub async fn reserve(&self, req: Reserve<'_>) -> Result<ReservationState, StoreError> {
        let t = now();
        let mut tx = self.pool.begin().await?;
        let mut unit = Unit::new(&mut tx, &self.catalogue);
        let mut account = unit.account(req.user_id).await?.account.clone();
        account.reserved = rows::reserved_credits(unit.conn(), req.user_id, None, t).await?;
        let existing: Option<Row> = sqlx::query_as(
            "select id, user_id, amount, committed, status, expires_at from reservations where idempotency_key = $1",
        )
        .bind(req.idempotency_key)
        .fetch_optional(unit.conn())
        .await?;
        let (found, account) = match existing {
            Some(row) if row.1 != req.user_id => {
                return Err(StoreError::Conflict("idempotency_key was used for another user".into()));
            }
            Some(row) => (reservation(row, t), account),
            None => {
                let id = format!("res_{}", hex::encode(rand::random::<[u8; 12]>()));
                let mut ledger = Ledger::new(account);
                ledger.reserve(req.amount, &format!("reserve:{id}"))?;
                let expires_at = t + req.ttl_seconds;
                sqlx::query(
                    "insert into reservations (id, user_id, idempotency_key, amount, status, expires_at, created_at, updated_at)
                     values ($1, $2, $3, $4, 'held', $5, $6, $6)",
                )
                .bind(&id)
                .bind(req.user_id)
                .bind(req.idempotency_key)
                .bind(req.amount)
                .bind(expires_at)
                .bind(t)
                .execute(unit.conn())
                .await?;
                let account = ledger.account.clone();
                unit.post(ledger);
                let held = Reservation {
                    reservation_id: id,
                    user_id: req.user_id.to_owned(),
                    amount: req.amount,
                    committed: None,
                    status: "held".into(),
                    expires_at,
                };
                (held, account)
            }
        };
        unit.flush().await?;
        let billing = billing_of(unit.conn(), account).await?;
        tx.commit().await?;
        Ok(ReservationState { reservation: found, billing })
    }

    /// Takes `amount` (at most what is held) and frees the rest.
    pub async fn commit_reservation(&self, id: &str, amount: i64) -> Result<ReservationState, StoreError> {
        self.settle(id, Settle::Commit(amount)).await
    }

    /// Frees the hold without spending.
    pub async fn release_reservation(&self, id: &str) -> Result<ReservationState, StoreError> {
        self.settle(id, Settle::Release).await
    }

    async fn settle(&self, id: &str, how: Settle) -> Result<ReservationState, StoreError> {
        let t = now();
        let mut tx = self.pool.begin().await?;
        let user_id: String = sqlx::query_scalar("select user_id from reservations where id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("reservation {id}")))?;
        // Lock the account first, then read the hold: a concurrent settle waits here.
        let mut unit = Unit::new(&mut tx, &self.catalogue);
        let mut account = unit.account(&user_id).await?.account.clone();
        account.reserved = rows::reserved_credits(unit.conn(), &user_id, Some(id), t).await?;
        let row: Row = fetch(unit.conn(), id).await?;
        let held = row.2;
        let current = reservation(row, t);
        let mut ledger = Ledger::new(account);
        let (status, committed) = match (current.status.as_str(), how) {
            ("held", Settle::Commit(amount)) if amount > held => {
                return Err(StoreError::Invalid(format!("amount: {amount} is more than the {held} held")));
            }
            ("held", Settle::Commit(amount)) => {
                ("committed", Some(ledger.commit(held, amount, &format!("commit:{id}"))))
            }
            ("held", Settle::Release) => {
                ledger.release(held, "release", &format!("release:{id}"));
                ("released", None)
            }
            ("expired", _) => {
                // Freed by time already; record it once, then answer that it is gone.
                mark(unit.conn(), id, "expired", None, t).await?;
                ledger.release(held, "expire", &format!("expire:{id}"));
                unit.post(ledger);
                unit.flush().await?;
                tx.commit().await?;
                return Err(StoreError::Settled("expired".into()));
            }
            (settled, _) => return Err(StoreError::Settled(settled.to_owned())),
        };
        mark(unit.conn(), id, status, committed, t).await?;
        let account = ledger.account.clone();
        unit.post(ledger);
        unit.flush().await?;
        let billing = billing_of(unit.conn(), account).await?;
        tx.commit().await?;
        Ok(ReservationState { reservation: Reservation { status: status.to_owned(), committed, ..current }, billing })
    }
}

async fn fetch(conn: &mut AnyConnection, id: &str) -> Result<Row, StoreError> {
    let sql = "select id, user_id, amount, committed, status, expires_at from reservations where id = $1";
    sqlx::query_as(sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("reservation {id}")))
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
