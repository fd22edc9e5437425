//! JSON Web Tokens for people (dashboards, the playground, mobile apps).
//!
//! HS256 only: the algorithm is pinned on verification, so a token signed
//! with `none` or an asymmetric algorithm is refused. `exp`, `iss` and `aud`
//! are required and checked; `sub` is the user id.

use std::sync::Arc;

use chrono::{Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AuthError;
use crate::domain::Role;

/// The issuer and audience we put in, and demand of, every token.
pub const ISSUER: &str = "rollcall";
pub const AUDIENCE: &str = "rollcall";
/// A shorter secret makes HS256 guessable offline.
pub const MIN_SECRET_LEN: usize = 32;

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: Uuid,
    /// The role when the token was issued; the server re-reads the user on
    /// every request, so a later demotion takes effect at once.
    pub role: String,
    pub iss: String,
    pub aud: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// The user's session generation when it was issued (absent in tokens
    /// from before there were generations: 0).
    #[serde(default)]
    pub ver: i64,
}

/// Signing and verification keys made from one secret. `Debug` is redacted.
/// A cheap handle: every request and live socket holds a clone of the
/// application state, and the keys themselves are some 370 bytes.
#[derive(Clone)]
pub struct JwtKeys(Arc<Keys>);

#[derive(Clone)]
struct Keys {
    /// Signs new tokens.
    encoding: EncodingKey,
    /// Verifies presented tokens.
    decoding: DecodingKey,
    /// Verifies tokens signed before a secret rotation.
    previous: Option<DecodingKey>,
    /// The checks every token must pass (algorithm, exp, iss, aud).
    validation: Validation,
    /// How long issued tokens live.
    ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys").field("ttl", &self.0.ttl).finish_non_exhaustive()
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Result<Self, AuthError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthError::Config(format!(
                "the JWT secret must be at least {MIN_SECRET_LEN} bytes (got {})",
                secret.len()
            )));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Ok(Self(Arc::new(Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            previous: None,
            validation,
            ttl,
        })))
    }

    /// Issues a token for `user` in session generation `ver`; returns it with its expiry.
    pub fn issue(&self, user: Uuid, role: Role, ver: i64) -> Result<(String, chrono::DateTime<Utc>), AuthError> {
        let now = Utc::now();
        let exp = now + self.0.ttl;
        let claims = Claims {
            sub: user,
            role: role.as_str().to_owned(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
            ver,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0.encoding)
            .map_err(|_| AuthError::Config("cannot sign token".into()))?;
        Ok((token, exp))
    }

    /// These keys, also accepting tokens signed with `previous` (the secret
    /// before a rotation). New tokens are still signed with the current one.
    pub fn also_accepting(self, previous: &[u8]) -> Result<Self, AuthError> {
        if previous.len() < MIN_SECRET_LEN {
            return Err(AuthError::Config(format!("the previous JWT secret must be at least {MIN_SECRET_LEN} bytes")));
        }
        let mut keys = Arc::unwrap_or_clone(self.0);
        keys.previous = Some(DecodingKey::from_secret(previous));
        Ok(Self(Arc::new(keys)))
    }

    /// Verifies a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let decode = |key: &DecodingKey| jsonwebtoken::decode::<Claims>(token, key, &self.0.validation);
        let result = match (decode(&self.0.decoding), &self.0.previous) {
            (Err(e), Some(previous)) if *e.kind() == ErrorKind::InvalidSignature => decode(previous),
            (result, _) => result,
        };
        result.map(|data| data.claims).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::ExpiredToken,
            _ => AuthError::InvalidToken,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&[7u8; 32], Duration::hours(1)).unwrap()
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(JwtKeys::new(b"too short", Duration::hours(1)).is_err());
    }

    #[test]
    fn issued_tokens_verify() {
        let id = Uuid::new_v4();
        let (token, _) = keys().issue(id, Role::Organizer, 0).unwrap();
        let claims = keys().verify(&token).unwrap();
        assert_eq!(claims.sub, id);
        assert_eq!(claims.role, "ORGANIZER");
    }

    #[test]
    fn tokens_from_another_secret_are_refused() {
        let other = JwtKeys::new(&[8u8; 32], Duration::hours(1)).unwrap();
        let (token, _) = other.issue(Uuid::new_v4(), Role::Admin, 0).unwrap();
        assert!(matches!(keys().verify(&token), Err(AuthError::InvalidToken)));
    }

    #[test]
    fn tokens_of_the_previous_secret_verify_after_a_rotation() {
        let old = JwtKeys::new(&[8u8; 32], Duration::hours(1)).unwrap();
        let (token, _) = old.issue(Uuid::new_v4(), Role::Admin, 0).unwrap();
        let rotated = keys().also_accepting(&[8u8; 32]).unwrap();
        assert!(rotated.verify(&token).is_ok());
        let (fresh, _) = rotated.issue(Uuid::new_v4(), Role::Admin, 0).unwrap();
        assert!(keys().verify(&fresh).is_ok(), "new tokens are signed with the current secret");
        assert!(old.verify(&fresh).is_err());
        assert!(keys().also_accepting(b"short").is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let k = JwtKeys::new(&[7u8; 32], Duration::hours(-2)).unwrap();
        let (token, _) = k.issue(Uuid::new_v4(), Role::Admin, 0).unwrap();
        assert!(matches!(keys().verify(&token), Err(AuthError::ExpiredToken)));
    }
}
