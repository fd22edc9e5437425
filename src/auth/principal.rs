//! The caller of a request, resolved once from its credential.

use axum::http::{HeaderMap, header::AUTHORIZATION};
use chrono::{Duration, Utc};
use uuid::Uuid;

use super::{ApiKeySecret, AuthError, JwtKeys};
use crate::domain::Role;
use crate::store::{ApiKey, Event, SurrealStore, User};

/// How often at most `lastUsedAt` is written for one key, so that a busy
/// scanner does not turn every upload into an extra write.
const TOUCH_INTERVAL: Duration = Duration::seconds(60);

/// A credential as presented, before it is checked.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <jwt>`, or `authorization` in a WebSocket init.
    Bearer(String),
    /// `Authorization: ApiKey <key>`, `x-api-key`, or `apiKey` in a WebSocket init.
    ApiKey(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Bearer(_) => "Credential::Bearer(<redacted>)",
            Credential::ApiKey(_) => "Credential::ApiKey(<redacted>)",
        })
    }
}

impl Credential {
    /// Reads the credential from request headers. `Ok(None)` when there is
    /// none; an `Authorization` header of an unknown scheme is an error.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, AuthError> {
        if let Some(v) = headers.get(AUTHORIZATION) {
            let v = v.to_str().map_err(|_| AuthError::InvalidToken)?;
            return Self::from_authorization(v).map(Some);
        }
        if let Some(v) = headers.get("x-api-key") {
            let v = v.to_str().map_err(|_| AuthError::InvalidApiKey)?;
            return Ok(Some(Credential::ApiKey(v.trim().to_owned())));
        }
        Ok(None)
    }

    /// Parses an `Authorization` value: `Bearer <jwt>` or `ApiKey <key>`.
    pub fn from_authorization(value: &str) -> Result<Self, AuthError> {
        let (scheme, rest) = value.trim().split_once(' ').ok_or(AuthError::InvalidToken)?;
        let rest = rest.trim().to_owned();
        if scheme.eq_ignore_ascii_case("bearer") {
            Ok(Credential::Bearer(rest))
        } else if scheme.eq_ignore_ascii_case("apikey") {
            Ok(Credential::ApiKey(rest))
        } else {
            Err(AuthError::InvalidToken)
        }
    }
}

/// Which events a scanner key may see and report for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannerScope {
    /// Every event.
    pub all_events: bool,
    /// These events.
    pub events: Vec<Uuid>,
    /// Every event this organiser runs (keys an organiser made without a list).
    pub organizer: Option<Uuid>,
}

impl ScannerScope {
    pub fn of(key: &ApiKey) -> Self {
        Self {
            all_events: key.all_events,
            events: key.events.clone(),
            organizer: if key.all_events || !key.events.is_empty() { None } else { key.created_by },
        }
    }

    /// Whether `creator` may still hold `key`: an admin any key, an organiser
    /// one that is not for every event.
    pub fn creator_may_hold(key: &ApiKey, creator: &User) -> bool {
        match creator.role {
            Role::Admin => true,
            Role::Organizer => !key.all_events,
            Role::Attendee => false,
        }
    }

    pub fn covers(&self, event: &Event) -> bool {
        self.all_events || self.events.contains(&event.id) || self.organizer == Some(event.organizer_id)
    }
}

/// Who is making a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No credential was presented.
    Anonymous,
    /// A person, as currently stored (so role changes apply at once).
    User(Box<User>),
    /// A scanner, by its API key.
    Scanner {
        /// The key record (never the secret).
        key: Box<ApiKey>,
        /// What the key may see.
        scope: ScannerScope,
    },
}

