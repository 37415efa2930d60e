//! The limits on what comes from outside (CONTRACT §3, "Input limits"), checked at the
//! edge so that nothing the database would refuse, or that would grow without bound,
//! gets past a route: ids and keys are 1 to 255 bytes of printable UTF-8, a reason at
//! most 500 characters without NUL, an amount positive and at most 10^12.

use std::ops::RangeInclusive;

use crate::event::{BillingEvent, EventKind};

/// The most bytes of a user id, an idempotency key or a Stripe id.
pub const MAX_ID_BYTES: usize = 255;

/// The most characters of a spend's reason.
pub const MAX_REASON_CHARS: usize = 500;

/// The largest amount of credits one request may move.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// The latest time an event may carry: 9999-12-31T23:59:59Z. Stripe's times are unix
/// seconds of this era; ones near the ends of i64 overflow the database's arithmetic.
pub const MAX_TIME: i64 = 253_402_300_799;

/// A value outside its limits, with the field it came in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidField {
    pub field: String,
    pub problem: String,
}

fn invalid(field: &str, problem: impl Into<String>) -> InvalidField {
    InvalidField { field: field.to_owned(), problem: problem.into() }
}

/// A user id, an idempotency key or a Stripe id that is within the limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Id(String);

impl Id {
    /// `value` as an id, or why not, naming `field`.
    pub fn parse(field: &str, value: &str) -> Result<Id, InvalidField> {
        check_id(field, value).map(|v| Id(v.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A spend's reason that is within the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    pub fn parse(field: &str, value: &str) -> Result<Reason, InvalidField> {
        if value.chars().count() > MAX_REASON_CHARS {
            return Err(invalid(field, format!("at most {MAX_REASON_CHARS} characters")));
        }
        if value.contains('\0') {
            return Err(invalid(field, "no NUL characters"));
        }
        Ok(Reason(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks an id without copying it.
pub fn check_id<'a>(field: &str, value: &'a str) -> Result<&'a str, InvalidField> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(invalid(field, format!("at most {MAX_ID_BYTES} bytes, got {}", value.len())));
    }
    if value.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Err(invalid(field, "printable characters only (no control or bidirectional formatting characters)"));
    }
    Ok(value)
}

/// The bidirectional formatting characters: invisible, they make an id read as another
/// (`\u{202e}nimda` shows as `admin`) in logs, ledger exports and admin screens.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Checks an amount of credits: 1 to [`MAX_AMOUNT`].
pub fn check_amount(field: &str, value: i64) -> Result<i64, InvalidField> {
    check_range(field, value, 1..=MAX_AMOUNT)
}

/// Checks that a number is within `range`, naming the field when it is not.
pub fn check_range(field: &str, value: i64, range: RangeInclusive<i64>) -> Result<i64, InvalidField> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(invalid(field, format!("must be between {} and {}, got {value}", range.start(), range.end())))
    }
}

impl BillingEvent {
    /// Checks every id the event carries, naming the first that is outside the limits.
    pub fn check_ids(&self) -> Result<(), InvalidField> {
        check_id("id", &self.id)?;
        let mut ids: Vec<(&str, &str)> = Vec::new();
        if let Some(owner) = self.kind.owner() {
            ids.extend(owner.user_id.as_deref().map(|u| ("data.object.metadata.user_id", u)));
            ids.extend(owner.customer.as_deref().map(|c| ("data.object.customer", c)));
        }
        ids.extend(self.kind.subscription_id().map(|s| ("data.object.subscription", s)));
        match &self.kind {
            EventKind::Checkout(s) => {
                ids.push(("data.object.id", &s.id));
                ids.extend(s.item.as_deref().map(|i| ("data.object.metadata.item", i)));
                ids.extend(s.payment_intent.as_deref().map(|p| ("data.object.payment_intent", p)));
            }
            EventKind::InvoicePaid(i) | EventKind::InvoicePaymentFailed(i) => {
                ids.push(("data.object.id", &i.id));
                ids.extend(
                    i.plan_lines.iter().filter_map(|l| l.price_id.as_deref()).map(|p| ("data.object.lines.price", p)),
                );
            }
            EventKind::SubscriptionChanged(s) | EventKind::SubscriptionDeleted(s) => {
                ids.extend(s.price_id.as_deref().map(|p| ("data.object.items.price", p)));
                ids.push(("data.object.status", &s.status));
            }
            EventKind::ChargeRefunded(c) => {
                ids.push(("data.object.id", &c.id));
                ids.extend(c.payment_intent.as_deref().map(|p| ("data.object.payment_intent", p)));
            }
            EventKind::CustomerChanged(_) | EventKind::Unhandled => {}
        }
        ids.into_iter().try_for_each(|(field, value)| check_id(field, value).map(|_| ()))
    }

