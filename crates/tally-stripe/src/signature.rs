//! `Stripe-Signature` verification: HMAC-SHA256 over `"{t}.{raw body}"`, any `v1` of the
//! header against any configured secret, within a tolerance on both sides of now.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a signature's timestamp may be from now, either way (Stripe's default).
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("no v1 signature in the Stripe-Signature header")]
    NoV1,
    #[error("signature timestamp is {0} s away from now, beyond the 300 s tolerance")]
    OutsideTolerance(i64),
    #[error("no signature matches a configured webhook secret")]
    Mismatch,
}

/// Checks signatures against a fixed set of secrets (several during rotation).
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<HmacSha256>,
}

impl Verifier {
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Verifier {
        let keys = secrets
            .iter()
            .map(|s| HmacSha256::new_from_slice(s.as_ref().as_bytes()).expect("HMAC takes keys of any length"))
            .collect();
        Verifier { keys }
    }

    /// Verifies `header` for `payload` at time `now` (unix seconds); returns the signed timestamp.
    pub fn verify(&self, payload: &[u8], header: Option<&str>, now: i64) -> Result<i64, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let (timestamp, signatures) = parse_header(header)?;
        if signatures.is_empty() {
            return Err(SignatureError::NoV1);
        }
        // Saturating: a hostile timestamp near i64::MIN or MAX must not overflow.
        let age = now.saturating_sub(timestamp);
        if age.saturating_abs() > TOLERANCE_SECS {
            return Err(SignatureError::OutsideTolerance(age));
        }
        for key in &self.keys {
            let mut mac = key.clone();
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(payload);
            // verify_slice compares in constant time; a v1 that is not hex matches nothing.
            if signatures.iter().any(|sig| mac.clone().verify_slice(sig).is_ok()) {
                return Ok(timestamp);
            }
        }
        Err(SignatureError::Mismatch)
    }
}

/// Splits `t=...,v1=...,v1=...,v0=...` into the timestamp and the decoded v1 signatures.
fn parse_header(header: &str) -> Result<(i64, Vec<Vec<u8>>), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match key {
            "t" => {
                let t = value.parse::<i64>().map_err(|_| SignatureError::Malformed)?;
                if timestamp.replace(t).is_some() {
                    return Err(SignatureError::Malformed);
                }
            }
            "v1" => {
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            _ => {} // v0 and future schemes are not ours to check
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    Ok((timestamp, signatures))
}

/// The `Stripe-Signature` header Stripe would send for `payload` at `timestamp`.
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}
