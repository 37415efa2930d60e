//! tally's own sessions: the billing page's cookie holds a token tally signed (HS256
//! with a key kept in its database, shared by every replica), never the host app's
//! token. Its audience is [`SESSION_AUDIENCE`], so it cannot pass for a user token,
//! nor a user token for it, even under one key.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;

use crate::{Claims, TokenError, User, header, validation};

/// The `aud` of tally's session tokens.
pub const SESSION_AUDIENCE: &str = "tally-session";

/// Issues and checks tally's session tokens.
#[derive(Clone)]
pub struct Sessions {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

#[derive(Serialize)]
struct SessionClaims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    aud: &'static str,
    iat: i64,
    exp: i64,
}

impl Sessions {
    /// Sessions signed with `key` (32 random bytes tally made, hex).
    pub fn new(key: &str) -> Sessions {
        let validation = validation(Algorithm::HS256, SESSION_AUDIENCE, None);
        Sessions {
            encoding: EncodingKey::from_secret(key.as_bytes()).expect("tally's session key is never empty"),
            decoding: DecodingKey::from_secret(key.as_bytes()).expect("tally's session key is never empty"),
            validation,
        }
    }

    /// A session for `user` from `now` until `exp` (unix seconds).
    pub fn issue(&self, user: &User, now: i64, exp: i64) -> String {
        let claims =
            SessionClaims { sub: &user.id, email: user.email.as_deref(), aud: SESSION_AUDIENCE, iat: now, exp };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// The user a session token names, if tally signed it and it has not expired.
    pub fn verify(&self, token: &str) -> Result<User, TokenError> {
        let token = token.trim();
        match header(token)?.alg {
            Algorithm::HS256 => {}
            other => return Err(TokenError::Algorithm(format!("{other:?}"))),
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims.into_user()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_AUDIENCE, TokenSettings, UserTokens};

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    #[test]
    fn a_session_names_its_user_until_it_expires() {
        let sessions = Sessions::new(KEY);
        let ada = User { id: "ada".into(), email: Some("ada@example.com".into()) };
        assert_eq!(sessions.verify(&sessions.issue(&ada, now(), now() + 60)), Ok(ada.clone()));
        assert_eq!(sessions.verify(&sessions.issue(&ada, now() - 120, now() - 60)), Err(TokenError::Expired));
        assert_eq!(
            Sessions::new("another key").verify(&sessions.issue(&ada, now(), now() + 60)),
            Err(TokenError::Signature)
        );
    }

    #[tokio::test]
    async fn sessions_and_user_tokens_never_pass_for_each_other() {
        let sessions = Sessions::new(KEY);
        let users = UserTokens::new(&TokenSettings {
            hs256_secret: Some(KEY.into()),
            audience: DEFAULT_AUDIENCE.into(),
            issuer: None,
        });
        let session = sessions.issue(&User { id: "u".into(), email: None }, now(), now() + 60);
        assert_eq!(users.verify(&session).await, Err(TokenError::Audience));
        let claims = serde_json::json!({ "sub": "u", "exp": now() + 60, "aud": DEFAULT_AUDIENCE });
        let user_token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(KEY.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(sessions.verify(&user_token), Err(TokenError::Audience));
    }
}
