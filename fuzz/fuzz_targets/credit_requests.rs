//! The credits API bodies (spend, reserve, commit) read as the routes read them (serde
//! JSON into `tally_core::requests`) and checked by the same `validate`.
//!
//! Beyond "no panic": `validate` accepts exactly the bodies within CONTRACT §3 (ids 1
//! to 255 bytes, not blank, no control nor bidirectional formatting characters; a reason of at most 500 characters
//! without NUL; amounts 1 to 10^12, a commit's 0 to 10^12; a hold's ttl 1 s to a day),
//! restated here independently, and what it accepts is the body's values unchanged
//! (defaults filled in), so the store gets nothing outside the limits.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_core::requests::{CommitRequest, DEFAULT_REASON, DEFAULT_TTL_SECS, ReserveRequest, SpendRequest};

const MAX_AMOUNT: i64 = 1_000_000_000_000;

fuzz_target!(|body: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<SpendRequest>(body) {
        let reason = req.reason.as_deref().unwrap_or(DEFAULT_REASON);
        let within = id(&req.user_id) && id(&req.idempotency_key) && reason_ok(reason) && amount(req.amount);
        match req.validate() {
            Ok(c) => {
                assert!(within, "accepted {req:?}");
                assert_eq!(c.user_id.as_str(), req.user_id);
                assert_eq!(c.idempotency_key.as_str(), req.idempotency_key);
                assert_eq!(c.reason.as_str(), reason);
                assert_eq!(c.amount, req.amount);
            }
            Err(e) => {
                assert!(!within, "refused {req:?}: {e}");
                assert!(["user_id", "idempotency_key", "reason", "amount"].contains(&e.field.as_str()), "{e}");
            }
        }
    }
    if let Ok(req) = serde_json::from_slice::<ReserveRequest>(body) {
        let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TTL_SECS);
        let within = id(&req.user_id) && id(&req.idempotency_key) && amount(req.amount) && (1..=86_400).contains(&ttl);
        match req.validate() {
            Ok(c) => {
                assert!(within, "accepted {req:?}");
                assert_eq!(c.user_id.as_str(), req.user_id);
                assert_eq!(c.idempotency_key.as_str(), req.idempotency_key);
                assert_eq!((c.amount, c.ttl_seconds), (req.amount, ttl));
            }
            Err(e) => {
                assert!(!within, "refused {req:?}: {e}");
                assert!(["user_id", "idempotency_key", "amount", "ttl_seconds"].contains(&e.field.as_str()), "{e}");
            }
        }
    }
    if let Ok(req) = serde_json::from_slice::<CommitRequest>(body) {
        let within = (0..=MAX_AMOUNT).contains(&req.amount);
        match req.validate() {
            Ok(amount) => assert!(within && amount == req.amount, "accepted {req:?}"),
            Err(e) => assert!(!within && e.field == "amount", "refused {req:?}: {e}"),
        }
    }
});

/// A user id or idempotency key: 1 to 255 bytes, not only blanks, no control nor
/// bidirectional formatting characters.
fn id(s: &str) -> bool {
    (1..=255).contains(&s.len()) && !s.chars().all(char::is_whitespace) && !s.chars().any(|c| c.is_control() || bidi(c))
}

/// U+061C, U+200E, U+200F, U+202A to U+202E and U+2066 to U+2069.
fn bidi(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn reason_ok(s: &str) -> bool {
    s.chars().count() <= 500 && !s.contains('\0')
}

fn amount(n: i64) -> bool {
    (1..=MAX_AMOUNT).contains(&n)
}
