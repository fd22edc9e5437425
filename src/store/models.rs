//! The records the store reads and writes, and their typed, validated form.
//!
//! `*Row` types mirror the SurrealDB tables field for field; the public types
//! are what the rest of the server works with (UUID ids, enums, durations).
//! A row that does not convert is reported as `StoreError::Corrupt`.

use chrono::{DateTime, Duration, Utc};
use surrealdb::types::{RecordId, SurrealValue};
use uuid::Uuid;

use super::{StoreError, key_of};
use crate::domain::{AttendancePolicy, EventState, Role};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// An account.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// Argon2 PHC string; `None` for accounts that cannot log in (imported).
    pub password_hash: Option<String>,
    /// The identifier the user's phone advertises.
    pub ble_uuid: String,
    pub created_at: DateTime<Utc>,
    /// The session generation: tokens issued in an older one are refused.
    pub token_version: i64,
}

#[derive(Debug, Clone, SurrealValue)]
pub(crate) struct UserRow {
    pub id: RecordId,
    pub email: String,
    pub name: String,
    pub role: String,
    pub password_hash: Option<String>,
    pub ble_uuid: String,
    pub created_at: DateTime<Utc>,
    #[surreal(default)]
    pub token_version: Option<i64>,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(r: UserRow) -> Result<Self, StoreError> {
        Ok(User {
            id: key_of(&r.id)?,
            email: r.email,
            name: r.name,
            role: r.role.parse().map_err(corrupt)?,
            password_hash: r.password_hash,
            ble_uuid: r.ble_uuid,
            created_at: r.created_at,
            token_version: r.token_version.unwrap_or(0),
        })
    }
}

/// An extra identifier a user's device is known by.
#[derive(Debug, Clone)]
pub struct Device {
    pub user_id: Uuid,
    pub identifier: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, SurrealValue)]
pub(crate) struct DeviceRow {
    pub user: RecordId,
    pub identifier: String,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<DeviceRow> for Device {
    type Error = StoreError;
    fn try_from(r: DeviceRow) -> Result<Self, StoreError> {
        Ok(Device { user_id: key_of(&r.user)?, identifier: r.identifier, created_at: r.created_at })
    }
}

/// An event and its attendance policy.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub state: EventState,
    /// The user who runs it; with ADMINs, the only one who may manage it.
    pub organizer_id: Uuid,
    pub policy: AttendancePolicy,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, SurrealValue)]
pub(crate) struct EventRow {
    pub id: RecordId,
    pub name: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub state: String,
    pub organizer: RecordId,
    pub min_rssi: i64,
    pub departure_gap_secs: i64,
    pub grace_secs: i64,
    pub require_registration: bool,
    /// `STATIC`, `ROTATING` or `BOTH`; absent (BOTH) on older events.
    pub identity: Option<String>,
    /// Whether phone reports count; absent (no) on older events.
    pub accept_phone_reports: Option<bool>,
    /// The venue's iBeacon, `<uuid>[:<major>[:<minor>]]`.
    pub venue_beacon: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When its sightings start to count (`starts_at − grace`), kept so that
    /// a batch finds the events that cover its sightings with one indexed read.
    pub opens_at: DateTime<Utc>,
    /// When its sightings stop counting (`ends_at + grace`).
    pub closes_at: DateTime<Utc>,
}

impl TryFrom<EventRow> for Event {
    type Error = StoreError;
    fn try_from(r: EventRow) -> Result<Self, StoreError> {
        Ok(Event {
            id: key_of(&r.id)?,
            name: r.name,
            description: r.description,
            location: r.location,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            state: r.state.parse().map_err(corrupt)?,
            organizer_id: key_of(&r.organizer)?,
            policy: AttendancePolicy {
                min_rssi: i32::try_from(r.min_rssi).map_err(corrupt)?,
                departure_gap: Duration::seconds(r.departure_gap_secs),
                grace: Duration::seconds(r.grace_secs),
                require_registration: r.require_registration,
                identity: crate::domain::IdentityPolicy::parse(r.identity.as_deref()),
                accept_phone_reports: r.accept_phone_reports.unwrap_or(false),
                venue_beacon: r.venue_beacon.as_deref().map(str::parse).transpose().map_err(corrupt)?,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// Whether a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationStatus {
    Registered,
    Cancelled,
}

impl RegistrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationStatus::Registered => "REGISTERED",
            RegistrationStatus::Cancelled => "CANCELLED",
        }
    }
}

/// A user's registration for an event; there is at most one per pair, keyed
/// `registration:[event, user]`.
#[derive(Debug, Clone)]
pub struct Registration {
    pub user_id: Uuid,
    pub event_id: Uuid,
    pub status: RegistrationStatus,
    /// Registered by being seen at an event that does not require registration.
    pub walk_in: bool,
    pub registered_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, SurrealValue)]
