//! The host app's user tokens: HS256 with `AUTH_JWT_SECRET` and/or ES256 and RS256 with
//! the keys of `AUTH_JWKS_URL` (both at once while a project moves from one to the
//! other), `exp` required and `nbf` honoured with [`LEEWAY_SECS`], `aud` required to be
//! `AUTH_JWT_AUDIENCE`, and `iss` to be `AUTH_JWT_ISSUER` when it is set.
//!
//! The header's `alg` picks the kind of key, and each kind has its own: HS256 only ever
//! meets the secret, ES256 and RS256 only ever meet a JWKS key, the one the header's
//! `kid` names, and that key's own algorithm must be the header's. So an RS256 or ES256
//! header is never checked against the secret, an HS256 token whose "secret" is a public
//! key is never checked against that key, and an ES256 header naming an RSA key (or the
//! other way round) is refused before any signature is looked at.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::{Claims, Jwks, TokenError, User, header, validation};

/// The audience Supabase puts in its users' tokens.
pub const DEFAULT_AUDIENCE: &str = "authenticated";

/// What the host app's tokens must carry, from the configuration.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `AUTH_JWT_SECRET`, for HS256 (at least 32 bytes: checked by the configuration).
    pub hs256_secret: Option<String>,
    /// `AUTH_JWT_AUDIENCE`.
    pub audience: String,
    /// `AUTH_JWT_ISSUER`.
    pub issuer: Option<String>,
}

/// Checks the host app's user tokens.
#[derive(Clone)]
pub struct UserTokens {
    hs256: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    /// The same rules, one per accepted algorithm (jsonwebtoken's validation names the
    /// algorithms it lets through).
    hs256_rules: Validation,
    es256_rules: Validation,
    rs256_rules: Validation,
}

impl UserTokens {
    /// HS256 tokens with the settings' secret, if any; see [`UserTokens::with_jwks`].
    pub fn new(settings: &TokenSettings) -> UserTokens {
        let rules = |algorithm| validation(algorithm, &settings.audience, settings.issuer.as_deref());
        let hs256 = settings.hs256_secret.as_deref().map(|secret| {
            DecodingKey::from_secret(secret.as_bytes()).expect("AUTH_JWT_SECRET is never empty (config checks it)")
        });
        UserTokens {
            hs256,
            jwks: None,
            hs256_rules: rules(Algorithm::HS256),
            es256_rules: rules(Algorithm::ES256),
            rs256_rules: rules(Algorithm::RS256),
        }
    }

    /// Also ES256 and RS256 tokens, with the keys of `jwks`.
    pub fn with_jwks(mut self, jwks: Arc<Jwks>) -> UserTokens {
        self.jwks = Some(jwks);
        self
    }

    /// The JWKS cache, when there is one (the server fetches it at start).
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// Whether any kind of user token can be checked (else: dev mode).
    pub fn configured(&self) -> bool {
        self.hs256.is_some() || self.jwks.is_some()
    }

