//! Who a token names (CONTRACT §2). Two kinds of token, kept apart:
//! - the host app's user tokens (Supabase-compatible JWTs: `sub` is the user id), sent
//!   as `Authorization: Bearer`, checked by [`UserTokens`]: HS256 with a shared secret
//!   and/or ES256 and RS256 with the keys of a JWKS document ([`Jwks`]);
//! - tally's own sessions, in the billing page's cookie, signed with a key only tally
//!   holds and checked by [`Sessions`], so that no host-app token ever sits in a cookie
//!   or a URL.
//!
//! Signatures, algorithms and time claims are jsonwebtoken's; what is tally's is which
//! algorithms, audiences and issuers count, and what a user id may look like.

pub mod jwks;
mod sessions;
#[cfg(test)]
mod test_keys;
mod user_tokens;

pub use jwks::{FetchError, Jwks, JwksError, JwksTimings, KeySet, KeySource};
pub use sessions::{SESSION_AUDIENCE, Sessions};
pub use user_tokens::{DEFAULT_AUDIENCE, TokenSettings, UserTokens};

/// `exp` and `nbf` are allowed this much clock skew.
pub const LEEWAY_SECS: u64 = 30;

/// A signed-in user: the id tally keys everything by, and the email to show when the
/// token had one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: Option<String>,
}

impl User {
    /// How the billing page names the account: the email, or else the id.
    pub fn display_name(&self) -> &str {
        self.email.as_deref().unwrap_or(&self.id)
    }
}

/// Why a token was refused. Said in logs, never to the caller (who gets one 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a JWT")]
    Malformed,
    #[error("algorithm {0} is not accepted here")]
    Algorithm(String),
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("wrong audience")]
    Audience,
    #[error("wrong issuer")]
    Issuer,
    #[error("claim {0} is missing or malformed")]
    Claim(String),
    #[error("token names no user")]
    NoSubject,
    #[error("subject is not a user id: {0}")]
    BadSubject(String),
    #[error("no key is configured for this kind of token")]
    NoKey,
    #[error("the header names no kid, which a JWKS key needs")]
    NoKeyId,
    // `{0:?}`: the kid is the caller's, and is logged escaped.
    #[error("no key {0:?} in the JWKS")]
    UnknownKey(String),
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(e: jsonwebtoken::errors::Error) -> TokenError {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.into_kind() {
            K::InvalidSignature => TokenError::Signature,
            K::ExpiredSignature => TokenError::Expired,
            K::ImmatureSignature => TokenError::NotYetValid,
            K::InvalidAudience => TokenError::Audience,
            K::InvalidIssuer => TokenError::Issuer,
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm | K::MissingAlgorithm => {
                TokenError::Algorithm("(refused by the validation)".to_owned())
            }
            K::MissingRequiredClaim(claim) | K::InvalidClaimFormat(claim) => TokenError::Claim(claim),
            _ => TokenError::Malformed,
        }
    }
}

/// The claims tally reads; the rest of a token is ignored.
#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    email: Option<String>,
}

impl Claims {
    /// The user the claims name, if `sub` is a user id within the input limits.
    fn into_user(self) -> Result<User, TokenError> {
        if self.sub.trim().is_empty() {
            return Err(TokenError::NoSubject);
        }
        tally_core::input::check_id("sub", &self.sub).map_err(|e| TokenError::BadSubject(e.problem))?;
        // An email is only shown; one that is odd is dropped rather than shown.
        let email = self.email.filter(|e| e.len() <= 320 && !e.chars().any(char::is_control) && e.contains('@'));
        Ok(User { id: self.sub, email })
    }
}

/// A token's header, read before any key is chosen.
fn header(token: &str) -> Result<jsonwebtoken::Header, TokenError> {
    // `none` and names jsonwebtoken does not know fail here, as a header that does not parse.
    jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)
}

/// The rules both kinds of token are held to: `algorithm` only, `exp` required and `nbf`
/// honoured with [`LEEWAY_SECS`], `sub` required, `aud` required to be `audience`, and
/// `iss` to be `issuer` when there is one.
fn validation(algorithm: jsonwebtoken::Algorithm, audience: &str, issuer: Option<&str>) -> jsonwebtoken::Validation {
    let mut validation = jsonwebtoken::Validation::new(algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_audience(&[audience]);
    let mut required = vec!["exp", "sub", "aud"];
    if let Some(issuer) = issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}
