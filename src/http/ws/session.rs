//! Who a socket speaks for: the credential of its `connection_init`, checked
//! then and again while it stays open.

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use super::protocol::Close;
use crate::auth::{AuthError, Credential, Principal};
use crate::state::AppState;

/// The signed-in side of a socket: who, until when, with what.
pub(super) struct Session {
    pub(super) principal: Principal,
    pub(super) credential: Option<Credential>,
    pub(super) expires: Option<Instant>,
    pub(super) key: Option<Uuid>,
}

impl Session {
    /// The user's or the key's id; `None` when anonymous.
    pub(super) fn principal_id(&self) -> Option<Uuid> {
        match &self.principal {
            Principal::User(u) => Some(u.id),
            Principal::Scanner { key, .. } => Some(key.id),
            Principal::Anonymous => None,
        }
    }

    /// Reads credentials from a `connection_init` payload:
    /// `{"authorization": "Bearer <jwt>"}` or `{"apiKey": "<key>"}`. None is
    /// refused unless the server allows anonymous sockets.
    pub(super) async fn open(app: &AppState, payload: Value) -> Result<Session, Close> {
        let field = |names: &[&str]| names.iter().find_map(|n| payload.get(*n).and_then(|v| v.as_str()));
        let credential = if let Some(auth) = field(&["authorization", "Authorization"]) {
            Some(Credential::from_authorization(auth).map_err(|e| Close::new(4403, format!("Forbidden: {e}")))?)
        } else {
            field(&["apiKey", "x-api-key"]).map(|k| Credential::ApiKey(k.to_owned()))
        };
        if credential.is_none() && !app.live_limits.allow_anonymous {
            return Err(Close::new(4403, "Forbidden: send a token (authorization) or an API key (apiKey)"));
        }
        let principal = match Principal::authenticate(&app.store, &app.jwt, credential.clone()).await {
            Ok(p) => p,
            Err(AuthError::Store(e)) => {
                tracing::error!(error = ?e, "credential check failed");
                return Err(Close::new(4500, "Internal error"));
            }
            Err(e) => return Err(Close::new(4403, format!("Forbidden: {e}"))),
        };
        let expires = match &credential {
            Some(Credential::Bearer(token)) => {
                let claims = app.jwt.verify(token).map_err(|e| Close::new(4403, format!("Forbidden: {e}")))?;
                let left = (claims.exp - Utc::now().timestamp()).max(0) as u64;
                Some(Instant::now() + Duration::from_secs(left))
            }
            _ => None,
        };
        let key = match &principal {
            Principal::Scanner { key, .. } => Some(key.id),
            _ => None,
        };
        Ok(Session { principal, credential, expires, key })
    }

    /// Checks the credential again (a deleted user, a revoked key, a
    /// demotion): the close to send, if the socket must end.
    pub(super) async fn recheck(&self, app: &AppState) -> Option<Close> {
        let credential = self.credential.clone()?;
        match Principal::authenticate(&app.store, &app.jwt, Some(credential)).await {
            // Subscriptions were authorised with the rights the socket had:
            // if those changed (a demotion, a narrower key), it must start over.
            Ok(principal) if same_rights(&principal, &self.principal) => None,
            Ok(_) => Some(Close::new(4403, "Forbidden: your rights changed; connect again")),
            Err(AuthError::Store(e)) => {
                tracing::warn!(error = ?e, "could not recheck a live socket's credential");
                None
            }
            Err(e) => Some(Close::new(4403, format!("Forbidden: {e}"))),
        }
    }
}

/// Whether two checks of one credential grant the same: the same role, or
/// the same key scope.
fn same_rights(a: &Principal, b: &Principal) -> bool {
    match (a, b) {
        (Principal::User(a), Principal::User(b)) => a.id == b.id && a.role == b.role,
        (Principal::Scanner { scope: a, .. }, Principal::Scanner { scope: b, .. }) => a == b,
        (Principal::Anonymous, Principal::Anonymous) => true,
        _ => false,
    }
}