    /// The user `token` names, if it is valid by every rule above. Waits for a JWKS
    /// fetch when the token names a key the cache does not hold (see [`Jwks::key`]).
    pub async fn verify(&self, token: &str) -> Result<User, TokenError> {
        let token = token.trim();
        let header = header(token)?;
        let data = match header.alg {
            Algorithm::HS256 => {
                let key = self.hs256.as_ref().ok_or(TokenError::NoKey)?;
                jsonwebtoken::decode::<Claims>(token, key, &self.hs256_rules)?
            }
            alg @ (Algorithm::ES256 | Algorithm::RS256) => {
                let jwks = self.jwks.as_ref().ok_or(TokenError::NoKey)?;
                let kid = header.kid.as_deref().ok_or(TokenError::NoKeyId)?;
                let found = jwks.key(kid).await?;
                if found.algorithm != alg {
                    return Err(TokenError::Algorithm(format!("{alg:?} header naming a {:?} key", found.algorithm)));
                }
                let rules = if alg == Algorithm::ES256 { &self.es256_rules } else { &self.rs256_rules };
                jsonwebtoken::decode::<Claims>(token, &found.key, rules)?
            }
            other => return Err(TokenError::Algorithm(format!("{other:?}"))),
        };
        data.claims.into_user()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;

    const SECRET: &str = "a-host-apps-secret-of-32-bytes-ok";

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn tokens(issuer: Option<&str>) -> UserTokens {
        UserTokens::new(&TokenSettings {
            hs256_secret: Some(SECRET.to_owned()),
            audience: DEFAULT_AUDIENCE.to_owned(),
            issuer: issuer.map(str::to_owned),
        })
    }

    fn sign(claims: Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn supabase(sub: &str) -> Value {
        json!({ "sub": sub, "exp": now() + 3600, "aud": "authenticated", "role": "authenticated", "email": "a@b.co" })
    }

    #[tokio::test]
    async fn a_supabase_token_names_its_user_and_email() {
        let user = tokens(None).verify(&sign(supabase("4d1c-uuid"), SECRET)).await.unwrap();
        assert_eq!(user, User { id: "4d1c-uuid".into(), email: Some("a@b.co".into()) });
        assert_eq!(user.display_name(), "a@b.co");
    }

    #[tokio::test]
    async fn time_audience_issuer_and_subject_are_checked() {
        let t = tokens(None);
        let with = async |patch: Value| {
            let mut claims = supabase("u");
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    claims.as_object_mut().unwrap().remove(k);
                } else {
                    claims[k] = v.clone();
                }
            }
            t.verify(&sign(claims, SECRET)).await
        };
        assert_eq!(with(json!({ "exp": now() - 31 })).await, Err(TokenError::Expired));
        assert!(with(json!({ "exp": now() - 10 })).await.is_ok(), "within the leeway");
        assert_eq!(with(json!({ "exp": null })).await, Err(TokenError::Claim("exp".into())));
        assert_eq!(with(json!({ "exp": 1e308 })).await, Err(TokenError::Claim("exp".into())));
        // A NumericDate may have fractional seconds (RFC 7519 §2); the fuzzer's jwt target
        // assumed otherwise.
        assert!(with(json!({ "exp": now() as f64 + 3600.5 })).await.is_ok());
        assert_eq!(with(json!({ "exp": now() as f64 - 60.5 })).await, Err(TokenError::Expired));
        assert_eq!(with(json!({ "nbf": now() + 120 })).await, Err(TokenError::NotYetValid));
        assert!(with(json!({ "nbf": now() + 10 })).await.is_ok(), "within the leeway");
        assert_eq!(with(json!({ "aud": "service_role" })).await, Err(TokenError::Audience));
        assert_eq!(with(json!({ "aud": null })).await, Err(TokenError::Claim("aud".into())));
        assert_eq!(with(json!({ "sub": "   " })).await, Err(TokenError::NoSubject));
        assert!(matches!(with(json!({ "sub": "x".repeat(10_000) })).await, Err(TokenError::BadSubject(_))));
        assert!(matches!(with(json!({ "sub": "line\nbreak" })).await, Err(TokenError::BadSubject(_))));
        assert_eq!(with(json!({ "email": "not an address\u{0}" })).await.unwrap().email, None);

        let issued = tokens(Some("https://x.supabase.co/auth/v1"));
        let mut claims = supabase("u");
        assert_eq!(issued.verify(&sign(claims.clone(), SECRET)).await, Err(TokenError::Claim("iss".into())));
        claims["iss"] = json!("https://evil.example");
        assert_eq!(issued.verify(&sign(claims.clone(), SECRET)).await, Err(TokenError::Issuer));
        claims["iss"] = json!("https://x.supabase.co/auth/v1");
        assert!(issued.verify(&sign(claims, SECRET)).await.is_ok());
    }

