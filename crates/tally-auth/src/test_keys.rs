//! For the tests: keys made in the test, the JWKS documents that publish them, and a
//! key source and a clock the test holds in its hands (it counts fetches, and time moves
//! only when the test says so).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::jwks::{BoxFuture, Clock, FetchError, KeySource};

/// A signing key and the JWK that publishes its public half.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Value,
}

impl TestKey {
    /// A fresh P-256 key.
    pub fn es256(kid: &str) -> TestKey {
        use p256::elliptic_curve::Generate;
        use p256::pkcs8::EncodePrivateKey;
        let der = p256::SecretKey::generate().to_pkcs8_der().unwrap();
        TestKey::new(kid, Algorithm::ES256, EncodingKey::from_ec_der(der.as_bytes()))
    }

    /// One of two RSA-2048 keys made once per test run (making one takes a while).
    pub fn rs256(kid: &str, which: usize) -> TestKey {
        static KEYS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        let keys = KEYS.get_or_init(|| {
            use rsa::Generate;
            use rsa::pkcs1::EncodeRsaPrivateKey;
            (0..2).map(|_| rsa::PrivateKey::generate().to_pkcs1_der().unwrap().as_bytes().to_vec()).collect()
        });
        TestKey::new(kid, Algorithm::RS256, EncodingKey::from_rsa_der(&keys[which]))
    }

    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> TestKey {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        TestKey { kid: kid.to_owned(), alg, encoding, jwk }
    }

    /// `claims` signed with this key, the header naming its algorithm and kid.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(Header { kid: Some(self.kid.clone()), ..Header::new(self.alg) }, claims)
    }

    /// `claims` signed with this key under `header` (whatever it says).
    pub fn sign_as(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// A JWKS document publishing `keys`.
pub fn jwks(keys: &[&TestKey]) -> Vec<u8> {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string().into_bytes()
}

/// A key source whose document the test swaps, which counts the fetches made, and
/// whose fetches can be held until the test lets them answer.
#[derive(Clone)]
pub struct FakeSource {
    document: Arc<Mutex<Result<Vec<u8>, FetchError>>>,
    fetches: Arc<AtomicUsize>,
    answers: Arc<tokio::sync::Semaphore>,
}

/// As good as no limit on the answers a fetch may give.
const OPEN: usize = 1 << 20;

impl FakeSource {
    pub fn serving(document: Vec<u8>) -> FakeSource {
        FakeSource {
            document: Arc::new(Mutex::new(Ok(document))),
            fetches: Arc::new(AtomicUsize::new(0)),
            answers: Arc::new(tokio::sync::Semaphore::new(OPEN)),
        }
    }

    /// Fetches started from now on wait for [`FakeSource::answer`].
    pub fn hold(&self) {
        self.answers.forget_permits(OPEN);
    }

    pub fn answer(&self) {
        self.answers.add_permits(OPEN);
    }

    pub fn serve(&self, document: Vec<u8>) {
        *self.document.lock().unwrap() = Ok(document);
    }

    pub fn fail(&self, why: &str) {
        *self.document.lock().unwrap() = Err(FetchError(why.to_owned()));
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl KeySource for FakeSource {
    fn fetch(&self) -> BoxFuture<'static, Result<Vec<u8>, FetchError>> {
        let this = self.clone();
        Box::pin(async move {
            this.fetches.fetch_add(1, Ordering::SeqCst);
            // Gives way a few times, as a network fetch would, so that concurrent
            // verifications really do arrive while it is under way.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            drop(this.answers.acquire().await.unwrap());
            this.document.lock().unwrap().clone()
        })
    }
}

/// A clock that moves only when told to.
#[derive(Clone)]
pub struct ManualClock {
    start: Instant,
    offset_ms: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock { start: Instant::now(), offset_ms: Arc::new(AtomicU64::new(0)) }
    }

    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn clock(&self) -> Clock {
        let clock = self.clone();
        Arc::new(move || clock.start + Duration::from_millis(clock.offset_ms.load(Ordering::SeqCst)))
    }
}
