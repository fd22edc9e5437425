//! GraphQL views of scanners' API keys: the key without its secret, the
//! one-time secret, and what a scanner last reported in its heartbeat.

use async_graphql::{ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store;

/// A scanner's API key, without its secret.
pub struct ApiKey(pub store::ApiKey);

#[Object]
impl ApiKey {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The first characters of the secret, to tell keys apart.
    async fn prefix(&self) -> &str {
        &self.0.prefix
    }

    /// Whether the key may report for every event.
    async fn all_events(&self) -> bool {
        self.0.all_events
    }

    /// The events the key is scoped to. Empty with `allEvents: false` means
    /// every event run by the organiser who made the key.
    async fn event_ids(&self) -> Vec<ID> {
        self.0.events.iter().map(|e| ID(e.to_string())).collect()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When the key last authenticated a request (updated at most once a minute).
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at
    }

    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }

    async fn revoked(&self) -> bool {
        self.0.revoked_at.is_some()
    }

    /// When this scanner's last sighting batch was applied.
    async fn last_batch_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_batch_at
    }

    /// The batchId of that batch.
    async fn last_batch_id(&self) -> Option<&str> {
        self.0.last_batch_id.as_deref()
    }

    /// Sightings this scanner reported of identifiers that belong to nobody.
    async fn unknown_devices(&self) -> i64 {
        self.0.unknown_devices
    }

    /// The scanner's last heartbeat, if it sent one.
    async fn heartbeat(&self) -> Option<ScannerHeartbeat> {
        self.0.heartbeat.clone().map(ScannerHeartbeat)
    }
}

/// What a scanner last reported about itself.
pub struct ScannerHeartbeat(pub store::Heartbeat);

#[Object]
impl ScannerHeartbeat {
    /// When the server received it.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }

    async fn version(&self) -> &str {
        &self.0.version
    }

    /// Sightings waiting in the scanner's outbox.
    async fn outbox_depth(&self) -> i64 {
        self.0.outbox_depth
    }

    /// The scanner's last successful upload, by its clock.
    async fn last_upload_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_upload_at
    }

    /// The scanner's clock minus the server's, in milliseconds (network delay included).
    async fn clock_skew_ms(&self) -> i64 {
        self.0.clock_skew_ms
    }

    /// The scanner's stable identity, which survives key rotation.
    async fn scanner_id(&self) -> Option<Uuid> {
        self.0.scanner_id
    }

    /// Its radio, storage and clock, as it reported them.
    async fn health(&self) -> Option<ScannerHealth> {
        self.0.health.clone().map(ScannerHealth::from)
    }
}

/// A scanner's report on its radio, storage and clock.
#[derive(SimpleObject)]
pub struct ScannerHealth {
    /// BLE advertisements heard over the last minute: 0 with devices around means a dead radio.
    pub adverts_per_minute: Option<i64>,
    /// Distinct devices heard over the last minute.
    pub devices_per_minute: Option<i64>,
    /// BLE scan sessions restarted (watchdog or error) since the scanner started.
    pub ble_restarts: Option<i64>,
    /// The Bluetooth adapter's last known state.
    pub adapter_state: Option<String>,
    /// Batches parked as dead in its outbox (refused, or failing for hours).
    pub dead_batches: Option<i64>,
    /// Sightings in those batches.
    pub dead_sightings: Option<i64>,
    /// Sightings held in memory because its outbox refuses writes (disk full).
    pub held_in_memory: Option<i64>,
    /// Sightings dropped, weakest first, while its outbox refused writes.
    pub dropped_sightings: Option<i64>,
    /// Free disk space for its outbox, in MB.
    pub free_disk_mb: Option<i64>,
    /// What it knows of its clock: UNCHECKED, WRONG, SYNCED or CORRECTED.
    pub clock_state: Option<String>,
}

impl From<store::ScannerHealth> for ScannerHealth {
    fn from(h: store::ScannerHealth) -> Self {
        Self {
            adverts_per_minute: h.adverts_per_minute,
            devices_per_minute: h.devices_per_minute,
            ble_restarts: h.ble_restarts,
            adapter_state: h.adapter_state,
            dead_batches: h.dead_batches,
            dead_sightings: h.dead_sightings,
            held_in_memory: h.held_in_memory,
            dropped_sightings: h.dropped_sightings,
            free_disk_mb: h.free_disk_mb,
            clock_state: h.clock_state,
        }
    }
}

/// A new API key with its secret. The secret is shown only here, once.
#[derive(SimpleObject)]
pub struct CreatedApiKey {
    pub api_key: ApiKey,
    /// Send as `Authorization: ApiKey <secret>` or `x-api-key: <secret>`.
    pub secret: String,
}
