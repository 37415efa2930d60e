//! What a unit of work writes back, table by table: one multi-row insert (or upsert)
//! each, added to the batch's [`Writes`] so that they are sent together.

use tally_core::Entry;
use tally_core::rules::{Period, SubscriptionState, Topup};

use crate::holds::{HOLD_COLUMNS, HoldRow};
use crate::sql::Writes;
use crate::unit::{Held, NewEventRow};

pub fn accounts<'q>(writes: &mut Writes<'q>, rows: Vec<&'q Held>, t: i64) {
    let sql = "insert into accounts (user_id, tier, plan_credits, topup_credits, funded_by, funded_at,
                   stripe_customer_id, created_at, updated_at)
               values {rows} on conflict (user_id) do update set tier = excluded.tier,
                   plan_credits = excluded.plan_credits, topup_credits = excluded.topup_credits,
                   funded_by = excluded.funded_by, funded_at = excluded.funded_at,
                   stripe_customer_id = excluded.stripe_customer_id, updated_at = excluded.updated_at";
    writes.add(sql, 9, rows, move |q, h| {
        let a = &h.account;
        q.bind(&a.user_id)
            .bind(a.tier.as_str())
            .bind(a.plan_credits)
            .bind(a.topup_credits)
            .bind(a.funded_by.as_deref())
            .bind(a.funded_at)
            .bind(h.customer.as_deref())
            .bind(t)
            .bind(t)
    });
}

pub fn entries<'q>(writes: &mut Writes<'q>, rows: &'q [(String, Entry)], t: i64) {
    let sql = "insert into ledger (user_id, bucket, delta, balance_after, reason, reference, created_at)
               values {rows}";
    writes.add(sql, 7, rows.iter().collect(), move |q, (user, e)| {
        q.bind(user)
            .bind(e.bucket.as_str())
            .bind(e.delta)
            .bind(e.balance_after)
            .bind(&e.reason)
            .bind(&e.reference)
            .bind(t)
    });
}

pub fn subscriptions<'q>(writes: &mut Writes<'q>, rows: Vec<&'q SubscriptionState>, t: i64) {
    let sql = "insert into subscriptions (id, user_id, status, plan, price_id, current_period_start,
                   current_period_end, cancel_at_period_end, state_at, updated_at)
               values {rows} on conflict (id) do update set status = excluded.status, plan = excluded.plan,
                   price_id = excluded.price_id,
                   current_period_start = excluded.current_period_start,
                   current_period_end = excluded.current_period_end,
                   cancel_at_period_end = excluded.cancel_at_period_end,
                   state_at = excluded.state_at, updated_at = excluded.updated_at";
    writes.add(sql, 10, rows, move |q, s| {
        q.bind(&s.id)
            .bind(&s.user_id)
            .bind(&s.status)
            .bind(s.plan.as_deref())
            .bind(s.price_id.as_deref())
            .bind(s.current_period_start)
            .bind(s.current_period_end)
            .bind(i64::from(s.cancel_at_period_end))
            .bind(s.state_at)
            .bind(t)
    });
}

pub fn periods<'q>(writes: &mut Writes<'q>, rows: Vec<&'q Period>) {
    let sql = "insert into periods (subscription_id, start, seen, granted) values {rows}
               on conflict (subscription_id, start) do update set seen = excluded.seen, granted = excluded.granted";
    writes.add(sql, 4, rows, |q, p| {
        q.bind(&p.subscription_id).bind(p.start).bind(p.seen.as_deref()).bind(p.granted.as_deref())
    });
}

pub fn topups<'q>(writes: &mut Writes<'q>, rows: Vec<&'q Topup>) {
    let sql = "insert into topups (session_id, user_id, payment_intent, credits, refunded_credits) values {rows}
               on conflict (session_id) do update set refunded_credits = excluded.refunded_credits";
    writes.add(sql, 5, rows, |q, t| {
        q.bind(&t.session_id)
            .bind(&t.user_id)
            .bind(t.payment_intent.as_deref())
            .bind(t.credits)
            .bind(t.refunded_credits)
    });
}

pub fn reservations<'q>(writes: &mut Writes<'q>, rows: Vec<&'q HoldRow>) {
    let sql = format!(
        "insert into reservations ({HOLD_COLUMNS}) values {{rows}}
         on conflict (id) do update set committed = excluded.committed, status = excluded.status,
             updated_at = excluded.updated_at"
    );
    writes.add(&sql, 9, rows, |q, r| {
        q.bind(&r.id)
            .bind(&r.user_id)
            .bind(&r.key)
            .bind(r.amount)
            .bind(r.committed)
            .bind(&r.status)
            .bind(r.expires_at)
            .bind(r.created_at)
            .bind(r.updated_at)
    });
}

/// The batch's new events with their outcomes; the rows stored are counted, so that an
/// id stored meanwhile by another process is noticed.
pub fn events<'q>(writes: &mut Writes<'q>, rows: &'q [NewEventRow], t: i64) {
    let sql = "insert into events (id, type, created, livemode, payload, outcome, note, user_id, received_at,
                   attempts, waits_customer, waits_intent)
               values {rows} on conflict (id) do nothing";
    let size = |e: &&NewEventRow| e.payload.len();
    writes.add_counted(sql, 12, rows.iter().collect(), size, move |q, e| {
        q.bind(&e.id)
            .bind(&e.event_type)
            .bind(e.created)
            .bind(i64::from(e.livemode))
            .bind(&e.payload)
            .bind(e.outcome.outcome.as_str())
            .bind(e.outcome.note.as_deref())
            .bind(e.outcome.user_id.as_deref())
            .bind(t)
            .bind(e.attempts)
            .bind(e.waits.customer.as_deref())
            .bind(e.waits.payment_intent.as_deref())
    });
}

/// `(event, owner, named)`: events applied to their customer's owner although their
/// metadata names someone else.
pub fn conflicts<'q>(writes: &mut Writes<'q>, rows: &'q [(String, String, String)], t: i64) {
    let sql = "insert into ownership_conflicts (event_id, owner, named, recorded_at) values {rows}
               on conflict (event_id) do nothing";
    writes.add(sql, 4, rows.iter().collect(), move |q, (event, owner, named)| {
        q.bind(event).bind(owner).bind(named).bind(t)
    });
}
