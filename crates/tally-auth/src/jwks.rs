//! The host app's public keys from a JWKS document (`AUTH_JWKS_URL`, e.g. Supabase's
//! `<project>/auth/v1/.well-known/jwks.json`), for ES256 and RS256 user tokens.
//!
//! Which keys count: only signing keys that say what they are. An EC key on P-256 is an
//! ES256 key and an RSA key (2,048 bits or more) an RS256 key; a key that names an `alg`
//! must name that one, a key with a `use` must say `sig`, a key with `key_ops` must list
//! `verify`. Every key needs a `kid`, and a token is checked against the key its header's
//! `kid` names, never against "whichever key fits": a key without one, and a `kid` two
//! keys share, are left out. Symmetric (`oct`) keys are never taken from a JWKS (that
//! would let whoever serves the document mint HMAC tokens), nor are other curves or
//! algorithms. A key left out is logged, and the rest of the set still counts.
//!
//! How the set is kept: fetched at start-up (by the server), then held in memory. A
//! token naming a `kid` the set does not have makes one fetch, at most once every
//! [`JwksTimings::min_refetch`] (60 s) in all, not per `kid`, so a burst of made-up
//! `kid`s cannot make tally hammer the endpoint; verifications that arrive while a fetch
//! is under way wait for it and share its answer. A set older than
//! [`JwksTimings::max_age`] (10 minutes) is fetched again by the next verification
//! (within the same once-a-minute budget), so a key dropped from the document stops being
//! accepted within about ten minutes. A fetch that fails, or a document that does not
//! parse, keeps the keys there were. A fetch outlives the verification that started it
//! (see [`Jwks`]'s `fetching`).
//!
//! How the document is fetched is the caller's ([`KeySource`]): tally-auth has no HTTP
//! client, so that the fuzzer builds it in a moment.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};

use crate::TokenError;

/// The smallest RSA modulus taken from a JWKS, in bytes (2,048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// A future that is `Send`, as [`KeySource::fetch`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the JWKS document comes from: the bytes of its body, or why there are none.
///
/// The future owns what it needs (`'static`): the cache keeps a fetch that is under way
/// apart from the verification that started it (see [`Jwks`]). It should make progress
/// without being polled (the server's runs as a task of its own), so that a fetch whose
/// verification was given up on is done by the time the next one looks.
pub trait KeySource: Send + Sync {
    fn fetch(&self) -> BoxFuture<'static, Result<Vec<u8>, FetchError>>;
}

/// Why the JWKS document could not be had (said in the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

/// Why a fetched JWKS document was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("cannot fetch the JWKS: {0}")]
    Fetch(#[from] FetchError),
    #[error("the JWKS is not a JSON object with a `keys` array: {0}")]
    Document(String),
    #[error("a JWKS fetch was made less than {0:?} ago")]
    TooSoon(Duration),
}

/// How often the set may be fetched (tests shorten them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksTimings {
    /// At most one fetch this often, in all: an unknown `kid` within it is refused
    /// without asking the endpoint again.
    pub min_refetch: Duration,
    /// A set older than this is fetched again by the next verification.
    pub max_age: Duration,
}

impl Default for JwksTimings {
    fn default() -> JwksTimings {
        JwksTimings { min_refetch: Duration::from_secs(60), max_age: Duration::from_secs(600) }
    }
}

/// What time it is, for the cache (tests move it by hand instead of sleeping).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// One key of the set, with the one algorithm it verifies.
#[derive(Clone)]
pub struct JwksKey {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// The usable keys of a JWKS document, by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, JwksKey>,
    /// Why each key that was left out was (for the log).
    pub skipped: Vec<String>,
}

impl KeySet {
    /// The usable keys of `document` (the rules are the module's). Only a document that is
    /// not `{"keys": [...]}` is an error; a key that does not count is skipped.
    pub fn parse(document: &[u8]) -> Result<KeySet, JwksError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(document).map_err(|e| JwksError::Document(e.to_string()))?;
        let mut set = KeySet::default();
        let mut shared: Vec<String> = Vec::new();
        for (index, value) in document.keys.into_iter().enumerate() {
            let jwk = match serde_json::from_value::<Jwk>(value) {
                Ok(jwk) => jwk,
                Err(e) => {
                    set.skipped.push(format!("key {index}: not a JWK ({e})"));
                    continue;
                }
            };
            let kid = jwk.common.key_id.clone();
            match (kid, usable(&jwk)) {
                (_, Err(why)) => set.skipped.push(format!("key {index}: {why}")),
                (None, Ok(_)) => set.skipped.push(format!("key {index}: no kid")),
                (Some(kid), Ok(key)) => {
                    if set.keys.insert(kid.clone(), key).is_some() || shared.contains(&kid) {
                        set.keys.remove(&kid);
                        set.skipped.push(format!("kid {kid:?}: named by more than one key, so by none"));
                        shared.push(kid);
                    }
                }
            }
        }
        Ok(set)
    }

    pub fn get(&self, kid: &str) -> Option<&JwksKey> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s, sorted (for the log).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

