//! The JWT checks (tally-auth) on hostile input: the host app's user tokens and tally's
//! own sessions. Beyond "no panic": a string the fuzzer makes never verifies (it cannot
//! know the key), and claims the fuzzer writes, signed with the right key, pass only
//! when they name a user within the input limits, for the right audience, unexpired.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tally_auth::{DEFAULT_AUDIENCE, SESSION_AUDIENCE, Sessions, TokenSettings, UserTokens};

const SECRET: &str = "the-fuzzers-hs256-secret-32-bytes!";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let settings =
        TokenSettings { hs256_secret: Some(SECRET.to_owned()), audience: DEFAULT_AUDIENCE.to_owned(), issuer: None };
    let tokens = UserTokens::new(&settings);
    let sessions = Sessions::new(SECRET);
    assert!(tokens.verify(text).is_err(), "a made-up token verified: {text:?}");
    assert!(sessions.verify(text).is_err(), "a made-up session verified: {text:?}");

    // The same bytes as claims, signed with the key: only the claims' checks stand between.
    let Ok(claims @ Value::Object(_)) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    if let Ok(user) = tokens.verify(&token) {
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
