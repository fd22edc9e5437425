//! The attendance aggregate and the raw sighting log it is derived from.
//!
//! Write path, per batch (see `crate::ingest`): the batch record (raw log and
//! idempotency key) and every changed attendance row go in one transaction.
//! Rows are keyed `attendance:[event, user]`, read in one statement by id,
//! and written once per (user, event) per batch however many sightings the
//! batch has for them. Each row carries a `version`: a row is created only if
//! absent and updated only if its version is the one that was read, so two
//! instances ingesting for the same person cannot overwrite each other; the
//! loser's transaction fails and it retries.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use surrealdb::Surreal;
use surrealdb::engine::any::Any;
use surrealdb::types::{Array, Bytes, RecordId, SurrealValue};
use uuid::Uuid;

use super::{StoreError, key_of, registration_id, rid};
use crate::domain::{Attendance, Stay};

/// A stored attendance row.
#[derive(Debug, Clone)]
pub struct AttendanceRecord {
    pub event_id: Uuid,
    pub user_id: Uuid,
    pub attendance: Attendance,
    /// Optimistic-concurrency version: 1 when created, +1 per write.
    pub version: i64,
}

#[derive(Debug, Clone, SurrealValue)]
struct AttendanceRow {
    id: RecordId,
    event: RecordId,
    user: RecordId,
    first_seen: DateTime<Utc>,
    first_scanner: String,
    last_seen: DateTime<Utc>,
    stays: Vec<Vec<DateTime<Utc>>>,
    sightings: i64,
    best_rssi: Option<i64>,
    dwell_secs: i64,
    seen: Bytes,
    version: i64,
}

/// The record id of (event, user)'s attendance.
pub(crate) fn attendance_id(event: Uuid, user: Uuid) -> RecordId {
    let key = Array::from(vec![surrealdb::types::Uuid::from(event), surrealdb::types::Uuid::from(user)]);
    RecordId::new("attendance", key)
}

impl From<&AttendanceRecord> for AttendanceRow {
    fn from(r: &AttendanceRecord) -> Self {
        let a = &r.attendance;
        let mut seen = Vec::with_capacity(a.seen.len() * 8);
        for fp in &a.seen {
            seen.extend_from_slice(&fp.to_be_bytes());
        }
        AttendanceRow {
            id: attendance_id(r.event_id, r.user_id),
            event: rid("event", r.event_id),
            user: rid("user", r.user_id),
            first_seen: a.first_seen,
            first_scanner: a.first_scanner.to_string(),
            last_seen: a.last_seen,
            stays: a.stays.iter().map(|s| vec![s.from, s.to]).collect(),
            sightings: a.sightings as i64,
            best_rssi: a.best_rssi.map(i64::from),
            dwell_secs: a.dwell().num_seconds(),
            seen: Bytes::from(seen),
            version: r.version,
        }
    }
}

impl TryFrom<AttendanceRow> for AttendanceRecord {
    type Error = StoreError;
    fn try_from(r: AttendanceRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("attendance row: {what}"));
        let stays = r
            .stays
            .iter()
            .map(|s| match s.as_slice() {
                [from, to] => Ok(Stay { from: *from, to: *to }),
                _ => Err(corrupt("a stay is not [from, to]")),
            })
            .collect::<Result<_, _>>()?;
        let bytes: &[u8] = &r.seen;
        if !bytes.len().is_multiple_of(8) {
            return Err(corrupt("seen is not a list of u64"));
        }
        let seen = bytes.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8]))).collect();
        Ok(AttendanceRecord {
            event_id: key_of(&r.event)?,
            user_id: key_of(&r.user)?,
            attendance: Attendance {
                first_seen: r.first_seen,
                first_scanner: Uuid::parse_str(&r.first_scanner).map_err(|_| corrupt("first_scanner"))?,
                last_seen: r.last_seen,
                stays,
                sightings: u64::try_from(r.sightings).map_err(|_| corrupt("sightings"))?,
                best_rssi: r.best_rssi.map(|v| v as i32),
                seen,
            },
            version: r.version,
        })
    }
}

/// One resolved sighting as kept in the raw log.
#[derive(Debug, Clone, SurrealValue)]
pub struct LoggedSighting {
    pub user: RecordId,
    /// The identifier as the scanner reported it (canonical form).
    pub identifier: String,
    pub seen_at: DateTime<Utc>,
    pub rssi: Option<i64>,
    /// The events the sighting was offered to.
    pub events: Vec<RecordId>,
}

/// A batch as stored: the raw log and the idempotency record.
#[derive(Debug, Clone, SurrealValue)]
pub struct BatchRecord {
    pub id: RecordId,
    pub scanner: Option<RecordId>,
    pub recorded_by: Option<RecordId>,
    pub received_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub events: Vec<RecordId>,
    pub sightings: Vec<LoggedSighting>,
    /// The result returned for it, as JSON, to answer retries.
    pub result: String,
}

impl BatchRecord {
    /// The id of a scanner's batch: `batch:[scanner, batchId]`.
    pub fn id_for(scanner: Uuid, batch: Uuid) -> RecordId {
        let key = Array::from(vec![surrealdb::types::Uuid::from(scanner), surrealdb::types::Uuid::from(batch)]);
        RecordId::new("batch", key)
    }
}

