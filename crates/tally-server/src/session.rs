//! User sessions: HS256 JWTs as Supabase issues them (`sub` is the user id, `exp` is
//! checked). With `AUTH_JWT_SECRET` they are the host app's tokens; without it (dev
//! mode) tally signs its own for `/dev/login`, with a secret kept in the database.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The cookie the billing page keeps the token in.
pub const COOKIE: &str = "tally_session";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a JWT")]
    Malformed,
    #[error("only HS256 tokens are accepted")]
    Algorithm,
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token names no user")]
    NoSubject,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<f64>,
}

/// Verifies (and in dev mode, issues) session tokens.
#[derive(Clone)]
pub struct Sessions {
    key: HmacSha256,
}

impl Sessions {
    pub fn new(secret: &str) -> Sessions {
        Sessions { key: HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length") }
    }

    /// The user a token names, if it is ours, HS256, unexpired and has a `sub`.
    pub fn verify(&self, token: &str, now: i64) -> Result<String, TokenError> {
        let (signing_input, signature) = token.trim().rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        if payload.contains('.') {
            return Err(TokenError::Malformed);
        }
        let header: Header = decode_json(header)?;
        // Checked before the signature: "none" and the RS/ES family never get that far.
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm);
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.key.clone();
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&signature).map_err(|_| TokenError::Signature)?;
        let claims: Claims = decode_json(payload)?;
        match claims.exp {
            Some(exp) if exp > now as f64 => {}
            _ => return Err(TokenError::Expired),
        }
        claims.sub.filter(|s| !s.is_empty()).ok_or(TokenError::NoSubject)
    }

    /// A token for `user_id` valid until `exp` (unix seconds).
    pub fn issue(&self, user_id: &str, exp: i64) -> String {
        let header = URL_SAFE_NO_PAD.encode(json!({ "alg": "HS256", "typ": "JWT" }).to_string());
        let claims = URL_SAFE_NO_PAD.encode(json!({ "sub": user_id, "exp": exp, "role": "authenticated" }).to_string());
        let signing_input = format!("{header}.{claims}");
        let mut mac = self.key.clone();
        mac.update(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn forge(header: serde_json::Value, claims: serde_json::Value, secret: &str) -> String {
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn a_supabase_style_token_names_its_user() {
        let s = Sessions::new("secret");
        let token = forge(
            json!({"alg":"HS256","typ":"JWT"}),
            json!({"sub":"4d1c-uuid","exp":NOW + 60,"aud":"authenticated","role":"authenticated"}),
            "secret",
        );
        assert_eq!(s.verify(&token, NOW), Ok("4d1c-uuid".to_owned()));
        assert_eq!(s.verify(&s.issue("bob", NOW + 5), NOW), Ok("bob".to_owned()));
    }

    #[test]
    fn bad_tokens_are_refused() {
        let s = Sessions::new("secret");
        let claims = json!({"sub":"u","exp":NOW + 60});
        let expired = forge(json!({"alg":"HS256"}), json!({"sub":"u","exp":NOW - 1}), "secret");
        let no_exp = forge(json!({"alg":"HS256"}), json!({"sub":"u"}), "secret");
        let wrong_key = forge(json!({"alg":"HS256"}), claims.clone(), "other");
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(json!({"alg":"none"}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let hs512 = forge(json!({"alg":"HS512"}), claims.clone(), "secret");
        let no_sub = forge(json!({"alg":"HS256"}), json!({"exp":NOW + 60}), "secret");
        assert_eq!(s.verify(&expired, NOW), Err(TokenError::Expired));
        assert_eq!(s.verify(&no_exp, NOW), Err(TokenError::Expired));
        assert_eq!(s.verify(&wrong_key, NOW), Err(TokenError::Signature));
        assert_eq!(s.verify(&none, NOW), Err(TokenError::Algorithm));
        assert_eq!(s.verify(&hs512, NOW), Err(TokenError::Algorithm));
        assert_eq!(s.verify(&no_sub, NOW), Err(TokenError::NoSubject));
        assert_eq!(s.verify("a.b", NOW), Err(TokenError::Malformed));
        assert_eq!(s.verify("", NOW), Err(TokenError::Malformed));
    }
}
