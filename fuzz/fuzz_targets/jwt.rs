//! The JWT checks (tally-auth) on hostile input: the host app's user tokens (HS256, and
//! ES256/RS256 against a JWKS), tally's own sessions, and the JWKS parser. Beyond "no
//! panic": a string the fuzzer makes never verifies (it cannot know the key), and claims
//! the fuzzer writes, signed with the right key, pass only when they name a user within
//! the input limits, for the right audience, unexpired.

#![no_main]

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tally_auth::jwks::{BoxFuture, FetchError};
use tally_auth::{
    DEFAULT_AUDIENCE, Jwks, JwksTimings, KeySet, KeySource, SESSION_AUDIENCE, Sessions, TokenSettings, UserTokens,
};

const SECRET: &str = "the-fuzzers-hs256-secret-32-bytes!";

/// Public keys only (RFC 7515 A.3's P-256 key, RFC 7517 A.1's RSA key): the fuzzer has
/// no private half, so no token it makes may pass.
const JWKS: &str = r#"{"keys":[
  {"kty":"EC","crv":"P-256","kid":"ec-1","use":"sig","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
  {"kty":"RSA","kid":"rsa-1","alg":"RS256","e":"AQAB","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}
]}"#;

/// The JWKS above, handed over at once (no network: a fetch is ready when asked).
struct Fixed;

impl KeySource for Fixed {
    fn fetch(&self) -> BoxFuture<'static, Result<Vec<u8>, FetchError>> {
        Box::pin(std::future::ready(Ok(JWKS.as_bytes().to_vec())))
    }
}

/// HS256 and the JWKS at once, as during a migration; one for the whole run, so its
/// cache is fetched once and then refuses unknown kids without fetching.
static BOTH: LazyLock<UserTokens> = LazyLock::new(|| {
    let jwks = Arc::new(Jwks::new(Fixed, JwksTimings::default()));
    assert_eq!(ready(jwks.refresh()).expect("the fixed JWKS parses").len(), 2);
    UserTokens::new(&settings()).with_jwks(jwks)
});

fn settings() -> TokenSettings {
    TokenSettings { hs256_secret: Some(SECRET.to_owned()), audience: DEFAULT_AUDIENCE.to_owned(), issuer: None }
}

/// The answer of a future that never has to wait (no fetch is slow here): ready on its
/// first poll.
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("a verification waited with no fetch to wait for"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Whatever a JWKS document holds, parsing it never panics.
    let _ = KeySet::parse(data);
    let tokens = UserTokens::new(&settings());
    let sessions = Sessions::new(SECRET);
    assert!(ready(tokens.verify(text)).is_err(), "a made-up token verified: {text:?}");
    assert!(ready(BOTH.verify(text)).is_err(), "a made-up token verified against the JWKS: {text:?}");
    assert!(sessions.verify(text).is_err(), "a made-up session verified: {text:?}");

    // The same bytes as claims, signed with the key: only the claims' checks stand between.
    let Ok(claims @ Value::Object(_)) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    if let Ok(user) = ready(tokens.verify(&token)) {
        accepted(&claims, &user.id, DEFAULT_AUDIENCE);
    }
    if let Ok(user) = ready(BOTH.verify(&token)) {
        accepted(&claims, &user.id, DEFAULT_AUDIENCE);
    }
    if let Ok(user) = sessions.verify(&token) {
        accepted(&claims, &user.id, SESSION_AUDIENCE);
    }
});

/// What a token that passed must have said.
fn accepted(claims: &Value, user_id: &str, audience: &str) {
    assert!(tally_core::input::check_id("sub", user_id).is_ok(), "{claims}");
    assert!(!user_id.trim().is_empty(), "{claims}");
    let aud = &claims["aud"];
    assert!(aud == audience || aud.as_array().is_some_and(|a| a.iter().any(|x| x == audience)), "{claims}");
    // A NumericDate may have fractional seconds (RFC 7519 §2), so a float is a time too.
    let exp = claims["exp"].as_f64().expect("an accepted token has a numeric exp");
    assert!(exp + tally_auth::LEEWAY_SECS as f64 >= jsonwebtoken::get_current_timestamp() as f64, "{claims}");
}
