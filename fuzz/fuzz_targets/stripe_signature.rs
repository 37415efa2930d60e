//! The `Stripe-Signature` header parser and verifier, as the webhook route calls it.
//!
//! Beyond "no panic" on any payload, header, clock and set of secrets (timestamps near
//! `i64::MIN` and `MAX` included): a verify that succeeds names a timestamp within the
//! tolerance for which the header carries a correct `v1` of one of the secrets, and a
//! header made by `sign` for the same payload verifies exactly when its timestamp is
//! within the tolerance of now.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_stripe::signature::TOLERANCE_SECS;
use tally_stripe::{SignatureError, Verifier, sign};

/// One case, read from lines so that seeds are readable and editable:
/// `now`, `signed_at`, two secrets, how many of them the verifier has (0 to 2, the
/// first is also the signer's), the header (not UTF-8: missing), parts to append to a
/// signed header, and the rest is the payload.
struct Input<'a> {
    now: i64,
    signed_at: i64,
    secrets: [&'a str; 2],
    keys: usize,
    header: Option<&'a str>,
    extra: &'a str,
    payload: &'a [u8],
}

impl<'a> Input<'a> {
    fn read(data: &'a [u8]) -> Input<'a> {
        let mut lines = data.splitn(8, |&b| b == b'\n');
        let mut next = || lines.next().unwrap_or(b"");
        let int = |line: &[u8]| std::str::from_utf8(line).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let text = |line: &'a [u8]| std::str::from_utf8(line).unwrap_or("");
        let now = int(next());
        let signed_at = int(next());
        let secrets = [text(next()), text(next())];
        let keys = usize::from(next().first().copied().unwrap_or(b'1').wrapping_sub(b'0') % 3);
        let header = std::str::from_utf8(next()).ok();
        let extra = text(next());
        let payload = next();
        Input { now, signed_at, secrets, keys, header, extra, payload }
    }
}

fuzz_target!(|data: &[u8]| {
    let input = Input::read(data);
    let secrets = &input.secrets[..input.keys];
    let verifier = Verifier::new(secrets);

    // Any header: a success must be backed by a correct v1 at a timestamp within tolerance.
    if let Ok(t) = verifier.verify(input.payload, input.header, input.now) {
        let header = input.header.expect("a missing header never verifies");
        assert!(within_tolerance(input.now, t), "t={t} accepted at now={}", input.now);
        assert!(
            secrets.iter().any(|s| carries_v1(header, &v1_of(input.payload, s, t))),
            "{header:?} verified without a correct v1 for any secret"
        );
    }

    // A header Stripe would send: accepted at its own time, and whenever now is close enough.
    let secret = input.secrets[0];
    let signed = sign(input.payload, secret, input.signed_at);
    let own = Verifier::new(&[secret]);
    assert_eq!(own.verify(input.payload, Some(&signed), input.signed_at), Ok(input.signed_at));
    let at_now = own.verify(input.payload, Some(&signed), input.now);
    if within_tolerance(input.now, input.signed_at) {
        assert_eq!(at_now, Ok(input.signed_at));
    } else {
        assert!(matches!(at_now, Err(SignatureError::OutsideTolerance(_))), "{at_now:?}");
    }

    // Further parts (v0, other schemes, more v1s) never make a signed header fail its
    // signature check unless they break the header's syntax or repeat its t.
    let extended = format!("{signed},{}", input.extra);
    match own.verify(input.payload, Some(&extended), input.signed_at) {
        Ok(t) => assert_eq!(t, input.signed_at),
        Err(SignatureError::Malformed) => assert!(breaks_syntax(input.extra), "{extended:?}"),
        Err(e) => panic!("{extended:?}: {e:?}"),
    }
});

/// Whether `t` is within the tolerance of `now`, computed without overflow.
fn within_tolerance(now: i64, t: i64) -> bool {
    (i128::from(now) - i128::from(t)).abs() <= i128::from(TOLERANCE_SECS)
}

/// The hex `v1` that `sign` computes for this payload, secret and timestamp.
fn v1_of(payload: &[u8], secret: &str, t: i64) -> String {
    let header = sign(payload, secret, t);
    header.split_once(",v1=").expect("sign writes t=...,v1=...").1.to_owned()
}

/// Whether one of the header's parts is `v1=<hex>` (hex in either case).
fn carries_v1(header: &str, hex: &str) -> bool {
    header.split(',').filter_map(|part| part.trim().strip_prefix("v1=")).any(|v| v.eq_ignore_ascii_case(hex))
}

/// Whether appended parts make a header malformed: a part without `=`, or another `t`.
fn breaks_syntax(extra: &str) -> bool {
    extra.split(',').any(|part| match part.trim().split_once('=') {
        None => true,
        Some((key, _)) => key == "t",
    })
}