impl Principal {
    /// Checks a credential. A presented credential that does not check out is
    /// an error, never a silent downgrade to anonymous.
    pub async fn authenticate(
        store: &SurrealStore,
        jwt: &JwtKeys,
        credential: Option<Credential>,
    ) -> Result<Self, AuthError> {
        match credential {
            None => Ok(Principal::Anonymous),
            Some(Credential::Bearer(token)) => {
                let claims = jwt.verify(&token)?;
                // A token for a deleted user is as good as forged.
                let user = store.users().get(claims.sub).await?.ok_or(AuthError::InvalidToken)?;
                // So is one from before the user logged out everywhere or changed password.
                if claims.ver != user.token_version {
                    return Err(AuthError::EndedSession);
                }
                Ok(Principal::User(Box::new(user)))
            }
            Some(Credential::ApiKey(raw)) => {
                let secret = ApiKeySecret::parse(&raw).ok_or(AuthError::InvalidApiKey)?;
                let key = store.api_keys().by_hash(&secret.hash()).await?.ok_or(AuthError::InvalidApiKey)?;
                if !secret.matches(&key.key_hash) {
                    return Err(AuthError::InvalidApiKey);
                }
                if key.revoked_at.is_some() {
                    return Err(AuthError::RevokedApiKey);
                }
                // A key acts with its creator's rights, so it lapses with them:
                // checked here rather than by revoking on demotion, so that every
                // path (API, CLI, another instance) is covered by one rule.
                if let Some(creator) = key.created_by {
                    let creator = store.users().get(creator).await?;
                    if !creator.is_some_and(|c| ScannerScope::creator_may_hold(&key, &c)) {
                        return Err(AuthError::OrphanedApiKey);
                    }
                }
                let now = Utc::now();
                if key.last_used_at.is_none_or(|t| now - t > TOUCH_INTERVAL) {
                    // Bookkeeping, off the request's path: a write that loses a
                    // race with a concurrent batch must never refuse the key.
                    let (store, id) = (store.clone(), key.id);
                    tokio::spawn(async move {
                        if let Err(e) = store.api_keys().touch(id, now).await {
                            tracing::debug!(error = %e, key = %id, "could not record the key's last use");
                        }
                    });
                }
                let scope = ScannerScope::of(&key);
                Ok(Principal::Scanner { key: Box::new(key), scope })
            }
        }
    }

    /// The signed-in person, if any.
    pub fn user(&self) -> Option<&User> {
        match self {
            Principal::User(u) => Some(u),
            _ => None,
        }
    }

    /// The person's role, if a person is signed in.
    pub fn role(&self) -> Option<Role> {
        self.user().map(|u| u.role)
    }

    /// Whether this principal may manage `event` (its organiser, or an ADMIN).
    pub fn manages(&self, event: &Event) -> bool {
        match self.user() {
            Some(u) => u.role == Role::Admin || (u.role == Role::Organizer && u.id == event.organizer_id),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_schemes() {
        assert_eq!(Credential::from_authorization("Bearer abc").unwrap(), Credential::Bearer("abc".into()));
        assert_eq!(Credential::from_authorization("ApiKey rck_1").unwrap(), Credential::ApiKey("rck_1".into()));
        assert!(Credential::from_authorization("Basic dXNlcjpwYXNz").is_err());
        assert!(Credential::from_authorization("garbage").is_err());
    }

    /// The key's `lastUsedAt` is bookkeeping: with every write to the key
    /// refused by the database, the key still authenticates.
    #[tokio::test]
    async fn a_failing_last_use_write_does_not_refuse_the_key() {
        let store = SurrealStore::memory().await.unwrap();
        let secret = ApiKeySecret::generate();
        let key = store
            .api_keys()
            .create("door".into(), secret.display_prefix(), secret.hash(), true, vec![], None, Utc::now())
            .await
            .unwrap();
        assert!(key.last_used_at.is_none());
        store
            .raw()
            .query(
                "DEFINE EVENT no_writes ON api_key WHEN $event = 'UPDATE' THEN { THROW 'the key cannot be written' }",
            )
            .await
            .unwrap()
            .check()
            .unwrap();
        assert!(store.api_keys().touch(key.id, Utc::now()).await.is_err(), "the database refuses the write");
        let jwt = JwtKeys::new(&[7u8; 32], Duration::hours(1)).unwrap();
        for _ in 0..2 {
            let principal = Principal::authenticate(&store, &jwt, Some(Credential::ApiKey(secret.expose().into())))
                .await
                .expect("the key authenticates whatever its bookkeeping write does");
            assert!(matches!(principal, Principal::Scanner { .. }));
        }
        // Refused: the key still has no last use.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let stored = store.api_keys().by_hash(&secret.hash()).await.unwrap().unwrap();
        assert!(stored.last_used_at.is_none(), "the refused write did not happen");
    }

    #[test]
    fn x_api_key_header_is_read() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "rck_abc".parse().unwrap());
        assert_eq!(Credential::from_headers(&h).unwrap(), Some(Credential::ApiKey("rck_abc".into())));
        assert_eq!(Credential::from_headers(&HeaderMap::new()).unwrap(), None);
    }
}