/// Why a batch's transaction did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// This (scanner, batchId) was committed already, by a concurrent retry.
    #[error("batch already applied")]
    AlreadyApplied,
    /// An attendance row changed since it was read; read again and retry.
    #[error("attendance changed concurrently")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything one batch writes.
pub struct BatchWrite {
    pub batch: BatchRecord,
    /// Rows to create (new check-ins); `version` 1.
    pub created: Vec<AttendanceRecord>,
    /// Rows to update; `version` already incremented.
    pub updated: Vec<AttendanceRecord>,
    /// (user, event) pairs to register as walk-ins.
    pub walk_ins: Vec<(Uuid, Uuid)>,
    /// The scanner's key, to record its last batch and unknown devices.
    pub scanner: Option<Uuid>,
    /// The scanner's id for the batch, recorded as its last batch.
    pub batch_id: Uuid,
    pub unknown_devices: u64,
}

#[derive(Debug, Clone, SurrealValue)]
struct WalkIn {
    id: RecordId,
    user: RecordId,
    event: RecordId,
    status: String,
    walk_in: bool,
    registered_at: DateTime<Utc>,
    cancelled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, SurrealValue)]
struct Resolved {
    id: RecordId,
    user: RecordId,
}

/// Registers each `$walk_ins` (user, event) pair: reinstates a cancelled
/// registration, or creates one marked as a walk-in.
const WALK_INS: &str = "FOR $w IN $walk_ins {
    UPSERT $w.id SET user = $w.user, event = $w.event, status = 'REGISTERED', walk_in = walk_in ?? true,
        registered_at = $w.registered_at, cancelled_at = NONE;
};";

fn walk_in_rows(pairs: &[(Uuid, Uuid)], now: DateTime<Utc>) -> Vec<WalkIn> {
    pairs
        .iter()
        .map(|(u, e)| WalkIn {
            id: registration_id(*e, *u),
            user: rid("user", *u),
            event: rid("event", *e),
            status: "REGISTERED".into(),
            walk_in: true,
            registered_at: now,
            cancelled_at: None,
        })
        .collect()
}

/// Repository for `attendance` and `batch` records.
pub struct AttendanceLog<'a> {
    db: &'a Surreal<Any>,
}

impl<'a> AttendanceLog<'a> {
    pub(super) fn new(db: &'a Surreal<Any>) -> Self {
        Self { db }
    }

    /// The stored result of a batch, if it was applied.
    pub async fn batch_result(&self, id: &RecordId) -> Result<Option<String>, StoreError> {
        let mut res = self.db.query("SELECT VALUE result FROM ONLY $id").bind(("id", id.clone())).await?;
        Ok(res.take(0)?)
    }

    /// Maps canonical identifiers to users (by BLE UUID or extra device
    /// identifier), with one lookup by id for the whole batch.
    pub async fn resolve(&self, identifiers: Vec<String>) -> Result<HashMap<String, Uuid>, StoreError> {
        if identifiers.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<RecordId> = identifiers.into_iter().map(|i| RecordId::new("identifier", i)).collect();
        let mut res = self.db.query("SELECT id, user FROM $ids").bind(("ids", ids)).await?;
        let found: Vec<Resolved> = res.take(0)?;
        let mut map = HashMap::new();
        for r in found {
            let surrealdb::types::RecordIdKey::String(key) = r.id.key else {
                return Err(StoreError::Corrupt("identifier key is not a string".into()));
            };
            map.insert(key, key_of(&r.user)?);
        }
        Ok(map)
    }

