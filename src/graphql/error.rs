//! The errors the API shows, each with a stable `extensions.code`.
//!
//! Every layer's error converts into [`ApiError`], which keeps what the client
//! may see apart from what goes to the log (as dropshot does): an internal
//! error is logged with its whole cause chain and reaches the client only as
//! "internal error".

use async_graphql::ErrorExtensions;

use crate::auth::AuthError;
use crate::domain::DomainError;
use crate::store::StoreError;

/// An error as the API reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    RateLimited(String),
    /// The server cannot serve this now (stopping, or its database is
    /// away); the client retries.
    #[error("{0}")]
    Unavailable(String),
    /// Never shown: logged, then reported as "internal error".
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::Validation(_) => "VALIDATION",
            ApiError::RateLimited(_) => "RATE_LIMITED",
            ApiError::Unavailable(_) => "UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL",
        }
    }

    pub fn forbidden() -> Self {
        ApiError::Forbidden("you are not allowed to do this".into())
    }

    pub fn unauthenticated() -> Self {
        ApiError::Unauthenticated("authentication required: log in, or send an API key".into())
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    pub fn validation(msg: impl Into<String>) -> Self {
        ApiError::Validation(msg.into())
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(err: ApiError) -> Self {
        if let ApiError::Internal(cause) = &err {
            tracing::error!(error = ?cause, "internal error");
        }
        let code = err.code();
        async_graphql::Error::new(err.to_string()).extend_with(|_, e| e.set("code", code))
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict { index } => ApiError::Conflict(
                match index.as_str() {
                    "user_email" => "an account with this e-mail already exists",
                    "user_ble_uuid" => "this bleUuid already belongs to another user",
                    "device_identifier" => "this device identifier is already in use",
                    "identifier" => "this identifier already belongs to someone",
                    "registration_user_event" => "this user is already registered for this event",
                    _ => "this record already exists",
                }
                .into(),
            ),
            StoreError::Unavailable(_) => ApiError::Unavailable("the database is unavailable; retry shortly".into()),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Missing => ApiError::unauthenticated(),
            AuthError::Store(e) => e.into(),
            AuthError::Config(_) | AuthError::Hashing => ApiError::Internal(err.into()),
            other => ApiError::Unauthenticated(other.to_string()),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::Invalid(m) => ApiError::Validation(m),
            DomainError::Conflict(m) => ApiError::Conflict(m),
        }
    }
}

macro_rules! into_graphql_error {
    ($($t:ty),*) => {$(
        impl From<$t> for async_graphql::Error {
            fn from(err: $t) -> Self {
                ApiError::from(err).into()
            }
        }
    )*};
}
into_graphql_error!(StoreError, AuthError, DomainError);
