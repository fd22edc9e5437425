//! Scanner API keys: issued once, listed without their secret, revoked.

use async_graphql::{Context, ID, InputObject, Object, Result};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::accounts::require_role;
use super::error::ApiError;
use super::key_types::{ApiKey, CreatedApiKey, ScannerHeartbeat};
use super::{parse_id, principal, state};
use crate::auth::{ApiKeySecret, Principal};
use crate::domain::{Role, Text};
use crate::store::{Heartbeat, ScannerHealth};

#[derive(Default)]
pub struct ApiKeysQuery;

#[Object]
impl ApiKeysQuery {
    /// API keys: all of them for an admin, your own for an organiser.
    #[graphql(complexity = "super::list_cost(50, child_complexity)")]
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
    /// Its stable identity (kept on the scanner; it survives key rotation).
    pub scanner_id: Option<Uuid>,
    /// Its radio, storage and clock.
    pub health: Option<ScannerHealthInput>,
}

/// What a scanner reports about its radio, storage and clock; every field optional.
#[derive(InputObject)]
pub struct ScannerHealthInput {
    /// BLE advertisements heard over the last minute.
    pub adverts_per_minute: Option<i32>,
    /// Distinct devices heard over the last minute.
    pub devices_per_minute: Option<i32>,
    /// BLE scan sessions restarted (watchdog or error) since the scanner started.
    pub ble_restarts: Option<i32>,
    /// The Bluetooth adapter's last known state.
    pub adapter_state: Option<String>,
    /// Batches parked as dead in its outbox.
    pub dead_batches: Option<i32>,
    /// Sightings in those batches.
    pub dead_sightings: Option<i32>,
    /// Sightings held in memory because its outbox refuses writes (disk full).
    pub held_in_memory: Option<i32>,
    /// Sightings dropped, weakest first, while its outbox refused writes.
    pub dropped_sightings: Option<i32>,
    /// Free disk space for its outbox, in MB.
    pub free_disk_mb: Option<i32>,
    /// What it knows of its clock: UNCHECKED, WRONG, SYNCED or CORRECTED.
    pub clock_state: Option<String>,
}

impl ScannerHealthInput {
    /// Checks the report and turns it into what the store keeps.
    fn parse(self) -> Result<ScannerHealth, ApiError> {
        let count = |name: &str, v: Option<i32>| match v {
            Some(n) if n < 0 => Err(ApiError::validation(format!("health.{name} must not be negative"))),
            v => Ok(v.map(i64::from)),
        };
        let text = |name: &str, v: Option<String>| -> Result<Option<String>, ApiError> {
            v.map(|s| Text::parse(name, &s, 200).map(Text::into_inner)).transpose().map_err(Into::into)
        };
        Ok(ScannerHealth {
            adverts_per_minute: count("advertsPerMinute", self.adverts_per_minute)?,
            devices_per_minute: count("devicesPerMinute", self.devices_per_minute)?,
            ble_restarts: count("bleRestarts", self.ble_restarts)?,
            adapter_state: text("adapterState", self.adapter_state)?,
            dead_batches: count("deadBatches", self.dead_batches)?,
            dead_sightings: count("deadSightings", self.dead_sightings)?,
            held_in_memory: count("heldInMemory", self.held_in_memory)?,
            dropped_sightings: count("droppedSightings", self.dropped_sightings)?,
            free_disk_mb: count("freeDiskMb", self.free_disk_mb)?,
            clock_state: text("clockState", self.clock_state)?,
        })
    }
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

    /// A scanner reports its health: version, outbox depth, last upload,
    /// clock, its stable identity, and its radio, storage and clock state. API
    /// keys only; shown on `apiKeys { heartbeat }`.
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
            scanner_id: input.scanner_id,
            health: input.health.map(ScannerHealthInput::parse).transpose()?,
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

    /// Releases a scanner identity (a scanner's `scannerId`) from the owner
    /// it was bound to by its first batch, for a box handed to another
    /// organiser: the next batch sent with it, from any key, binds it anew.
    /// Its batch ids are kept, so a batch sent before is still answered as a
    /// replay. The owner, or an admin.
    async fn release_scanner_identity(&self, ctx: &Context<'_>, id: Uuid) -> Result<bool> {
        let me = require_role(ctx, &[Role::Admin, Role::Organizer])?;
        let identities = state(ctx)?.store.scanner_identities();
        let not_bound = || {
            ApiError::NotFound(format!(
                "scanner identity {id} is not bound: no batch was uploaded with it, or it was released"
            ))
        };
        let owner = identities.owner(id).await?.ok_or_else(not_bound)?;
        if me.role != Role::Admin && owner != Some(me.id) {
            return Err(ApiError::forbidden().into());
        }
        if !identities.release(id, owner).await? {
            return Err(not_bound().into());
        }
        tracing::info!(identity = %id, by = %me.id, "released a scanner identity");
        Ok(true)
    }
}