/// The key `jwk` stands for and the one algorithm it verifies, if it is a signing key
/// tally accepts.
fn usable(jwk: &Jwk) -> Result<JwksKey, String> {
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err(format!("use is {usage:?}, not sig"));
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("key_ops does not include verify".into());
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::EllipticCurve(ec) => return Err(format!("EC curve {:?} is not accepted", ec.curve)),
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric (oct) key is never taken from a JWKS".into()),
        _ => return Err("neither an EC P-256 nor an RSA key".into()),
    };
    if let Some(named) = jwk.common.key_algorithm
        && named != KeyAlgorithm::from(algorithm)
    {
        return Err(format!("alg {named} does not fit the key, which is for {algorithm:?}"));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unreadable key ({e})"))?;
    match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, .. } => {
            let bytes = n.iter().skip_while(|b| **b == 0).count();
            if bytes < MIN_RSA_MODULUS_BYTES {
                return Err(format!("RSA modulus of {} bits, fewer than 2048", bytes * 8));
            }
        }
        // Said now rather than at the first token: x and y must be a point on P-256.
        DecodingKeyKind::SecretOrDer(point) => {
            p256::PublicKey::from_sec1_bytes(point).map_err(|_| "x and y are not a point on P-256".to_owned())?;
        }
    }
    Ok(JwksKey { algorithm, key })
}

/// A fetch that has been started and not yet taken in.
type InFlight = Option<BoxFuture<'static, Result<Vec<u8>, FetchError>>>;

/// The cached key set and the rules for fetching it again.
pub struct Jwks {
    source: Box<dyn KeySource>,
    timings: JwksTimings,
    clock: Clock,
    cache: Mutex<Cache>,
    /// Held while a fetch is under way: verifications that need one wait here and then
    /// read what it brought, instead of fetching too. The fetch itself is kept here, not
    /// in the verification that started it: when that one is dropped (its client hung up)
    /// the next verification that needs the set takes the same fetch over. So hanging up
    /// can neither spend the once-a-minute budget without the set being taken in (which
    /// would keep a revoked key alive) nor start more fetches than the budget allows.
    fetching: tokio::sync::Mutex<InFlight>,
}

#[derive(Default)]
struct Cache {
    keys: Arc<KeySet>,
    /// When the keys were last fetched and parsed.
    fetched_at: Option<Instant>,
    /// When a fetch was last started, whatever came of it.
    attempted_at: Option<Instant>,
}

/// Whether a key was found in the cache, and whether the cache is past its age.
struct Lookup {
    key: Option<JwksKey>,
    stale: bool,
}

impl Jwks {
    /// A cache over `source`, empty until [`Jwks::refresh`] or the first token.
    pub fn new(source: impl KeySource + 'static, timings: JwksTimings) -> Jwks {
        Jwks::with_clock(source, timings, Arc::new(Instant::now))
    }

    /// As [`Jwks::new`], with the time read from `clock`.
    pub fn with_clock(source: impl KeySource + 'static, timings: JwksTimings, clock: Clock) -> Jwks {
        Jwks {
            source: Box::new(source),
            timings,
            clock,
            cache: Mutex::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(None),
        }
    }

    /// Fetches the set now, unless a fetch was made within
    /// [`JwksTimings::min_refetch`]; the keys there were stay on failure. Returns the
    /// set now held.
    pub async fn refresh(&self) -> Result<Arc<KeySet>, JwksError> {
        let mut in_flight = self.fetching.lock().await;
        self.fetch_if_allowed(&mut in_flight).await
    }

    /// The key `kid` names, fetching the set again when it does not have it or is past
    /// its age, within the fetch budget.
    pub async fn key(&self, kid: &str) -> Result<JwksKey, TokenError> {
        let found = self.lookup(kid);
        match found.key {
            Some(key) if !found.stale => Ok(key),
            // Past its age: one verification refreshes it (unless a fetch is already under
            // way, or was made too recently), the others go on with the keys there are.
            Some(key) => match self.fetching.try_lock() {
                Ok(mut in_flight) => {
                    let _ = self.fetch_if_allowed(&mut in_flight).await;
                    self.lookup(kid).key.ok_or_else(|| TokenError::UnknownKey(kid.to_owned()))
                }
                Err(_) => Ok(key),
            },
            None => {
                let mut in_flight = self.fetching.lock().await;
                // A fetch this one waited for may have brought the key.
                if let Some(key) = self.lookup(kid).key {
                    return Ok(key);
                }
                let _ = self.fetch_if_allowed(&mut in_flight).await;
                self.lookup(kid).key.ok_or_else(|| TokenError::UnknownKey(kid.to_owned()))
            }
        }
    }

    /// The set now held, without fetching.
    pub fn current(&self) -> Arc<KeySet> {
        self.cache.lock().expect("the JWKS cache lock is never poisoned").keys.clone()
    }

    fn lookup(&self, kid: &str) -> Lookup {
        let now = (self.clock)();
        let cache = self.cache.lock().expect("the JWKS cache lock is never poisoned");
        let stale = cache.fetched_at.is_none_or(|at| now.saturating_duration_since(at) >= self.timings.max_age);
        Lookup { key: cache.keys.get(kid).cloned(), stale }
    }

