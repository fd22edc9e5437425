//! Scanner API keys: issued once, listed without their secret, revoked.

use async_graphql::{Context, ID, InputObject, Object, Result};
use chrono::{DateTime, Utc};

use super::accounts::require_role;
use super::error::ApiError;
use super::types::{ApiKey, CreatedApiKey, ScannerHeartbeat};
use super::{parse_id, principal, state};
use crate::auth::{ApiKeySecret, Principal};
use crate::domain::{Role, Text};
use crate::store::Heartbeat;

#[derive(Default)]
pub struct ApiKeysQuery;

#[Object]
impl ApiKeysQuery {
    /// API keys: all of them for an admin, your own for an organiser.
    async fn api_keys(&self, ctx: &Context<'_>) -> Result<Vec<ApiKey>> {
        let me = require_role(ctx, &[Role::Admin, Role::Organizer])?;
        let by = (me.role != Role::Admin).then_some(me.id);
        Ok(state(ctx)?.store.api_keys().list(by).await?.into_iter().map(ApiKey).collect())
    }
}

/// What a scanner reports about itself.
#[derive(InputObject)]
pub struct ScannerHeartbeatInput {
    /// The scanner software's version.
    pub version: String,
    /// Sightings waiting in its outbox.
    pub outbox_depth: i32,
    /// Its last successful upload, by its clock.
    pub last_upload_at: Option<DateTime<Utc>>,
    /// Its clock now, to spot skew.
    pub clock: DateTime<Utc>,
}

#[derive(Default)]
pub struct ApiKeysMutation;

#[Object]
impl ApiKeysMutation {
    /// Issues a key for a scanner. The secret is in the result and is never
    /// shown again. `scopes` lists the event ids the key may report for:
    /// without it, an admin's key covers every event and an organiser's
    /// covers every event they run.
    async fn create_api_key(&self, ctx: &Context<'_>, name: String, scopes: Option<Vec<ID>>) -> Result<CreatedApiKey> {
        let me = require_role(ctx, &[Role::Admin, Role::Organizer])?;
        let name = Text::parse("name", &name, 200)?.into_inner();
        let st = state(ctx)?;
        let mut events = Vec::new();
        for id in scopes.unwrap_or_default() {
            let id = parse_id("event", &id)?;
            let event = st.store.events().get(id).await?.ok_or_else(|| ApiError::not_found("event in scopes"))?;
            if me.role != Role::Admin && event.organizer_id != me.id {
                return Err(ApiError::Forbidden("a key can only be scoped to events you organize".into()).into());
            }
            if !events.contains(&id) {
                events.push(id);
            }
        }
        let all_events = me.role == Role::Admin && events.is_empty();
        let secret = ApiKeySecret::generate();
        let key = st
            .store
            .api_keys()
            .create(name, secret.display_prefix(), secret.hash(), all_events, events, Some(me.id), Utc::now())
            .await?;
        Ok(CreatedApiKey { api_key: ApiKey(key), secret: secret.expose().to_owned() })
    }

    /// A scanner reports its health: version, outbox depth, last upload and
    /// clock. API keys only; shown on `apiKeys { heartbeat }`.
    async fn scanner_heartbeat(&self, ctx: &Context<'_>, input: ScannerHeartbeatInput) -> Result<ScannerHeartbeat> {
        let Principal::Scanner { key, .. } = principal(ctx)? else {
            return Err(ApiError::Forbidden("heartbeats are sent with a scanner's API key".into()).into());
        };
        let version = Text::parse("version", &input.version, 64)?.into_inner();
        if input.outbox_depth < 0 {
            return Err(ApiError::validation("outboxDepth must not be negative").into());
        }
        let now = Utc::now();
        let beat = Heartbeat {
            at: now,
            version,
            outbox_depth: i64::from(input.outbox_depth),
            last_upload_at: input.last_upload_at,
            clock_skew_ms: (input.clock - now).num_milliseconds(),
        };
        state(ctx)?.store.api_keys().heartbeat(key.id, &beat).await?;
        Ok(ScannerHeartbeat(beat))
    }

    /// Revokes a key; requests with it fail from now on. An admin, or the
    /// organiser who made it.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> Result<ApiKey> {
        let me = require_role(ctx, &[Role::Admin, Role::Organizer])?;
        let id = parse_id("API key", &id)?;
        let keys = state(ctx)?.store.api_keys();
        let key = keys.get(id).await?.ok_or_else(|| ApiError::not_found("API key"))?;
        if me.role != Role::Admin && key.created_by != Some(me.id) {
            return Err(ApiError::forbidden().into());
        }
        let key = keys.revoke(id, Utc::now()).await?.ok_or_else(|| ApiError::not_found("API key"))?;
        // Live sockets opened with this key close now, not at their next check.
        state(ctx)?.live.key_revoked(id);
        Ok(ApiKey(key))
    }
}