    /// The attendance rows of these (event, user) pairs that exist.
    pub async fn rows(&self, pairs: &[(Uuid, Uuid)]) -> Result<Vec<AttendanceRecord>, StoreError> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<RecordId> = pairs.iter().map(|(e, u)| attendance_id(*e, *u)).collect();
        let mut res = self.db.query("SELECT * FROM $ids").bind(("ids", ids)).await?;
        let rows: Vec<AttendanceRow> = res.take(0)?;
        rows.into_iter().map(AttendanceRecord::try_from).collect()
    }

    /// Applies one batch atomically; see the module doc for the checks.
    pub async fn commit(&self, w: BatchWrite, now: DateTime<Utc>) -> Result<(), CommitError> {
        let created: Vec<AttendanceRow> = w.created.iter().map(AttendanceRow::from).collect();
        let updated: Vec<AttendanceRow> = w.updated.iter().map(AttendanceRow::from).collect();
        let walk_ins = walk_in_rows(&w.walk_ins, now);
        let res = self
            .db
            .query(format!(
                "BEGIN;
                 CREATE $batch.id CONTENT $batch;
                 IF array::len($created) > 0 {{ INSERT INTO attendance $created }};
                 FOR $row IN $updated {{
                     IF array::len(UPDATE $row.id CONTENT $row WHERE version = $row.version - 1 RETURN id) == 0 {{
                         THROW 'attendance changed concurrently';
                     }};
                 }};
                 {WALK_INS}
                 IF $scanner != NONE {{
                     UPDATE $scanner SET last_batch_at = $now, last_batch_id = $batch_label,
                         unknown_devices = (unknown_devices ?? 0) + $unknown;
                 }};
                 COMMIT;"
            ))
            .bind(("batch", w.batch))
            .bind(("created", created))
            .bind(("updated", updated))
            .bind(("walk_ins", walk_ins))
            .bind(("scanner", w.scanner.map(|s| rid("api_key", s))))
            .bind(("batch_label", w.batch_id.to_string()))
            .bind(("unknown", w.unknown_devices as i64))
            .bind(("now", now))
            .await
            .map_err(StoreError::from)?;
        let mut res = res;
        let errors = res.take_errors();
        if errors.is_empty() {
            return Ok(());
        }
        // Statements after the failing one only report that the transaction
        // failed; the cause is the other error.
        let mut errors: Vec<(usize, surrealdb::Error)> = errors.into_iter().collect();
        errors.sort_by_key(|(i, _)| *i);
        let cause = errors
            .iter()
            .find(|(_, e)| !e.message().contains("failed transaction"))
            .or(errors.first())
            .map(|(_, e)| e.clone())
            .ok_or_else(|| CommitError::Store(StoreError::Corrupt("no error".into())))?;
        let msg = cause.message().to_owned();
        if msg.contains("changed concurrently") || msg.to_lowercase().contains("conflict") {
            return Err(CommitError::Conflict);
        }
        match StoreError::from(cause) {
            StoreError::Conflict { .. } => Err(CommitError::Conflict),
            StoreError::Db(e) if e.is_already_exists() && msg.contains("batch:") => Err(CommitError::AlreadyApplied),
            StoreError::Db(e) if e.is_already_exists() => Err(CommitError::Conflict),
            other => Err(CommitError::Store(other)),
        }
    }

    /// Every logged sighting offered to `event`, for deriving its attendance again.
    pub async fn logged_for_event(&self, event: Uuid) -> Result<Vec<(Option<Uuid>, LoggedSighting)>, StoreError> {
        #[derive(Debug, SurrealValue)]
        struct Logged {
            scanner: Option<RecordId>,
            sightings: Vec<LoggedSighting>,
        }
        let e = rid("event", event);
        let mut res = self
            .db
            .query("SELECT scanner, sightings FROM batch WHERE events CONTAINS $e")
            .bind(("e", e.clone()))
            .await?;
        let batches: Vec<Logged> = res.take(0)?;
        let mut out = Vec::new();
        for b in batches {
            let scanner = b.scanner.as_ref().map(key_of).transpose()?;
            out.extend(b.sightings.into_iter().filter(|s| s.events.contains(&e)).map(|s| (scanner, s)));
        }
        Ok(out)
    }

    /// Replaces all of an event's attendance rows, and registers the
    /// `walk_ins` (user, event) pairs, atomically.
    pub async fn replace_for_event(
        &self,
        event: Uuid,
        rows: Vec<AttendanceRecord>,
        walk_ins: &[(Uuid, Uuid)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let rows: Vec<AttendanceRow> = rows.iter().map(AttendanceRow::from).collect();
        self.db
            .query(format!(
                "BEGIN;
                 DELETE attendance WHERE event = $e;
                 IF array::len($rows) > 0 {{ INSERT INTO attendance $rows }};
                 {WALK_INS}
                 COMMIT;"
            ))
            .bind(("e", rid("event", event)))
            .bind(("rows", rows))
            .bind(("walk_ins", walk_in_rows(walk_ins, now)))
            .await?
            .check()?;
        Ok(())
    }

    /// An event's attendance, ordered by user id, after `after`.
    pub async fn for_event(
        &self,
        event: Uuid,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<AttendanceRecord>, StoreError> {
        let sql = if after.is_some() {
            "SELECT * FROM attendance WHERE event = $e AND user > $after ORDER BY user LIMIT $limit"
        } else {
            "SELECT * FROM attendance WHERE event = $e ORDER BY user LIMIT $limit"
        };
        let mut res = self
            .db
            .query(sql)
            .bind(("e", rid("event", event)))
            .bind(("after", after.map(|a| rid("user", a))))
            .bind(("limit", limit as i64))
            .await?;
        let rows: Vec<AttendanceRow> = res.take(0)?;
        rows.into_iter().map(AttendanceRecord::try_from).collect()
    }

    /// A user's attendance at every event.
    pub async fn for_user(&self, user: Uuid) -> Result<Vec<AttendanceRecord>, StoreError> {
        let mut res = self
            .db
            .query("SELECT * FROM attendance WHERE user = $u ORDER BY first_seen")
            .bind(("u", rid("user", user)))
            .await?;
        let rows: Vec<AttendanceRow> = res.take(0)?;
        rows.into_iter().map(AttendanceRecord::try_from).collect()
    }

    /// One row.
    pub async fn get(&self, event: Uuid, user: Uuid) -> Result<Option<AttendanceRecord>, StoreError> {
        Ok(self.rows(&[(event, user)]).await?.into_iter().next())
    }
}
