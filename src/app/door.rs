//! Door codes (`domain::door`): the code a door screen shows, and an
//! attendee's check-in with it.
//!
//! A check-in with a code is one sighting of the attendee, now, for the
//! code's event, attributed to the door-code reporter
//! (`CheckInSource::DoorCode`). It goes through ingest like any scanner's:
//! the event's window, registration and walk-in rules, one check-in per
//! person and event, the raw log, and the live stream.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::ingest::{Ingest, IngestError, Source, single_check_in};
use crate::domain::CheckInSource;
use crate::domain::door::{self, DoorCodeError, DoorKey};
use crate::domain::ingest::{BatchOutcome, SightingIn};
use crate::store::{AttendanceRecord, StoreError, SurrealStore, User};

/// Why a check-in with a code, or a phone report, was refused.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    #[error(transparent)]
    Code(#[from] DoorCodeError),
    /// The code is valid, for another event than the app expected.
    #[error("this door code is for another event")]
    WrongEvent,
    #[error("event not found")]
    NoEvent,
    /// The event does not take this kind of check-in.
    #[error("{0}")]
    NotAccepted(String),
    /// Input that does not make sense (a beacon, a time).
    #[error("{0}")]
    Invalid(String),
    /// Went through the rules and did not count.
    #[error("not checked in: {0}")]
    NotCounted(String),
    /// Too soon after the last one; retry after this many seconds.
    #[error("one report every {interval} seconds counts; retry in {retry_after} s")]
    RateLimited { interval: i64, retry_after: i64 },
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The codes of this server.
pub struct DoorCodes {
    key: DoorKey,
    ingest: Ingest,
    store: SurrealStore,
}

/// The code to show at one moment.
#[derive(Debug, Clone)]
pub struct ShownCode {
    pub code: String,
    /// When it started being shown.
    pub valid_from: DateTime<Utc>,
    /// When the next code replaces it (it is still accepted for one more slot).
    pub next_at: DateTime<Utc>,
}

impl DoorCodes {
    /// Door codes made with a key derived from the server's secret.
    pub fn new(server_secret: &[u8], ingest: Ingest, store: SurrealStore) -> Self {
        Self { key: DoorKey::derive(server_secret), ingest, store }
    }

    /// The code for `event` at `now`.
    pub fn code_at(&self, event: Uuid, now: DateTime<Utc>) -> ShownCode {
        let slot = door::slot_of(now.timestamp());
        let at = |slot: i64| DateTime::from_timestamp(slot * door::SLOT_SECS, 0).unwrap_or(now);
        ShownCode { code: self.key.code(event, slot), valid_from: at(slot), next_at: at(slot + 1) }
    }

    /// Checks `user` in with `code` (for `expected`, when the app says which
    /// event it expects); returns their attendance at the code's event.
    pub async fn check_in(
        &self,
        user: &User,
        code: &str,
        expected: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<AttendanceRecord, DoorError> {
        let pass = self.key.verify(code, now.timestamp())?;
        if expected.is_some_and(|e| e != pass.event) {
            return Err(DoorError::WrongEvent);
        }
        if self.store.events().get(pass.event).await?.is_none() {
            return Err(DoorError::NoEvent);
        }
        let outcome = submit_one(&self.ingest, CheckInSource::DoorCode, user, pass.event, now, None).await?;
        single_check_in(&outcome).map_err(DoorError::NotCounted)?;
        counted_row(&self.store, pass.event, user.id).await
    }
}

/// Submits one sighting of `user` for `event`, from a person's source.
pub(super) async fn submit_one(
    ingest: &Ingest,
    kind: CheckInSource,
    user: &User,
    event: Uuid,
    at: DateTime<Utc>,
    rssi: Option<i32>,
) -> Result<BatchOutcome, IngestError> {
    // The user's own static identifier: the raw log names who was there, and
    // the identity policy does not apply to these sources.
    let sighting = SightingIn { identifier: user.ble_uuid.clone(), seen_at: at, rssi, event_id: Some(event) };
    ingest.submit(&Source::Person { kind, by: user.id }, Uuid::now_v7(), None, vec![sighting], false).await
}

/// The attendance row a counted sighting made or extended.
pub(super) async fn counted_row(store: &SurrealStore, event: Uuid, user: Uuid) -> Result<AttendanceRecord, DoorError> {
    store
        .attendance()
        .get(event, user)
        .await?
        .ok_or_else(|| DoorError::Store(StoreError::Corrupt("a counted check-in has no attendance row".into())))
}