    #[tokio::test]
    async fn forged_unsigned_and_confused_tokens_are_refused() {
        let t = tokens(None);
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = supabase("u");
        assert_eq!(
            t.verify(&sign(claims.clone(), "another-secret-of-at-least-32-bytes")).await,
            Err(TokenError::Signature)
        );
        let none = format!("{}.{}.", b64(json!({ "alg": "none" })), b64(claims.clone()));
        assert_eq!(t.verify(&none).await, Err(TokenError::Malformed));
        let none_caps = format!("{}.{}.", b64(json!({ "alg": "None" })), b64(claims.clone()));
        assert_eq!(t.verify(&none_caps).await, Err(TokenError::Malformed));
        // An RS256 header over an HMAC made with the secret, the classic confusion: an RS256
        // header only ever meets a JWKS key, and there is none here.
        let hs = sign(claims.clone(), SECRET);
        let signature = hs.rsplit('.').next().unwrap();
        let confused = format!("{}.{}.{signature}", b64(json!({ "alg": "RS256", "typ": "JWT" })), b64(claims.clone()));
        assert_eq!(t.verify(&confused).await, Err(TokenError::NoKey));
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(t.verify(&hs512).await, Err(TokenError::Algorithm("HS512".into())));
        for junk in ["", "a.b", "a.b.c.d", "....", "\u{0}"] {
            assert!(t.verify(junk).await.is_err(), "{junk:?}");
        }
        let unconfigured =
            UserTokens::new(&TokenSettings { hs256_secret: None, audience: DEFAULT_AUDIENCE.into(), issuer: None });
        assert!(!unconfigured.configured());
        assert_eq!(unconfigured.verify(&hs).await, Err(TokenError::NoKey));
    }
}

/// ES256 and RS256 tokens with keys made in the test, published by a JWKS the test
/// serves (and swaps), with a clock it moves by hand.
#[cfg(test)]
mod jwks_tests {
    use std::time::Duration;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;
    use crate::JwksTimings;
    use crate::test_keys::{FakeSource, ManualClock, TestKey, jwks};

    const SECRET: &str = "a-host-apps-secret-of-32-bytes-ok";
    const ISSUER: &str = "https://abcdefghijklmnop.supabase.co/auth/v1";
    const MINUTE: Duration = Duration::from_secs(60);

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    /// What Supabase puts in an access token.
    fn supabase(sub: &str) -> Value {
        json!({
            "sub": sub, "exp": now() + 3600, "iat": now(), "aud": "authenticated", "role": "authenticated",
            "email": format!("{sub}@example.com"), "iss": ISSUER, "session_id": "5e55", "is_anonymous": false,
        })
    }

    struct Setup {
        tokens: UserTokens,
        source: FakeSource,
        clock: ManualClock,
    }

    /// Tokens checked against `document`, with the default timings, the issuer set, and
    /// the HS256 secret too when `secret`.
    fn setup(document: Vec<u8>, secret: bool) -> Setup {
        let source = FakeSource::serving(document);
        let clock = ManualClock::new();
        let jwks = Jwks::with_clock(source.clone(), JwksTimings::default(), clock.clock());
        let settings = TokenSettings {
            hs256_secret: secret.then(|| SECRET.to_owned()),
            audience: DEFAULT_AUDIENCE.to_owned(),
            issuer: Some(ISSUER.to_owned()),
        };
        Setup { tokens: UserTokens::new(&settings).with_jwks(Arc::new(jwks)), source, clock }
    }

    fn patched(patch: Value) -> Value {
        let mut claims = supabase("u");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }

    #[tokio::test]
    async fn es256_and_rs256_tokens_name_their_user() {
        let (ec, rsa) = (TestKey::es256("ec-1"), TestKey::rs256("rsa-1", 0));
        let s = setup(jwks(&[&ec, &rsa]), false);
        assert!(s.tokens.configured());
        assert_eq!(s.tokens.jwks().unwrap().refresh().await.unwrap().kids(), ["ec-1", "rsa-1"]);
        let user = s.tokens.verify(&ec.sign(&supabase("4d1c-uuid"))).await.unwrap();
        assert_eq!(user, User { id: "4d1c-uuid".into(), email: Some("4d1c-uuid@example.com".into()) });
        assert_eq!(s.tokens.verify(&rsa.sign(&supabase("bob"))).await.unwrap().id, "bob");
        // Signed by another key under the same kid: the signature is checked.
        let impostor = TestKey::es256("ec-1");
        assert_eq!(s.tokens.verify(&impostor.sign(&supabase("bob"))).await, Err(TokenError::Signature));
        assert_eq!(s.source.fetches(), 1, "the keys were fetched once and kept");
    }

