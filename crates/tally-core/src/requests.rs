//! The bodies of the credits API (`POST /api/credits/spend`, `/api/credits/reserve` and
//! `/api/credits/reservations/{id}/commit`) and their one check against the input
//! limits (CONTRACT §3). They live here, without IO, so that the routes and the fuzz
//! target run the same reading and the same checks.

use serde::Deserialize;

use crate::input::{Id, InvalidField, MAX_AMOUNT, Reason, check_amount, check_range};

/// How long a hold lasts when the caller does not say.
pub const DEFAULT_TTL_SECS: i64 = 300;

/// The longest a hold may last.
pub const MAX_TTL_SECS: i64 = 24 * 3600;

/// The reason a spend is recorded with when the caller gives none.
pub const DEFAULT_REASON: &str = "spend";

/// `POST /api/credits/spend`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendRequest {
    pub user_id: String,
    pub amount: i64,
    pub idempotency_key: String,
    pub reason: Option<String>,
}

/// A spend within the input limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSpend {
    pub user_id: Id,
    pub amount: i64,
    pub idempotency_key: Id,
    pub reason: Reason,
}

impl SpendRequest {
    /// The spend, or the first field outside its limits.
    pub fn validate(&self) -> Result<CheckedSpend, InvalidField> {
        let user_id = Id::parse("user_id", &self.user_id)?;
        let idempotency_key = Id::parse("idempotency_key", &self.idempotency_key)?;
        let reason = Reason::parse("reason", self.reason.as_deref().unwrap_or(DEFAULT_REASON))?;
        let amount = check_amount("amount", self.amount)?;
        Ok(CheckedSpend { user_id, amount, idempotency_key, reason })
    }
}

/// `POST /api/credits/reserve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    pub user_id: String,
    pub amount: i64,
    pub idempotency_key: String,
    pub ttl_seconds: Option<i64>,
}

/// A hold within the input limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedReserve {
    pub user_id: Id,
    pub amount: i64,
    pub idempotency_key: Id,
    pub ttl_seconds: i64,
}

impl ReserveRequest {
    /// The hold, or the first field outside its limits.
    pub fn validate(&self) -> Result<CheckedReserve, InvalidField> {
        let user_id = Id::parse("user_id", &self.user_id)?;
        let idempotency_key = Id::parse("idempotency_key", &self.idempotency_key)?;
        let amount = check_amount("amount", self.amount)?;
        let ttl_seconds = check_range("ttl_seconds", self.ttl_seconds.unwrap_or(DEFAULT_TTL_SECS), 1..=MAX_TTL_SECS)?;
        Ok(CheckedReserve { user_id, amount, idempotency_key, ttl_seconds })
    }
}

/// `POST /api/credits/reservations/{id}/commit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// The actual cost: at most what is held; the rest is freed.
    pub amount: i64,
}

impl CommitRequest {
    /// The cost to commit: 0 (nothing was used, the whole hold is freed) to [`MAX_AMOUNT`].
    pub fn validate(&self) -> Result<i64, InvalidField> {
        check_range("amount", self.amount, 0..=MAX_AMOUNT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend(json: &str) -> Result<CheckedSpend, InvalidField> {
        serde_json::from_str::<SpendRequest>(json).expect("a spend body").validate()
    }

    #[test]
    fn a_spend_reads_its_fields_and_defaults_its_reason() {
        let s = spend(r#"{"user_id":"alice","amount":5,"idempotency_key":"k1"}"#).unwrap();
        assert_eq!((s.user_id.as_str(), s.amount, s.idempotency_key.as_str()), ("alice", 5, "k1"));
        assert_eq!(s.reason.as_str(), DEFAULT_REASON);
        let s = spend(r#"{"user_id":"alice","amount":5,"idempotency_key":"k1","reason":"api call"}"#).unwrap();
        assert_eq!(s.reason.as_str(), "api call");
    }

    #[test]
    fn the_first_field_outside_its_limits_is_named() {
        let err = spend(r#"{"user_id":"","amount":0,"idempotency_key":""}"#).unwrap_err();
        assert_eq!(err.field, "user_id");
        let err = spend(r#"{"user_id":"a","amount":0,"idempotency_key":"k"}"#).unwrap_err();
        assert_eq!(err.to_string(), "amount: must be between 1 and 1000000000000, got 0");
        assert!(
            serde_json::from_str::<SpendRequest>(r#"{"user_id":"a","amount":1,"idempotency_key":"k","x":1}"#).is_err()
        );
    }

    #[test]
    fn a_hold_lasts_five_minutes_unless_told_and_a_day_at_most() {
        let reserve = |ttl: Option<i64>| {
            ReserveRequest { user_id: "a".into(), amount: 1, idempotency_key: "k".into(), ttl_seconds: ttl }.validate()
        };
        assert_eq!(reserve(None).unwrap().ttl_seconds, DEFAULT_TTL_SECS);
        assert_eq!(reserve(Some(MAX_TTL_SECS)).unwrap().ttl_seconds, MAX_TTL_SECS);
        let err = reserve(Some(0)).unwrap_err();
        assert_eq!(err.to_string(), "ttl_seconds: must be between 1 and 86400, got 0");
        assert!(reserve(Some(MAX_TTL_SECS + 1)).is_err());
    }

    #[test]
    fn a_commit_may_be_zero_but_not_negative_nor_huge() {
        assert_eq!(CommitRequest { amount: 0 }.validate(), Ok(0));
        assert_eq!(CommitRequest { amount: MAX_AMOUNT }.validate(), Ok(MAX_AMOUNT));
        for bad in [-1, MAX_AMOUNT + 1, i64::MIN, i64::MAX] {
            assert_eq!(CommitRequest { amount: bad }.validate().unwrap_err().field, "amount");
        }
    }
}
