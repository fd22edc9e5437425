//! Who is calling, and how we know: passwords (argon2), JWTs for people,
//! API keys for scanners, and the [`Principal`] every request carries.

mod api_key;
mod gate;
mod jwt;
mod password;
mod principal;

pub use api_key::ApiKeySecret;
pub use gate::{LoginGate, Refused};
pub use jwt::{Claims, JwtKeys};
pub use password::{burn_verify_time, hash_password, verify_password};
pub use principal::{Credential, Principal, ScannerScope};

/// Authentication failures. Messages are safe to show to clients; they never
/// say *why* a token failed beyond what helps an honest client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No usable credential was presented.
    #[error("authentication required")]
    Missing,
    /// The token is malformed, forged, of the wrong algorithm or audience.
    #[error("invalid token")]
    InvalidToken,
    /// The token was valid once but has expired.
    #[error("token expired")]
    ExpiredToken,
    /// The token's session was ended (log-out everywhere, password change).
    #[error("this session has ended: log in again")]
    EndedSession,
    /// The API key is unknown or malformed.
    #[error("invalid API key")]
    InvalidApiKey,
    /// The API key was revoked.
    #[error("API key revoked")]
    RevokedApiKey,
    /// The person who made the API key was deleted or lost the role it needs.
    #[error("API key no longer valid: its creator's account was removed or lost the right to it")]
    OrphanedApiKey,
    /// E-mail and password do not match an account.
    #[error("invalid e-mail or password")]
    BadLogin,
    /// The JWT secret is unusable (e.g. too short).
    #[error("{0}")]
    Config(String),
    /// Hashing failed in a way that is not the caller's fault.
    #[error("password hashing failed")]
    Hashing,
    /// The store failed while checking a credential.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
