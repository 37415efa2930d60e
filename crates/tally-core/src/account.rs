//! A user's two credit buckets and the ledger entries that move them.
//!
//! Every change to a bucket goes through [`Ledger`], which records an [`Entry`] with
//! the balance after it, so the ledger always sums to the balances.

use serde::{Deserialize, Serialize};

use crate::catalogue::{Catalogue, FREE};
use crate::error::CoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    /// The current period's allowance; reset each period, never rolls over.
    Plan,
    /// Bought credits; they never expire.
    Topup,
}

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Plan => "plan",
            Bucket::Topup => "topup",
        }
    }

    pub fn parse(s: &str) -> Option<Bucket> {
        match s {
            "plan" => Some(Bucket::Plan),
            "topup" => Some(Bucket::Topup),
            _ => None,
        }
    }
}

/// A user's balance and tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user_id: String,
    /// `free` or a plan id of the catalogue.
    pub tier: String,
    pub plan_credits: i64,
    pub topup_credits: i64,
    /// The subscription whose period filled the plan bucket; its deletion ends the tier.
    pub funded_by: Option<String>,
    /// `created` of the newest payment that funded the plan bucket.
    pub funded_at: i64,
    /// Credits held by live reservations: part of the buckets, but not free to spend.
    pub reserved: i64,
}

impl Account {
    /// A new user: free tier, the free allowance in the plan bucket.
    pub fn new_user(user_id: &str, catalogue: &Catalogue) -> Account {
        Account {
            user_id: user_id.to_owned(),
            tier: FREE.into(),
            plan_credits: catalogue.free.credits,
            topup_credits: 0,
            funded_by: None,
            funded_at: 0,
            reserved: 0,
        }
    }

    /// The ledger entry that opens a new user's account, so the ledger sums to its balance.
    pub fn opening_entry(&self) -> Entry {
        Entry {
            bucket: Bucket::Plan,
            delta: self.plan_credits,
            balance_after: self.plan_credits,
            reason: "signup".into(),
            reference: format!("signup:{}", self.user_id),
        }
    }

    pub fn credits(&self) -> i64 {
        self.plan_credits + self.topup_credits
    }

    /// What can be spent or held now: the balance less what reservations hold.
    pub fn available(&self) -> i64 {
        (self.credits() - self.reserved).max(0)
    }

    fn bucket_mut(&mut self, bucket: Bucket) -> &mut i64 {
        match bucket {
            Bucket::Plan => &mut self.plan_credits,
            Bucket::Topup => &mut self.topup_credits,
        }
    }
}

/// One append-only ledger row, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub bucket: Bucket,
    pub delta: i64,
    pub balance_after: i64,
    pub reason: String,
    /// Unique per effect (with the bucket): the invoice, session, period or spend key.
    pub reference: String,
}

/// An account being changed, with the entries that explain each change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    pub account: Account,
    pub entries: Vec<Entry>,
}

impl Ledger {
    pub fn new(account: Account) -> Ledger {
        Ledger { account, entries: Vec::new() }
    }

    /// Moves a bucket by `delta` and records why.
    pub fn post(&mut self, bucket: Bucket, delta: i64, reason: &str, reference: String) {
        let balance = self.account.bucket_mut(bucket);
        *balance += delta;
        let balance_after = *balance;
        self.entries.push(Entry { bucket, delta, balance_after, reason: reason.into(), reference });
    }

    /// Sets the plan bucket to `target` (a new period's allowance), recording the difference.
    pub fn reset_plan(&mut self, target: i64, reason: &str, reference: String) {
        let delta = target - self.account.plan_credits;
        self.post(Bucket::Plan, delta, reason, reference);
    }

    /// Takes `amount` of the credits not held, from the plan bucket first, then from
    /// top-ups; all or nothing.
    pub fn spend(&mut self, amount: i64, reason: &str, reference: &str) -> Result<(), CoreError> {
        if amount <= 0 {
            return Err(CoreError::InvalidAmount(amount));
        }
        let available = self.account.available();
        if amount > available {
            return Err(CoreError::InsufficientCredits { needed: amount, available });
        }
        self.take(amount, reason, reference);
        Ok(())
    }

    /// An operator's correction of one bucket; it never takes the bucket below zero.
    pub fn adjust(&mut self, bucket: Bucket, delta: i64, reason: &str, reference: String) -> Result<(), CoreError> {
        if delta == 0 {
            return Err(CoreError::InvalidAmount(0));
        }
        let balance = *self.account.bucket_mut(bucket);
        if balance + delta < 0 {
            return Err(CoreError::InsufficientCredits { needed: -delta, available: balance });
        }
        self.post(bucket, delta, reason, reference);
        Ok(())
    }

