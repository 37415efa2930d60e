//! The host app's user tokens: HS256 with `AUTH_JWT_SECRET`, `exp` required and `nbf`
//! honoured with [`LEEWAY_SECS`], `aud` required to be `AUTH_JWT_AUDIENCE`, and `iss`
//! to be `AUTH_JWT_ISSUER` when it is set.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::{Claims, TokenError, User, algorithm, validation};

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
    validation: Validation,
}

impl UserTokens {
    pub fn new(settings: &TokenSettings) -> UserTokens {
        let validation = validation(&settings.audience, settings.issuer.as_deref());
        let hs256 = settings.hs256_secret.as_deref().map(|secret| {
            DecodingKey::from_secret(secret.as_bytes()).expect("AUTH_JWT_SECRET is never empty (config checks it)")
        });
        UserTokens { hs256, validation }
    }

    /// Whether any kind of user token can be checked (else: dev mode).
    pub fn configured(&self) -> bool {
        self.hs256.is_some()
    }

    /// The user `token` names, if it is valid by every rule above.
    pub fn verify(&self, token: &str) -> Result<User, TokenError> {
        let token = token.trim();
        // The key is chosen by the algorithm, and each algorithm has its own kind of key,
        // so an RS/ES header can never be checked against the HMAC secret.
        let key = match algorithm(token)? {
            Algorithm::HS256 => self.hs256.as_ref().ok_or(TokenError::NoKey)?,
            other => return Err(TokenError::Algorithm(format!("{other:?}"))),
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)?;
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

    #[test]
    fn a_supabase_token_names_its_user_and_email() {
        let user = tokens(None).verify(&sign(supabase("4d1c-uuid"), SECRET)).unwrap();
        assert_eq!(user, User { id: "4d1c-uuid".into(), email: Some("a@b.co".into()) });
        assert_eq!(user.display_name(), "a@b.co");
    }

    #[test]
    fn time_audience_issuer_and_subject_are_checked() {
        let t = tokens(None);
        let with = |patch: Value| {
            let mut claims = supabase("u");
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    claims.as_object_mut().unwrap().remove(k);
                } else {
                    claims[k] = v.clone();
                }
            }
            t.verify(&sign(claims, SECRET))
        };
        assert_eq!(with(json!({ "exp": now() - 31 })), Err(TokenError::Expired));
        assert!(with(json!({ "exp": now() - 10 })).is_ok(), "within the leeway");
        assert_eq!(with(json!({ "exp": null })), Err(TokenError::Claim("exp".into())));
        assert_eq!(with(json!({ "exp": 1e308 })), Err(TokenError::Claim("exp".into())));
        // A NumericDate may have fractional seconds (RFC 7519 §2); the fuzzer's jwt target
        // assumed otherwise.
        assert!(with(json!({ "exp": now() as f64 + 3600.5 })).is_ok());
        assert_eq!(with(json!({ "exp": now() as f64 - 60.5 })), Err(TokenError::Expired));
        assert_eq!(with(json!({ "nbf": now() + 120 })), Err(TokenError::NotYetValid));
        assert!(with(json!({ "nbf": now() + 10 })).is_ok(), "within the leeway");
        assert_eq!(with(json!({ "aud": "service_role" })), Err(TokenError::Audience));
        assert_eq!(with(json!({ "aud": null })), Err(TokenError::Claim("aud".into())));
        assert_eq!(with(json!({ "sub": "   " })), Err(TokenError::NoSubject));
        assert!(matches!(with(json!({ "sub": "x".repeat(10_000) })), Err(TokenError::BadSubject(_))));
        assert!(matches!(with(json!({ "sub": "line\nbreak" })), Err(TokenError::BadSubject(_))));
        assert_eq!(with(json!({ "email": "not an address\u{0}" })).unwrap().email, None);

        let issued = tokens(Some("https://x.supabase.co/auth/v1"));
        let mut claims = supabase("u");
        assert_eq!(issued.verify(&sign(claims.clone(), SECRET)), Err(TokenError::Claim("iss".into())));
        claims["iss"] = json!("https://evil.example");
        assert_eq!(issued.verify(&sign(claims.clone(), SECRET)), Err(TokenError::Issuer));
        claims["iss"] = json!("https://x.supabase.co/auth/v1");
        assert!(issued.verify(&sign(claims, SECRET)).is_ok());
    }

    #[test]
    fn forged_unsigned_and_confused_tokens_are_refused() {
        let t = tokens(None);
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = supabase("u");
        assert_eq!(t.verify(&sign(claims.clone(), "another-secret-of-at-least-32-bytes")), Err(TokenError::Signature));
        let none = format!("{}.{}.", b64(json!({ "alg": "none" })), b64(claims.clone()));
        assert_eq!(t.verify(&none), Err(TokenError::Malformed));
        let none_caps = format!("{}.{}.", b64(json!({ "alg": "None" })), b64(claims.clone()));
        assert_eq!(t.verify(&none_caps), Err(TokenError::Malformed));
        // An RS256 header over an HMAC made with the secret: the classic confusion.
        let hs = sign(claims.clone(), SECRET);
        let signature = hs.rsplit('.').next().unwrap();
        let confused = format!("{}.{}.{signature}", b64(json!({ "alg": "RS256", "typ": "JWT" })), b64(claims.clone()));
        assert_eq!(t.verify(&confused), Err(TokenError::Algorithm("RS256".into())));
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(t.verify(&hs512), Err(TokenError::Algorithm("HS512".into())));
        for junk in ["", "a.b", "a.b.c.d", "....", "\u{0}"] {
            assert!(t.verify(junk).is_err(), "{junk:?}");
        }
        let unconfigured =
            UserTokens::new(&TokenSettings { hs256_secret: None, audience: DEFAULT_AUDIENCE.into(), issuer: None });
        assert!(!unconfigured.configured());
        assert_eq!(unconfigured.verify(&hs), Err(TokenError::NoKey));
    }
}
