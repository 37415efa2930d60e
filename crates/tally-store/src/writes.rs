//! Every write goes through the writer, as one job of a batch (see [`crate::writer`]):
//! webhook events, spends and grants, and holds. This is the one write path.

use crate::credits::{Change, Once};
use crate::holds::{Hold, Settle};
use crate::ingest::Delivery;
use crate::model::{Billing, Grant, IngestOutcome, NewEvent, ReservationState, Reserve, Spend};
use crate::writer::{Done, Work};
use crate::{Store, StoreError};

impl Store {
    /// Records the user's Stripe customer unless one is recorded already; returns the
    /// one kept, so that concurrent first checkouts agree on one customer.
    pub async fn link_stripe_customer(&self, user_id: &str, customer: &str) -> Result<String, StoreError> {
        let work = Work::Link { user_id: user_id.to_owned(), customer: customer.to_owned() };
        match self.writer.submit(work).await? {
            Done::Linked(kept) => Ok(kept),
            _ => unreachable!("a link is answered with the customer kept"),
        }
    }

    /// Spends credits, plan bucket first. The same key spends once: a repeat answers
    /// with the current state and changes nothing.
    pub async fn spend(&self, spend: Spend<'_>) -> Result<Billing, StoreError> {
        let change = Change::Spend { amount: spend.amount, reason: spend.reason.to_owned() };
        self.once(spend.user_id, crate::holds::spend_reference(spend.idempotency_key), change).await
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
            _ => unreachable!("a spend is answered with the account"),
        }
    }

    /// Records `event` and applies it. A delivery of an event already applied is a
    /// duplicate; one that was unmatched or unreadable before is applied again.
    pub async fn ingest(&self, event: NewEvent<'_>) -> Result<IngestOutcome, StoreError> {
        let delivery = Delivery {
            id: event.id.to_owned(),
            event_type: event.event_type.to_owned(),
            created: event.created,
            livemode: event.livemode,
            payload: event.payload.to_owned(),
            event: event.event.cloned().map_err(str::to_owned),
        };
        match self.writer.submit(Work::Ingest(Box::new(delivery))).await? {
            Done::Ingested(outcome) => Ok(outcome),
            _ => unreachable!("an event is answered with its outcome"),
        }
    }

    /// Holds credits; the same key returns the same reservation.
    pub async fn reserve(&self, req: Reserve<'_>) -> Result<ReservationState, StoreError> {
        self.hold(Hold::Reserve {
            user_id: req.user_id.to_owned(),
            amount: req.amount,
            key: req.idempotency_key.to_owned(),
            ttl_seconds: req.ttl_seconds,
        })
        .await
    }

    /// Takes `amount` (at most what is held) and frees the rest.
    pub async fn commit_reservation(&self, id: &str, amount: i64) -> Result<ReservationState, StoreError> {
        self.hold(Hold::Settle { id: id.to_owned(), how: Settle::Commit(amount) }).await
    }

    /// Frees the hold without spending.
    pub async fn release_reservation(&self, id: &str) -> Result<ReservationState, StoreError> {
        self.hold(Hold::Settle { id: id.to_owned(), how: Settle::Release }).await
    }

    async fn hold(&self, hold: Hold) -> Result<ReservationState, StoreError> {
        match self.writer.submit(Work::Hold(hold)).await? {
            Done::Held(state) => Ok(state),
            _ => unreachable!("a hold is answered with the reservation"),
        }
    }
}
