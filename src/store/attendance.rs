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

use futures_util::StreamExt;

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
    /// The check-in's place in the event's check-in stream (see
    /// [`cursor_of`]), assigned when the row is first committed (empty until
    /// then) and kept for the row's life. Subscribers resume after it.
    pub cursor: String,
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
    cursor: String,
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
            cursor: r.cursor.clone(),
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
            cursor: r.cursor,
        })
    }
}

/// One resolved sighting as kept in the raw log.
///
/// Packed per sighting as: user UUID (16 bytes), `seen_at` in Unix ms (i64,
/// big-endian), RSSI (i16, `i16::MIN` for none), then a count byte and that
/// many indices into the batch's `events` list. Only sightings of known users
/// are logged; unknown identifiers are not stored at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedSighting {
    pub user: Uuid,
    pub seen_at: DateTime<Utc>,
    pub rssi: Option<i32>,
    /// The events the sighting was offered to (before the window and RSSI rules).
    pub events: Vec<Uuid>,
}

/// Packs sightings; returns the bytes and the batch's list of events.
fn pack(sightings: &[LoggedSighting]) -> Result<(Vec<u8>, Vec<Uuid>), StoreError> {
    let mut events: Vec<Uuid> = Vec::new();
    let mut out = Vec::with_capacity(sightings.len() * 28);
    for s in sightings {
        out.extend_from_slice(s.user.as_bytes());
        out.extend_from_slice(&s.seen_at.timestamp_millis().to_be_bytes());
        let rssi = s.rssi.map_or(i16::MIN, |r| r.clamp(-32767, 32767) as i16);
        out.extend_from_slice(&rssi.to_be_bytes());
        let n = u8::try_from(s.events.len())
            .map_err(|_| StoreError::Corrupt("a sighting offered to over 255 events".into()))?;
        out.push(n);
        for e in &s.events {
            let idx = match events.iter().position(|x| x == e) {
                Some(i) => i,
                None => {
                    events.push(*e);
                    events.len() - 1
                }
            };
            out.push(u8::try_from(idx).map_err(|_| StoreError::Corrupt("a batch offered to over 255 events".into()))?);
        }
    }
    Ok((out, events))
}

/// Unpacks what [`pack`] wrote.
fn unpack(bytes: &[u8], events: &[Uuid]) -> Result<Vec<LoggedSighting>, StoreError> {
    let bad = || StoreError::Corrupt("a batch's packed sightings are truncated".into());
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at_checked(27).ok_or_else(bad)?;
        let user = Uuid::from_slice(&head[..16]).map_err(|_| bad())?;
        let ms = i64::from_be_bytes(head[16..24].try_into().map_err(|_| bad())?);
        let rssi = i16::from_be_bytes(head[24..26].try_into().map_err(|_| bad())?);
        let n = usize::from(head[26]);
        let (idx, tail) = tail.split_at_checked(n).ok_or_else(bad)?;
        let evs = idx.iter().map(|i| events.get(usize::from(*i)).copied().ok_or_else(bad)).collect::<Result<_, _>>()?;
        out.push(LoggedSighting {
            user,
            seen_at: DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(bad)?,
            rssi: (rssi != i16::MIN).then_some(i32::from(rssi)),
            events: evs,
        });
        rest = tail;
    }
    Ok(out)
}

/// A batch: the raw log of its sightings and its idempotency record.
#[derive(Debug, Clone)]
pub struct BatchRecord {
    /// `batch:[scanner, batchId]`.
    pub id: RecordId,
    pub scanner: Option<Uuid>,
    pub recorded_by: Option<Uuid>,
    pub received_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub sightings: Vec<LoggedSighting>,
    /// The result returned for it, as JSON, to answer retries.
    pub result: String,
}

#[derive(Debug, Clone, SurrealValue)]
struct BatchRow {
    id: RecordId,
    scanner: Option<RecordId>,
    recorded_by: Option<RecordId>,
    received_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    events: Vec<RecordId>,
    sightings: Bytes,
    result: String,
}

impl BatchRecord {
    /// The id of a scanner's batch: `batch:[scanner, batchId]`.
    pub fn id_for(scanner: Uuid, batch: Uuid) -> RecordId {
        let key = Array::from(vec![surrealdb::types::Uuid::from(scanner), surrealdb::types::Uuid::from(batch)]);
        RecordId::new("batch", key)
    }