    #[tokio::test]
    async fn the_first_token_fetches_the_set_when_start_up_did_not() {
        let ec = TestKey::es256("ec-1");
        let s = setup(jwks(&[&ec]), false);
        assert_eq!(s.tokens.verify(&ec.sign(&supabase("u"))).await.unwrap().id, "u");
        assert_eq!(s.tokens.verify(&ec.sign(&supabase("v"))).await.unwrap().id, "v");
        assert_eq!(s.source.fetches(), 1);
    }

    #[tokio::test]
    async fn time_audience_and_issuer_are_checked_on_jwks_tokens() {
        let (ec, rsa) = (TestKey::es256("ec-1"), TestKey::rs256("rsa-1", 0));
        let s = setup(jwks(&[&ec, &rsa]), false);
        for key in [&ec, &rsa] {
            let verify = async |patch: Value| s.tokens.verify(&key.sign(&patched(patch))).await;
            assert_eq!(verify(json!({ "exp": now() - 31 })).await, Err(TokenError::Expired));
            assert!(verify(json!({ "exp": now() - 10 })).await.is_ok(), "within the leeway");
            assert_eq!(verify(json!({ "exp": null })).await, Err(TokenError::Claim("exp".into())));
            assert_eq!(verify(json!({ "nbf": now() + 120 })).await, Err(TokenError::NotYetValid));
            assert!(verify(json!({ "nbf": now() + 10 })).await.is_ok(), "within the leeway");
            assert_eq!(verify(json!({ "aud": "service_role" })).await, Err(TokenError::Audience));
            assert_eq!(verify(json!({ "aud": null })).await, Err(TokenError::Claim("aud".into())));
            assert_eq!(verify(json!({ "iss": "https://evil.supabase.co/auth/v1" })).await, Err(TokenError::Issuer));
            assert_eq!(verify(json!({ "iss": null })).await, Err(TokenError::Claim("iss".into())));
            assert_eq!(verify(json!({ "sub": "  " })).await, Err(TokenError::NoSubject));
        }
    }

    #[tokio::test]
    async fn a_kid_missing_from_the_set_or_from_the_header_is_refused() {
        let (ec, stranger) = (TestKey::es256("ec-1"), TestKey::es256("not-published"));
        let s = setup(jwks(&[&ec]), false);
        assert_eq!(
            s.tokens.verify(&stranger.sign(&supabase("u"))).await,
            Err(TokenError::UnknownKey("not-published".into()))
        );
        let no_kid = ec.sign_as(Header::new(Algorithm::ES256), &supabase("u"));
        assert_eq!(s.tokens.verify(&no_kid).await, Err(TokenError::NoKeyId));
    }

    /// Issue: rotation. A new key appears: accepted after one fetch. A key is dropped:
    /// refused once the set is fetched again (at the latest when it is ten minutes old).
    #[tokio::test]
    async fn a_rotated_in_key_is_fetched_once_and_a_dropped_key_stops_working() {
        let (old, new) = (TestKey::es256("key-2025"), TestKey::es256("key-2026"));
        let s = setup(jwks(&[&old]), false);
        s.tokens.jwks().unwrap().refresh().await.unwrap();
        assert!(s.tokens.verify(&old.sign(&supabase("u"))).await.is_ok());

        // The provider publishes the new key beside the old one and starts signing with it.
        s.source.serve(jwks(&[&old, &new]));
        s.clock.advance(MINUTE);
        assert_eq!(s.tokens.verify(&new.sign(&supabase("u"))).await.unwrap().id, "u");
        assert_eq!(s.source.fetches(), 2, "the unknown kid made one fetch");
        for _ in 0..5 {
            assert!(s.tokens.verify(&new.sign(&supabase("u"))).await.is_ok());
            assert!(s.tokens.verify(&old.sign(&supabase("u"))).await.is_ok(), "tokens signed before still work");
        }
        assert_eq!(s.source.fetches(), 2, "known kids need no fetch");

        // Then drops the old key. Held keys are trusted until the set is ten minutes old...
        s.source.serve(jwks(&[&new]));
        s.clock.advance(Duration::from_secs(9 * 60));
        assert!(s.tokens.verify(&old.sign(&supabase("u"))).await.is_ok());
        assert_eq!(s.source.fetches(), 2);
        // ...then fetched again: the dropped key is refused, the kept one still works.
        s.clock.advance(MINUTE);
        assert_eq!(s.tokens.verify(&old.sign(&supabase("u"))).await, Err(TokenError::UnknownKey("key-2025".into())));
        assert!(s.tokens.verify(&new.sign(&supabase("u"))).await.is_ok());
        assert_eq!(s.source.fetches(), 3);
    }