    /// Takes in the fetch under way, or else starts one unless one was started within
    /// the budget, and takes the set it brings. The caller holds `fetching`.
    async fn fetch_if_allowed(&self, in_flight: &mut InFlight) -> Result<Arc<KeySet>, JwksError> {
        if in_flight.is_none() {
            let now = (self.clock)();
            let mut cache = self.cache.lock().expect("the JWKS cache lock is never poisoned");
            if let Some(at) = cache.attempted_at
                && now.saturating_duration_since(at) < self.timings.min_refetch
            {
                return Err(JwksError::TooSoon(self.timings.min_refetch));
            }
            // Counted before the answer: a fetch that fails or hangs spends the budget too.
            cache.attempted_at = Some(now);
            *in_flight = Some(self.source.fetch());
        }
        // Nothing is awaited after this, so whoever sees the answer takes it in.
        let answer = in_flight.as_mut().expect("a fetch is under way").await;
        *in_flight = None;
        let fetched = match answer {
            Ok(body) => KeySet::parse(&body),
            Err(e) => Err(JwksError::Fetch(e)),
        };
        let set = match fetched {
            Ok(set) => Arc::new(set),
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the keys there were");
                return Err(e);
            }
        };
        for why in &set.skipped {
            tracing::warn!("JWKS key left out: {why}");
        }
        tracing::info!(keys = set.len(), kids = %set.kids().join(","), "JWKS fetched");
        let mut cache = self.cache.lock().expect("the JWKS cache lock is never poisoned");
        cache.keys = set.clone();
        cache.fetched_at = Some((self.clock)());
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Value, json};

    use super::*;
    use crate::test_keys::TestKey;

    fn parse(keys: Vec<Value>) -> KeySet {
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    fn with(key: &TestKey, patch: Value) -> Value {
        let mut jwk = key.jwk.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                jwk.as_object_mut().unwrap().remove(k);
            } else {
                jwk[k] = v.clone();
            }
        }
        jwk
    }

    #[test]
    fn only_signing_keys_that_say_what_they_are_are_taken() {
        let (ec, rsa) = (TestKey::es256("ec"), TestKey::rs256("rsa", 0));
        let set = parse(vec![
            ec.jwk.clone(),
            rsa.jwk.clone(),
            with(&ec, json!({ "kid": "ec-bare", "use": null, "alg": null })),
            with(&rsa, json!({ "kid": "rsa-ops", "use": null, "key_ops": ["verify"] })),
            // Left out, each for its own reason:
            with(&ec, json!({ "kid": "ec-says-rs256", "alg": "RS256" })),
            with(&rsa, json!({ "kid": "rsa-says-es256", "alg": "ES256" })),
            with(&rsa, json!({ "kid": "rsa-says-ps256", "alg": "PS256" })),
            with(&rsa, json!({ "kid": "rsa-for-encryption", "use": "enc" })),
            with(&ec, json!({ "kid": "ec-for-signing-only", "use": null, "key_ops": ["sign"] })),
            with(&ec, json!({ "kid": "ec-p384", "crv": "P-384" })),
            with(&ec, json!({ "kid": "ec-off-curve", "y": ec.jwk["x"].clone() })),
            with(&ec, json!({ "kid": null })),
            json!({ "kty": "RSA", "kid": "rsa-1024", "n": URL_SAFE_NO_PAD.encode([0xc5; 128]), "e": "AQAB" }),
            json!({ "kty": "oct", "kid": "hmac", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode([7; 32]) }),
            json!({ "kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([9; 32]) }),
            json!({ "kty": "weird", "kid": "weird" }),
            json!("not even an object"),
        ]);
        assert_eq!(set.kids(), ["ec", "ec-bare", "rsa", "rsa-ops"]);
        assert_eq!(set.get("ec").unwrap().algorithm, Algorithm::ES256);
        assert_eq!(set.get("rsa").unwrap().algorithm, Algorithm::RS256);
        assert_eq!(set.skipped.len(), 13, "{:#?}", set.skipped);
    }

    #[test]
    fn a_kid_two_keys_share_names_neither() {
        let (a, b, c) = (TestKey::es256("same"), TestKey::es256("same"), TestKey::es256("other"));
        let set = parse(vec![a.jwk.clone(), b.jwk.clone(), c.jwk.clone(), a.jwk.clone()]);
        assert_eq!(set.kids(), ["other"]);
    }

    #[test]
    fn only_a_document_that_is_not_a_key_set_is_an_error() {
        for bad in [&b"[]"[..], b"{}", br#"{"keys": 1}"#, b"<html>", b""] {
            assert!(matches!(KeySet::parse(bad), Err(JwksError::Document(_))), "{:?}", String::from_utf8_lossy(bad));
        }
        // A project still on its HMAC secret publishes an empty set.
        assert!(KeySet::parse(br#"{"keys": []}"#).unwrap().is_empty());
    }
}