pub(crate) struct RegistrationRow {
    pub id: RecordId,
    pub user: RecordId,
    pub event: RecordId,
    pub status: String,
    pub walk_in: bool,
    pub registered_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl TryFrom<RegistrationRow> for Registration {
    type Error = StoreError;
    fn try_from(r: RegistrationRow) -> Result<Self, StoreError> {
        Ok(Registration {
            user_id: key_of(&r.user)?,
            event_id: key_of(&r.event)?,
            status: match r.status.as_str() {
                "REGISTERED" => RegistrationStatus::Registered,
                "CANCELLED" => RegistrationStatus::Cancelled,
                other => return Err(corrupt(format!("unknown registration status `{other}`"))),
            },
            walk_in: r.walk_in,
            registered_at: r.registered_at,
            cancelled_at: r.cancelled_at,
        })
    }
}

/// A scanner's API key. The secret itself is never stored.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// The first characters of the secret, to tell keys apart in lists.
    pub prefix: String,
    /// Hex SHA-256 of the secret.
    pub key_hash: String,
    /// Whether the key may see every event (else `events`, or the creator's).
    pub all_events: bool,
    /// The events the key is scoped to.
    pub events: Vec<Uuid>,
    /// Who made it; `None` for keys made with the CLI.
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When the scanner's last sighting batch was applied, and its id.
    pub last_batch_at: Option<DateTime<Utc>>,
    pub last_batch_id: Option<String>,
    /// Sightings of identifiers that belong to nobody, over the key's life.
    pub unknown_devices: i64,
    /// The scanner's last heartbeat, if it sent one.
    pub heartbeat: Option<Heartbeat>,
}

/// What a scanner last reported about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// When the server received it.
    pub at: DateTime<Utc>,
    /// The scanner software's version.
    pub version: String,
    /// Sightings waiting in the scanner's outbox.
    pub outbox_depth: i64,
    /// The scanner's last successful upload, by its clock.
    pub last_upload_at: Option<DateTime<Utc>>,
    /// The scanner's clock minus the server's, in milliseconds.
    pub clock_skew_ms: i64,
    /// The scanner's own stable identity, which survives key rotation, if it sent one.
    pub scanner_id: Option<Uuid>,
    /// What the scanner reports about its radio, storage and clock, if it did.
    pub health: Option<ScannerHealth>,
}

/// A scanner's report on its radio, storage and clock. Every field is optional:
/// scanners send what they know. The server stores it as one JSON value and only
/// shows it, so it can grow without a migration.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScannerHealth {
    /// BLE advertisements heard over the last minute.
    pub adverts_per_minute: Option<i64>,
    /// Distinct devices heard over the last minute.
    pub devices_per_minute: Option<i64>,
    /// BLE scan sessions restarted (watchdog or error) since the scanner started.
    pub ble_restarts: Option<i64>,
    /// The Bluetooth adapter's last known state.
    pub adapter_state: Option<String>,
    /// Batches parked as dead (refused, or failing for hours) in the outbox.
    pub dead_batches: Option<i64>,
    /// Sightings in those batches.
    pub dead_sightings: Option<i64>,
    /// Sightings held in memory because the outbox refuses writes (disk full).
    pub held_in_memory: Option<i64>,
    /// Sightings dropped, weakest first, while the outbox refused writes.
    pub dropped_sightings: Option<i64>,
    /// Free disk space for the outbox, in MB.
    pub free_disk_mb: Option<i64>,
    /// What the scanner knows of its clock: UNCHECKED, WRONG, SYNCED or CORRECTED.
    pub clock_state: Option<String>,
}

#[derive(Debug, Clone, SurrealValue)]
pub(crate) struct ApiKeyRow {
    pub id: RecordId,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub all_events: bool,
    pub events: Vec<RecordId>,
    pub created_by: Option<RecordId>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_batch_at: Option<DateTime<Utc>>,
    pub last_batch_id: Option<String>,
    pub unknown_devices: Option<i64>,
    #[surreal(default)]
    pub heartbeat_at: Option<DateTime<Utc>>,
    #[surreal(default)]
    pub heartbeat_version: Option<String>,
    #[surreal(default)]
    pub outbox_depth: Option<i64>,
    #[surreal(default)]
    pub last_upload_at: Option<DateTime<Utc>>,
    #[surreal(default)]
    pub clock_skew_ms: Option<i64>,
    #[surreal(default)]
    pub heartbeat_scanner_id: Option<String>,
    /// [`ScannerHealth`] as JSON.
    #[surreal(default)]
    pub heartbeat_health: Option<String>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;
    fn try_from(r: ApiKeyRow) -> Result<Self, StoreError> {
        Ok(ApiKey {
            id: key_of(&r.id)?,
            name: r.name,
            prefix: r.prefix,
            key_hash: r.key_hash,
            all_events: r.all_events,
            events: r.events.iter().map(key_of).collect::<Result<_, _>>()?,
            created_by: r.created_by.as_ref().map(key_of).transpose()?,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
            last_batch_at: r.last_batch_at,
            last_batch_id: r.last_batch_id,
            unknown_devices: r.unknown_devices.unwrap_or(0),
            heartbeat: r.heartbeat_at.map(|at| Heartbeat {
                at,
                version: r.heartbeat_version.unwrap_or_default(),
                outbox_depth: r.outbox_depth.unwrap_or(0),
                last_upload_at: r.last_upload_at,
                clock_skew_ms: r.clock_skew_ms.unwrap_or(0),
                scanner_id: r.heartbeat_scanner_id.as_deref().and_then(|s| Uuid::parse_str(s).ok()),
                health: r.heartbeat_health.as_deref().and_then(|s| serde_json::from_str(s).ok()),
            }),
        })
    }
}

/// Converts every row, failing on the first that does not convert.
pub(crate) fn convert_all<R, T>(rows: Vec<R>) -> Result<Vec<T>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}