    fn into_row(self) -> Result<BatchRow, StoreError> {
        let (bytes, events) = pack(&self.sightings)?;
        Ok(BatchRow {
            id: self.id,
            scanner: self.scanner.map(|s| rid("api_key", s)),
            recorded_by: self.recorded_by.map(|u| rid("user", u)),
            received_at: self.received_at,
            sent_at: self.sent_at,
            events: events.into_iter().map(|e| rid("event", e)).collect(),
            sightings: Bytes::from(bytes),
            result: self.result,
        })
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

/// The fields of an attendance row a check-in stream needs.
const CHECK_IN_FIELDS: &str = "event, user, first_seen, first_scanner, last_seen, cursor";

#[derive(Debug, Clone, SurrealValue)]
struct CheckInFields {
    event: RecordId,
    user: RecordId,
    first_seen: DateTime<Utc>,
    first_scanner: String,
    last_seen: DateTime<Utc>,
    cursor: Option<String>,
}

/// The cursor of an event's `seq`-th check-in: zero-padded so that cursors
/// compare as text in commit order. (Rows from before cursors existed carry
/// `0-<unix time>-<user>`, which sorts before all of these.)
pub fn cursor_of(seq: u64) -> String {
    format!("{seq:012}")
}

/// The sequence number in a cursor made by [`cursor_of`]; `None` for others.
pub fn seq_of(cursor: &str) -> Option<u64> {
    if cursor.len() >= 12 && cursor.bytes().all(|b| b.is_ascii_digit()) { cursor.parse().ok() } else { None }
}

/// Each event's check-in counter, `checkin_seq:<event>`: bumped inside the
/// transaction that creates check-ins, so cursors follow commit order.
fn seq_id(event: Uuid) -> RecordId {
    rid("checkin_seq", event)
}

#[derive(Debug, Clone, SurrealValue)]
struct SeqStep {
    id: RecordId,
    expected: i64,
    next: i64,
}

/// Checks that no other transaction moved the counters since they were
/// read, and moves them: the commit fails (and is retried) otherwise.
const SEQ_STEPS: &str = "FOR $s IN $seqs {
    IF ((SELECT VALUE n FROM $s.id)[0] ?? 0) != $s.expected { THROW 'attendance changed concurrently'; };
    UPSERT $s.id SET n = $s.next;
};";

/// A check-in as a live stream shows it: who, when, where first, and when
/// last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckInRow {
    pub event: Uuid,
    pub user: Uuid,
    pub checked_in_at: DateTime<Utc>,
    /// The API key whose scanner saw the check-in; nil for a manual one.
    pub scanner: Uuid,
    pub last_seen: DateTime<Utc>,
    pub cursor: String,
}

impl CheckInRow {
    /// Its place in the event's commit order (0 for rows from before cursors).
    pub fn seq(&self) -> u64 {
        seq_of(&self.cursor).unwrap_or(0)
    }
}

impl TryFrom<CheckInFields> for CheckInRow {
    type Error = StoreError;
    fn try_from(f: CheckInFields) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("attendance row: {what}"));
        Ok(CheckInRow {
            event: key_of(&f.event)?,
            user: key_of(&f.user)?,
            checked_in_at: f.first_seen,
            scanner: Uuid::parse_str(&f.first_scanner).map_err(|_| corrupt("first_scanner"))?,
            last_seen: f.last_seen,
            cursor: f.cursor.unwrap_or_default(),
        })
    }
}

/// What happened to an attendance row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new check-in.
    Created,
    /// Seen again, or re-derived.
    Updated,
    /// Removed (a re-derivation no longer counts it, or its user or event went).
    Deleted,
}

/// One committed change to an attendance row.
#[derive(Debug, Clone)]
pub struct AttendanceChange {
    pub kind: ChangeKind,
    pub row: CheckInRow,
}

/// Repository for `attendance` and `batch` records.
pub struct AttendanceLog<'a> {
    db: &'a Surreal<Any>,
    cursor_turn: &'a tokio::sync::Mutex<()>,
}

impl<'a> AttendanceLog<'a> {
    pub(super) fn new(db: &'a Surreal<Any>, cursor_turn: &'a tokio::sync::Mutex<()>) -> Self {
        Self { db, cursor_turn }
    }

    /// Gives each row without a cursor the next ones of its event, in order,
    /// from the counters as they stand; the returned steps make the commit
    /// fail if another commit moved a counter in between.
    async fn assign_cursors(&self, rows: &mut [AttendanceRecord]) -> Result<Vec<SeqStep>, StoreError> {
        let mut events: Vec<Uuid> = rows.iter().filter(|r| r.cursor.is_empty()).map(|r| r.event_id).collect();
        events.sort_unstable();
        events.dedup();
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut steps = Vec::with_capacity(events.len());
        for event in events {
            let expected = self.check_in_count(event).await?;
            let mut next = expected;
            for row in rows.iter_mut().filter(|r| r.event_id == event && r.cursor.is_empty()) {
                next += 1;
                row.cursor = cursor_of(next);
            }
            steps.push(SeqStep { id: seq_id(event), expected: expected as i64, next: next as i64 });
        }
        Ok(steps)
    }