    /// Checks every time the event carries (`created`, periods, start dates): from 1970
    /// to [`MAX_TIME`], naming the first that is not. A subscription whose period ended
    /// at i64::MAX made the grant clock's query fail on Postgres ("bigint out of range")
    /// at every tick, for every subscriber.
    pub fn check_times(&self) -> Result<(), InvalidField> {
        let mut times: Vec<(&str, Option<i64>)> = vec![("created", Some(self.created))];
        match &self.kind {
            EventKind::InvoicePaid(i) | EventKind::InvoicePaymentFailed(i) => {
                for line in &i.plan_lines {
                    times.push(("data.object.lines.period.start", line.period_start));
                    times.push(("data.object.lines.period.end", line.period_end));
                }
            }
            EventKind::SubscriptionChanged(s) | EventKind::SubscriptionDeleted(s) => {
                times.push(("data.object.start_date", s.start_date));
                times.push(("data.object.current_period_start", s.current_period_start));
                times.push(("data.object.current_period_end", s.current_period_end));
            }
            _ => {}
        }
        match times.into_iter().find_map(|(field, t)| t.filter(|t| !(0..=MAX_TIME).contains(t)).map(|t| (field, t))) {
            Some((field, t)) => Err(invalid(field, format!("a unix time from 0 to {MAX_TIME}, got {t}"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_printable_and_not_blank() {
        assert!(check_id("user_id", "alice").is_ok());
        assert!(check_id("user_id", "ユーザー-🙂-مرحبا").is_ok(), "any printable UTF-8");
        assert!(check_id("user_id", "👩\u{200d}💻").is_ok(), "an emoji joiner is not a bidi control");
        assert!(check_id("user_id", &"x".repeat(255)).is_ok());
        for bad in ["", "   ", "a\0b", "line\nbreak", "tab\there", "\u{7f}", "\u{202e}nimda", "a\u{2066}b", "\u{200f}"]
        {
            assert_eq!(check_id("user_id", bad).unwrap_err().field, "user_id", "{bad:?}");
        }
        let long = check_id("idempotency_key", &"é".repeat(128)).unwrap_err();
        assert_eq!(long.to_string(), "idempotency_key: at most 255 bytes, got 256");
    }

    #[test]
    fn reasons_and_amounts_have_their_limits() {
        assert!(Reason::parse("reason", &"r".repeat(500)).is_ok());
        assert!(Reason::parse("reason", &"r".repeat(501)).is_err());
        assert!(Reason::parse("reason", "a\0").is_err());
        for bad in [0, -1, MAX_AMOUNT + 1, i64::MIN, i64::MAX] {
            assert!(check_amount("amount", bad).is_err(), "{bad}");
        }
        assert_eq!(check_amount("amount", MAX_AMOUNT), Ok(MAX_AMOUNT));
    }

    #[test]
    fn event_times_outside_the_calendar_are_refused_naming_the_field() {
        let subscription = |start, end| BillingEvent {
            id: "evt_1".into(),
            created: 1_800_000_000,
            kind: EventKind::SubscriptionChanged(crate::event::Subscription {
                id: "sub_1".into(),
                status: "active".into(),
                price_id: None,
                start_date: Some(0),
                current_period_start: Some(start),
                current_period_end: Some(end),
                cancel_at_period_end: false,
                owner: Default::default(),
            }),
        };
        assert_eq!(subscription(1_800_000_000, MAX_TIME).check_times(), Ok(()));
        assert_eq!(subscription(i64::MIN, 0).check_times().unwrap_err().field, "data.object.current_period_start");
        assert_eq!(subscription(0, i64::MAX).check_times().unwrap_err().field, "data.object.current_period_end");
        let old = BillingEvent { created: -1, ..subscription(0, 1) };
        assert_eq!(old.check_times().unwrap_err().field, "created");
    }
}