    /// Holds `amount` of the credits not held yet; the buckets do not move until commit.
    pub fn reserve(&mut self, amount: i64, reference: &str) -> Result<(), CoreError> {
        if amount <= 0 {
            return Err(CoreError::InvalidAmount(amount));
        }
        let available = self.account.available();
        if amount > available {
            return Err(CoreError::InsufficientCredits { needed: amount, available });
        }
        self.account.reserved += amount;
        self.note(Bucket::Plan, "reserve", reference);
        Ok(())
    }

    /// Settles a hold of `held` credits at `amount`: takes it plan-first and frees the
    /// rest. A period reset while the hold was open may have left less than was held;
    /// the balance never goes below zero, so the amount taken is returned.
    pub fn commit(&mut self, held: i64, amount: i64, reference: &str) -> i64 {
        self.account.reserved = (self.account.reserved - held).max(0);
        let taken = amount.clamp(0, self.account.available());
        if taken > 0 {
            self.take(taken, "commit", reference);
        } else {
            self.note(Bucket::Plan, "commit", reference);
        }
        taken
    }

    /// Frees a hold without spending.
    pub fn release(&mut self, held: i64, reason: &str, reference: &str) {
        self.account.reserved = (self.account.reserved - held).max(0);
        self.note(Bucket::Plan, reason, reference);
    }

    /// A row that moves nothing, so that every step of a reservation is in the ledger.
    fn note(&mut self, bucket: Bucket, reason: &str, reference: &str) {
        self.post(bucket, 0, reason, reference.to_owned());
    }

    fn take(&mut self, amount: i64, reason: &str, reference: &str) {
        let from_plan = amount.min(self.account.plan_credits);
        let from_topup = amount - from_plan;
        if from_plan > 0 {
            self.post(Bucket::Plan, -from_plan, reason, reference.to_owned());
        }
        if from_topup > 0 {
            self.post(Bucket::Topup, -from_topup, reason, reference.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(plan: i64, topup: i64) -> Ledger {
        let mut account = Account::new_user("u", &Catalogue::default());
        account.plan_credits = plan;
        account.topup_credits = topup;
        Ledger::new(account)
    }

    #[test]
    fn spending_takes_plan_bucket_first_then_topup() {
        let mut l = ledger(30, 50);
        l.spend(40, "chat", "k1").unwrap();
        assert_eq!((l.account.plan_credits, l.account.topup_credits), (0, 40));
        assert_eq!(l.entries.len(), 2);
        assert_eq!((l.entries[0].bucket, l.entries[0].delta), (Bucket::Plan, -30));
        assert_eq!((l.entries[1].bucket, l.entries[1].delta, l.entries[1].balance_after), (Bucket::Topup, -10, 40));
    }

    #[test]
    fn spending_more_than_the_balance_changes_nothing() {
        let mut l = ledger(5, 5);
        let err = l.spend(11, "chat", "k").unwrap_err();
        assert_eq!(err, CoreError::InsufficientCredits { needed: 11, available: 10 });
        assert!(l.entries.is_empty());
        assert_eq!(l.account.credits(), 10);
    }

    #[test]
    fn spending_nothing_or_less_is_refused() {
        assert_eq!(ledger(5, 0).spend(0, "r", "k"), Err(CoreError::InvalidAmount(0)));
        assert_eq!(ledger(5, 0).spend(-3, "r", "k"), Err(CoreError::InvalidAmount(-3)));
    }

    #[test]
    fn held_credits_cannot_be_spent_or_held_twice() {
        let mut l = ledger(10, 0);
        l.reserve(8, "r1").unwrap();
        assert_eq!(l.spend(3, "chat", "k"), Err(CoreError::InsufficientCredits { needed: 3, available: 2 }));
        assert_eq!(l.reserve(3, "r2"), Err(CoreError::InsufficientCredits { needed: 3, available: 2 }));
        assert_eq!(l.account.credits(), 10, "a hold moves no bucket");
    }

    #[test]
    fn commit_takes_the_actual_amount_and_frees_the_rest() {
        let mut l = ledger(10, 5);
        l.reserve(12, "r1").unwrap();
        assert_eq!(l.commit(12, 11, "r1"), 11);
        assert_eq!((l.account.plan_credits, l.account.topup_credits, l.account.reserved), (0, 4, 0));
    }

    #[test]
    fn commit_never_takes_a_balance_below_zero() {
        let mut l = ledger(50, 0);
        l.reserve(40, "r1").unwrap();
        l.reset_plan(10, "subscription_ended", "e".into());
        assert_eq!(l.commit(40, 40, "r1"), 10);
        assert_eq!(l.account.credits(), 0);
    }

    #[test]
    fn reset_records_the_difference() {
        let mut l = ledger(120, 0);
        l.reset_plan(2_500, "grant", "p".into());
        assert_eq!(l.entries[0].delta, 2_380);
        assert_eq!(l.account.plan_credits, 2_500);
    }
}
