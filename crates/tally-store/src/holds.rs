//! Holds on credits as jobs of the writer's batch: reserve before a metered call,
//! commit the actual cost after it, or release. A hold counts only until it expires, so
//! nothing has to run to free it; an expired hold is marked (with its ledger row) when
//! it is next touched.
//!
//! Like every other job, a hold reads through the unit (its reservation rows, found in
//! one query for the whole batch after the accounts are locked) and changes them in
//! memory; the unit writes them back in one statement. The held total the account
//! carries is the unit's too, and a hold job leaves it as the ledger says (the total
//! with this hold, or without it), so the jobs after it count the change.

use tally_core::{Account, Ledger};

use crate::StoreError;
use crate::model::Reservation;
use crate::unit::Unit;

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

    /// The reservation the job reads: by idempotency key (a reserve) or by id (a settle).
    pub fn reads(&self) -> HoldKey<'_> {
        match self {
            Hold::Reserve { key, .. } => HoldKey::Key(key),
            Hold::Settle { id, .. } => HoldKey::Id(id),
        }
    }
}

/// How a job names the reservation it reads.
#[derive(Clone, Copy)]
pub(crate) enum HoldKey<'a> {
    Key(&'a str),
    Id(&'a str),
}

impl<'a> HoldKey<'a> {
    /// The reservation id, when the job names one (a settle).
    pub fn id(self) -> Option<&'a str> {
        if let HoldKey::Id(id) = self { Some(id) } else { None }
    }

    /// The idempotency key, when the job names one (a reserve).
    pub fn key(self) -> Option<&'a str> {
        if let HoldKey::Key(key) = self { Some(key) } else { None }
    }
}

/// A reservations row.
#[derive(Debug, Clone)]
pub(crate) struct HoldRow {
    pub id: String,
    pub user_id: String,
    pub key: String,
    pub amount: i64,
    pub committed: Option<i64>,
    pub status: String,
    pub expires_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The columns of a reservations row, in [`HoldRow`]'s order.
pub(crate) const HOLD_COLUMNS: &str =
    "id, user_id, idempotency_key, amount, committed, status, expires_at, created_at, updated_at";

pub(crate) type HoldColumns = (String, String, String, i64, Option<i64>, String, i64, i64, i64);

impl From<HoldColumns> for HoldRow {
    fn from((id, user_id, key, amount, committed, status, expires_at, created_at, updated_at): HoldColumns) -> Self {
        HoldRow { id, user_id, key, amount, committed, status, expires_at, created_at, updated_at }
    }
}

impl HoldRow {
    /// Still counted at time `t`.
    fn live(&self, t: i64) -> bool {
        self.status == "held" && self.expires_at > t
    }

    /// The reservation as the API shows it at time `t` (a held one past its expiry is
    /// expired).
    fn shown(&self, t: i64) -> Reservation {
        let status = if self.status == "held" && !self.live(t) { "expired" } else { &self.status };
        Reservation {
            reservation_id: self.id.clone(),
            user_id: self.user_id.clone(),
            amount: self.amount,
            committed: self.committed,
            status: status.to_owned(),
            expires_at: self.expires_at,
        }
    }
}

/// The ledger reference of the hold made with idempotency key `key`.
pub(crate) fn hold_reference(key: &str) -> String {
    format!("hold:{key}")
}

/// The ledger reference of the spend made with idempotency key `key`.
pub(crate) fn spend_reference(key: &str) -> String {
    format!("spend:{key}")
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
    let mut account = unit.account(user_id).await?.account.clone();
    let (held, t) = unit.reserved_as_of(user_id).await?;
    account.reserved = held;
    match unit.reservation(HoldKey::Key(key)).await? {
        Some(row) if row.user_id != user_id => Ok(Err(StoreError::KeyReused("another user"))),
        Some(row) if row.amount != amount => Ok(Err(StoreError::KeyReused("another amount"))),
        Some(row) => Ok(Ok((row.shown(t), account))),
        None if unit.reference(&spend_reference(key)).await?.is_some() => Ok(Err(StoreError::KeyReused("a spend"))),
        None => {
            let mut ledger = Ledger::new(account);
            // The hold's ledger row is named by its key, so that a spend with the same key
            // finds it among the references it reads anyway (see credits.rs).
            if let Err(refused) = ledger.reserve(amount, &hold_reference(key)) {
                return Ok(Err(refused.into()));
            }
            let row = HoldRow {
                id: format!("res_{}", hex::encode(rand::random::<[u8; 12]>())),
                user_id: user_id.to_owned(),
                key: key.to_owned(),
                amount,
                committed: None,
                status: "held".into(),
                expires_at: t.saturating_add(ttl_seconds),
                created_at: t,
                updated_at: t,
            };
            let shown = row.shown(t);
            unit.put_reservation(row);
            Ok(Ok((shown, post(unit, ledger))))
        }
    }
}

async fn settle(
    unit: &mut Unit<'_>,
    id: &str,
    how: &Settle,
) -> Result<Result<(Reservation, Account), StoreError>, StoreError> {
    let Some(user_id) = unit.reservation_owner(id).await? else {
        return Ok(Err(StoreError::NotFound(format!("reservation {id}"))));
    };
    // Lock the account first, then read the hold: a concurrent settle waits here.
    let mut account = unit.account(&user_id).await?.account.clone();
    let (held_total, t) = unit.reserved_as_of(&user_id).await?;
    account.reserved = held_total;
    let Some(mut row) = unit.reservation(HoldKey::Id(id)).await? else {
        return Ok(Err(StoreError::NotFound(format!("reservation {id}"))));
    };
    let mut ledger = Ledger::new(account);
    match (row.live(t), row.status.as_str(), how) {
        (true, _, Settle::Commit(amount)) if *amount > row.amount => {
            return Ok(Err(StoreError::Invalid(format!("amount: {amount} is more than the {} held", row.amount))));
        }
        (true, _, Settle::Commit(amount)) => {
            row.committed = Some(ledger.commit(row.amount, *amount, &format!("commit:{id}")));
            row.status = "committed".into();
        }
        (true, _, Settle::Release) => {
            ledger.release(row.amount, "release", &format!("release:{id}"));
            row.status = "released".into();
        }
        (false, "held", _) => {
            // Freed by time already (the total does not count it): recorded once (the
            // batch commits it), then answered as gone.
            ledger.release(0, "expire", &format!("expire:{id}"));
            row.status = "expired".into();
            row.updated_at = t;
            unit.put_reservation(row);
            post(unit, ledger);
            return Ok(Err(StoreError::Settled("expired".into())));
        }
        (false, settled, _) => return Ok(Err(StoreError::Settled(settled.to_owned()))),
    }
    row.updated_at = t;
    let shown = row.shown(t);
    unit.put_reservation(row);
    Ok(Ok((shown, post(unit, ledger))))
}

/// Takes the ledger's rows and the held total it leaves; the account after them.
fn post(unit: &mut Unit<'_>, ledger: Ledger) -> Account {
    let account = ledger.account.clone();
    unit.set_reserved(&account.user_id, account.reserved);
    unit.post(ledger);
    account
}