    /// How many cursors the event has handed out: the last one's number.
    pub async fn check_in_count(&self, event: Uuid) -> Result<u64, StoreError> {
        let mut res = self.db.query("RETURN (SELECT VALUE n FROM $id)[0] ?? 0").bind(("id", seq_id(event))).await?;
        let n: Option<i64> = res.take(0)?;
        Ok(n.unwrap_or(0).max(0) as u64)
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
    pub async fn commit(&self, mut w: BatchWrite, now: DateTime<Utc>) -> Result<(), CommitError> {
        let _turn = if w.created.is_empty() { None } else { Some(self.cursor_turn.lock().await) };
        let seqs = self.assign_cursors(&mut w.created).await.map_err(CommitError::Store)?;
        let created: Vec<AttendanceRow> = w.created.iter().map(AttendanceRow::from).collect();
        let updated: Vec<AttendanceRow> = w.updated.iter().map(AttendanceRow::from).collect();
        let walk_ins = walk_in_rows(&w.walk_ins, now);
        let res = self
            .db
            .query(format!(
                "BEGIN;
                 CREATE $batch.id CONTENT $batch;
                 {SEQ_STEPS}
                 IF array::len($created) > 0 {{ INSERT INTO attendance $created }};
                 FOR $row IN $updated {{
                     IF array::len(UPDATE $row.id CONTENT $row WHERE version = $row.version - 1 RETURN id) == 0 {{
                         THROW 'attendance changed concurrently';
                     }};
                 }};
                 {WALK_INS}
                 COMMIT;"
            ))
            .bind(("batch", w.batch.into_row()?))
            .bind(("seqs", seqs))
            .bind(("created", created))
            .bind(("updated", updated))
            .bind(("walk_ins", walk_ins))
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

    /// Records a scanner's last batch and adds to its unknown-device count.
    ///
    /// Kept out of the batch's transaction: scanners sharing a key would
    /// otherwise all write this one record and conflict on every batch.
    /// A few retries cover concurrent batches of the same key.
    pub async fn note_scanner_batch(
        &self,
        key: Uuid,
        batch_id: Uuid,
        unknown: u64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut last = None;
        for _ in 0..5 {
            let res = self
                .db
                .query(
                    "UPDATE $key SET last_batch_at = $now, last_batch_id = $batch,
                         unknown_devices = (unknown_devices ?? 0) + $unknown",
                )
                .bind(("key", rid("api_key", key)))
                .bind(("now", now))
                .bind(("batch", batch_id.to_string()))
                .bind(("unknown", unknown as i64))
                .await
                .and_then(|r| r.check());
            match res {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        Err(last.map_or_else(|| StoreError::Corrupt("no attempt".into()), StoreError::from))
    }

    /// Every logged sighting offered to `event`, with the scanner that
    /// reported it, for deriving the event's attendance again.
    pub async fn logged_for_event(&self, event: Uuid) -> Result<Vec<(Option<Uuid>, LoggedSighting)>, StoreError> {
        #[derive(Debug, SurrealValue)]
        struct Logged {
            scanner: Option<RecordId>,
            events: Vec<RecordId>,
            sightings: Bytes,
        }
        let mut res = self
            .db
            .query("SELECT scanner, events, sightings FROM batch WHERE events CONTAINS $e")
            .bind(("e", rid("event", event)))
            .await?;
        let batches: Vec<Logged> = res.take(0)?;
        let mut out = Vec::new();
        for b in batches {
            let scanner = b.scanner.as_ref().map(key_of).transpose()?;
            let events: Vec<Uuid> = b.events.iter().map(key_of).collect::<Result<_, _>>()?;
            let sightings = unpack(&b.sightings, &events)?;
            out.extend(sightings.into_iter().filter(|s| s.events.contains(&event)).map(|s| (scanner, s)));
        }
        Ok(out)
    }

    /// Replaces all of an event's attendance rows, and registers the
    /// `walk_ins` (user, event) pairs, atomically.
    ///
    /// Rows that stay are written over in place (with the cursor they carry),
    /// so a live subscriber sees updates, not the same check-ins again.
    pub async fn replace_for_event(
        &self,
        event: Uuid,
        mut rows: Vec<AttendanceRecord>,
        walk_ins: &[(Uuid, Uuid)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _turn = self.cursor_turn.lock().await;
        let seqs = self.assign_cursors(&mut rows).await?;
        let rows: Vec<AttendanceRow> = rows.iter().map(AttendanceRow::from).collect();
        self.db
            .query(format!(
                "BEGIN;
                 {SEQ_STEPS}
                 DELETE attendance WHERE event = $e AND user NOTINSIDE $users;
                 FOR $row IN $rows {{ UPSERT $row.id CONTENT $row }};
                 {WALK_INS}
                 COMMIT;"
            ))
            .bind(("e", rid("event", event)))
            .bind(("seqs", seqs))
            .bind(("users", rows.iter().map(|r| r.user.clone()).collect::<Vec<_>>()))
            .bind(("rows", rows))
            .bind(("walk_ins", walk_in_rows(walk_ins, now)))
            .await?
            .check()?;
        Ok(())
    }

    /// The cursor and version of each of an event's attendance rows, by user.
    pub async fn cursors(&self, event: Uuid) -> Result<HashMap<Uuid, (String, i64)>, StoreError> {
        #[derive(Debug, SurrealValue)]
        struct Kept {
            user: RecordId,
            cursor: Option<String>,
            version: i64,
        }
        let mut res = self
            .db
            .query("SELECT user, cursor, version FROM attendance WHERE event = $e")
            .bind(("e", rid("event", event)))
            .await?;
        let rows: Vec<Kept> = res.take(0)?;
        rows.into_iter().map(|k| Ok((key_of(&k.user)?, (k.cursor.unwrap_or_default(), k.version)))).collect()
    }

    /// Up to `limit` of an event's check-ins with a cursor after `after`
    /// (from the first for `None`), in cursor order.
    pub async fn check_ins(
        &self,
        event: Uuid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CheckInRow>, StoreError> {
        let mut res = self
            .db
            .query(format!(
                "SELECT {CHECK_IN_FIELDS} FROM attendance WHERE event = $e AND cursor > $after
                 ORDER BY cursor LIMIT $limit"
            ))
            .bind(("e", rid("event", event)))
            .bind(("after", after.unwrap_or_default().to_owned()))
            .bind(("limit", limit as i64))
            .await?;
        let rows: Vec<CheckInFields> = res.take(0)?;
        rows.into_iter().map(CheckInRow::try_from).collect()
    }

    /// How many of an event's users have checked in, and how many of them
    /// were last seen in `(since, now]` (present now).
    pub async fn counts(
        &self,
        event: Uuid,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(usize, usize), StoreError> {
        #[derive(Debug, SurrealValue)]
        struct Counts {
            checked_in: i64,
            present: i64,
        }
        let mut res = self
            .db
            .query(
                "LET $rows = SELECT last_seen FROM attendance WHERE event = $e;
                 RETURN { checked_in: array::len($rows),
                          present: array::len($rows[WHERE last_seen > $since AND last_seen <= $now]) };",
            )
            .bind(("e", rid("event", event)))
            .bind(("since", since))
            .bind(("now", now))
            .await?;
        let c: Option<Counts> = res.take(1)?;
        let c = c.ok_or_else(|| StoreError::Corrupt("no attendance counts".into()))?;
        Ok((c.checked_in.max(0) as usize, c.present.max(0) as usize))
    }

    /// Every change to any attendance row, as it commits: one live query for
    /// the whole table, which the caller fans out.
    pub async fn changes(&self) -> Result<impl futures_util::Stream<Item = AttendanceChange> + use<>, StoreError> {
        let mut res = self.db.query(format!("LIVE SELECT {CHECK_IN_FIELDS} FROM attendance")).await?;
        let stream = res.stream::<surrealdb::Notification<CheckInFields>>(0)?;
        Ok(stream.filter_map(|n| async move {
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "attendance change could not be read");
                    return None;
                }
            };
            let kind = match n.action {
                surrealdb::types::Action::Create => ChangeKind::Created,
                surrealdb::types::Action::Update => ChangeKind::Updated,
                surrealdb::types::Action::Delete => ChangeKind::Deleted,
                _ => return None,
            };
            match CheckInRow::try_from(n.data) {
                Ok(row) => Some(AttendanceChange { kind, row }),
                Err(e) => {
                    tracing::warn!(error = %e, "attendance change could not be read");
                    None
                }
            }
        }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_sightings_round_trip() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let t = DateTime::<Utc>::from_timestamp_millis(1_795_000_000_123).unwrap();
        let sightings = vec![
            LoggedSighting { user: Uuid::new_v4(), seen_at: t, rssi: Some(-67), events: vec![a] },
            LoggedSighting { user: Uuid::new_v4(), seen_at: t, rssi: None, events: vec![] },
            LoggedSighting { user: Uuid::new_v4(), seen_at: t, rssi: Some(-127), events: vec![b, a] },
        ];
        let (bytes, events) = pack(&sightings).unwrap();
        assert_eq!(events, vec![a, b]);
        assert_eq!(unpack(&bytes, &events).unwrap(), sightings);
        assert!(unpack(&bytes[..bytes.len() - 1], &events).is_err(), "truncation is detected");
    }
}