    /// A key published just after a fetch waits for the next minute: a refetch is made at
    /// most once a minute in all.
    #[tokio::test]
    async fn an_unknown_kid_refetches_at_most_once_a_minute() {
        let (a, b) = (TestKey::es256("a"), TestKey::es256("b"));
        let s = setup(jwks(&[&a]), false);
        s.tokens.jwks().unwrap().refresh().await.unwrap();
        s.source.serve(jwks(&[&a, &b]));
        assert_eq!(s.tokens.verify(&b.sign(&supabase("u"))).await, Err(TokenError::UnknownKey("b".into())));
        assert_eq!(s.source.fetches(), 1, "too soon after the start-up fetch");
        s.clock.advance(Duration::from_secs(59));
        assert!(s.tokens.verify(&b.sign(&supabase("u"))).await.is_err());
        assert_eq!(s.source.fetches(), 1);
        s.clock.advance(Duration::from_secs(1));
        assert!(s.tokens.verify(&b.sign(&supabase("u"))).await.is_ok());
        assert_eq!(s.source.fetches(), 2);
    }

    /// Issue: a burst of bad tokens cannot make tally hammer the JWKS endpoint.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_of_unknown_kids_makes_at_most_one_fetch_a_minute() {
        let (good, attacker) = (TestKey::es256("good"), TestKey::es256("attacker"));
        let s = setup(jwks(&[&good]), false);
        let tokens = Arc::new(s.tokens.clone());
        for minute in 1..=3 {
            let mut burst = tokio::task::JoinSet::new();
            for i in 0..1_000 {
                let header = Header { kid: Some(format!("made-up-{minute}-{i}")), ..Header::new(Algorithm::ES256) };
                let token = attacker.sign_as(header, &supabase("victim"));
                let tokens = tokens.clone();
                burst.spawn(async move { tokens.verify(&token).await });
            }
            for refused in burst.join_all().await {
                assert!(matches!(refused, Err(TokenError::UnknownKey(_))), "{refused:?}");
            }
            assert_eq!(s.source.fetches(), minute, "one fetch for the 1,000 tokens of minute {minute}");
            assert!(tokens.verify(&good.sign(&supabase("u"))).await.is_ok(), "good tokens go on working");
            s.clock.advance(MINUTE);
        }
    }

    /// Verifications that arrive while a fetch is under way wait for it and share it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_tokens_for_a_new_key_share_one_fetch() {
        let (old, new) = (TestKey::es256("old"), TestKey::es256("new"));
        let s = setup(jwks(&[&old]), false);
        s.tokens.jwks().unwrap().refresh().await.unwrap();
        s.source.serve(jwks(&[&old, &new]));
        s.clock.advance(MINUTE);
        let tokens = Arc::new(s.tokens.clone());
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..200 {
            let (token, tokens) = (new.sign(&supabase(&format!("user-{i}"))), tokens.clone());
            burst.spawn(async move { tokens.verify(&token).await });
        }
        for accepted in burst.join_all().await {
            assert!(accepted.is_ok(), "{accepted:?}");
        }
        assert_eq!(s.source.fetches(), 2);
    }

    /// A client that hangs up while its token waits for a fetch: the fetch is not lost
    /// (which would spend the minute's budget and keep a revoked key alive) nor started
    /// again; the next verification that needs the set takes it over.
    #[tokio::test]
    async fn a_fetch_whose_verification_is_dropped_is_taken_over_by_the_next() {
        use std::future::Future;
        use std::task::{Context, Waker};

        let (revoked, new) = (TestKey::es256("revoked"), TestKey::es256("new"));
        let s = setup(jwks(&[&revoked]), false);
        s.tokens.jwks().unwrap().refresh().await.unwrap();
        s.source.serve(jwks(&[&new]));
        s.source.hold();
        s.clock.advance(MINUTE);
        {
            let token = new.sign(&supabase("u"));
            let mut hung_up = std::pin::pin!(s.tokens.verify(&token));
            for _ in 0..20 {
                let poll = hung_up.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                assert!(poll.is_pending(), "waits for the fetch it started");
            }
        }
        assert_eq!(s.source.fetches(), 2, "the dropped verification had started a fetch");
        s.source.answer();
        assert!(s.tokens.verify(&new.sign(&supabase("u"))).await.is_ok());
        assert_eq!(s.source.fetches(), 2, "taken over, not started again");
        assert_eq!(s.tokens.verify(&revoked.sign(&supabase("u"))).await, Err(TokenError::UnknownKey("revoked".into())));
    }

    #[tokio::test]
    async fn a_failed_fetch_or_a_broken_document_keeps_the_keys_there_were() {
        let (a, b) = (TestKey::es256("a"), TestKey::es256("b"));
        let s = setup(jwks(&[&a]), false);
        s.tokens.jwks().unwrap().refresh().await.unwrap();
        s.source.fail("connection refused");
        s.clock.advance(Duration::from_secs(11 * 60));
        assert!(s.tokens.verify(&a.sign(&supabase("u"))).await.is_ok(), "stale but kept");
        assert_eq!(s.source.fetches(), 2, "the stale set was fetched again, and that failed");
        assert!(s.tokens.verify(&a.sign(&supabase("u"))).await.is_ok());
        assert_eq!(s.source.fetches(), 2, "and is not fetched again within the minute");
        s.source.serve(b"<html>502 Bad Gateway</html>".to_vec());
        s.clock.advance(MINUTE);
        assert!(s.tokens.verify(&a.sign(&supabase("u"))).await.is_ok());
        assert_eq!(s.source.fetches(), 3);
        s.source.serve(jwks(&[&b]));
        s.clock.advance(MINUTE);
        assert_eq!(s.tokens.verify(&a.sign(&supabase("u"))).await, Err(TokenError::UnknownKey("a".into())));
        assert!(s.tokens.verify(&b.sign(&supabase("u"))).await.is_ok());
        assert_eq!(s.source.fetches(), 4);
    }

    /// Issue: "HS256 and JWKS at the same time, for projects in the middle of a key
    /// migration".
    #[tokio::test]
    async fn hs256_and_jwks_tokens_both_work_when_both_are_configured() {
        let ec = TestKey::es256("ec-1");
        let s = setup(jwks(&[&ec]), true);
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &supabase("legacy"),
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(s.tokens.verify(&hs).await.unwrap().id, "legacy");
        assert_eq!(s.tokens.verify(&ec.sign(&supabase("migrated"))).await.unwrap().id, "migrated");
        // The same rules hold for both: an HS256 token from another issuer is refused.
        let mut foreign = supabase("legacy");
        foreign["iss"] = json!("https://other.supabase.co/auth/v1");
        let foreign = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &foreign,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(s.tokens.verify(&foreign).await, Err(TokenError::Issuer));
    }

    /// Issue: algorithm confusion. Each key meets only its own algorithm.
    #[tokio::test]
    async fn algorithm_confusion_is_refused() {
        let (ec, rsa) = (TestKey::es256("ec-1"), TestKey::rs256("rsa-1", 0));
        let document = jwks(&[&ec, &rsa]);
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let hmac = |header: Header, key: &[u8]| {
            jsonwebtoken::encode(&header, &supabase("victim"), &EncodingKey::from_secret(key).unwrap()).unwrap()
        };
        let hs256_kid = |kid: &str| Header { kid: Some(kid.to_owned()), ..Header::new(Algorithm::HS256) };
        for secret in [false, true] {
            let s = setup(document.clone(), secret);
            // Tokens an attacker can make from public material: an HMAC whose key is the
            // published JWK, the whole document, or the RSA modulus; with and without the
            // kid of a published key.
            let modulus = URL_SAFE_NO_PAD.decode(rsa.jwk["n"].as_str().unwrap()).unwrap();
            let public_material =
                [rsa.jwk.to_string().into_bytes(), ec.jwk.to_string().into_bytes(), document.clone(), modulus];
            let hs_refusal = if secret { TokenError::Signature } else { TokenError::NoKey };
            for material in &public_material {
                for header in [Header::new(Algorithm::HS256), hs256_kid("rsa-1"), hs256_kid("ec-1")] {
                    assert_eq!(
                        s.tokens.verify(&hmac(header, material)).await,
                        Err(hs_refusal.clone()),
                        "secret: {secret}"
                    );
                }
            }
            // A genuine ES256 signature under a header naming the RSA key, and the other way round.
            let es_as_rsa =
                ec.sign_as(Header { kid: Some("rsa-1".into()), ..Header::new(Algorithm::ES256) }, &supabase("victim"));
            assert_eq!(
                s.tokens.verify(&es_as_rsa).await,
                Err(TokenError::Algorithm("ES256 header naming a RS256 key".into()))
            );
            let rs_as_ec =
                rsa.sign_as(Header { kid: Some("ec-1".into()), ..Header::new(Algorithm::RS256) }, &supabase("victim"));
            assert_eq!(
                s.tokens.verify(&rs_as_ec).await,
                Err(TokenError::Algorithm("RS256 header naming a ES256 key".into()))
            );
            // Other algorithms a published key could be read with: PS256 (RSA), ES384, HS512.
            let ps256 =
                rsa.sign_as(Header { kid: Some("rsa-1".into()), ..Header::new(Algorithm::PS256) }, &supabase("victim"));
            assert_eq!(s.tokens.verify(&ps256).await, Err(TokenError::Algorithm("PS256".into())));
            let hs512 =
                hmac(Header { kid: Some("rsa-1".into()), ..Header::new(Algorithm::HS512) }, &public_material[0]);
            assert_eq!(s.tokens.verify(&hs512).await, Err(TokenError::Algorithm("HS512".into())));
            // `alg: none`, with the kid of a published key.
            for alg in ["none", "None", "NONE"] {
                let none = format!("{}.{}.", b64(&json!({ "alg": alg, "kid": "ec-1" })), b64(&supabase("victim")));
                assert_eq!(s.tokens.verify(&none).await, Err(TokenError::Malformed), "{alg}");
            }
            // A key carried in the token's own header (`jwk`) is not looked at: the kid's is.
            let attacker = TestKey::es256("ec-1");
            let mut header = Header { kid: Some("ec-1".into()), ..Header::new(Algorithm::ES256) };
            header.jwk = Some(serde_json::from_value(attacker.jwk.clone()).unwrap());
            header.jku = Some("https://evil.example/jwks.json".into());
            assert_eq!(
                s.tokens.verify(&attacker.sign_as(header, &supabase("victim"))).await,
                Err(TokenError::Signature)
            );
        }
    }

    /// A symmetric key in the JWKS is never used: not for HS256, not for anything.
    #[tokio::test]
    async fn an_oct_key_in_the_jwks_is_never_an_hmac_key() {
        let ec = TestKey::es256("ec-1");
        let oct = json!({ "kty": "oct", "kid": "hmac-1", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(SECRET) });
        let document = json!({ "keys": [ec.jwk, oct] }).to_string().into_bytes();
        let s = setup(document, false);
        assert_eq!(s.tokens.jwks().unwrap().refresh().await.unwrap().kids(), ["ec-1"]);
        let header = Header { kid: Some("hmac-1".into()), ..Header::new(Algorithm::HS256) };
        let token =
            jsonwebtoken::encode(&header, &supabase("victim"), &EncodingKey::from_secret(SECRET.as_bytes()).unwrap())
                .unwrap();
        assert_eq!(s.tokens.verify(&token).await, Err(TokenError::NoKey));
    }
}
