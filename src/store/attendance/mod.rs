//! The attendance aggregate: one row per (event, user), derived from the
//! raw log (`batches`). Each event's check-in stream is in `check_ins`.
//!
//! Write path (see `crate::app::writer`): each process has one writer task
//! that folds many batches together and commits them in one transaction:
//! the batches' raw records, every changed row once, new check-ins with
//! their cursors. Rows are keyed `attendance:[event, user]` and read by id.
//! Each row carries a `version`: a row is created only if absent and updated
//! only if its version is the one that was read, so two instances folding
//! for the same person cannot overwrite each other; the loser's transaction
//! fails and it folds again from fresh reads.

use chrono::{DateTime, Utc};
use surrealdb::types::{Array, RecordId, SurrealValue};
use uuid::Uuid;

mod reads;
mod replace;

use super::Conn;
use super::batches::BatchRecord;
use super::check_ins::SEQ_STEPS;
use super::rederive::REQUEST;
use super::row_projector::PendingFold;
use super::{StoreError, key_of, registration_id, rid};
use crate::domain::{Attendance, Mark, Stay};

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
    /// Per scanner, the latest counted `seenAt` (see `domain::Mark`), as two
    /// parallel lists.
    mark_scanners: Vec<String>,
    mark_times: Vec<DateTime<Utc>>,
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
            mark_scanners: a.marks.iter().map(|m| m.scanner.to_string()).collect(),
            mark_times: a.marks.iter().map(|m| m.at).collect(),
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
        if r.mark_scanners.len() != r.mark_times.len() {
            return Err(corrupt("marks are not pairs"));
        }
        let mut marks = r
            .mark_scanners
            .iter()
            .zip(&r.mark_times)
            .map(|(s, at)| Ok(Mark { scanner: Uuid::parse_str(s).map_err(|_| corrupt("a mark's scanner"))?, at: *at }))
            .collect::<Result<Vec<_>, StoreError>>()?;
        marks.sort_by_key(|m| m.scanner);
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
                marks,
            },
            version: r.version,
            cursor: r.cursor,
        })
    }
}

/// Why a batch's transaction did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A batch of the group was committed already, by a concurrent retry.
    #[error("batch already applied")]
    AlreadyApplied,
    /// An attendance row changed since it was read; read again and retry.
    #[error("attendance changed concurrently")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything one commit of the writer writes: several batches folded
/// together.
pub struct GroupWrite {
    pub batches: Vec<BatchRecord>,
    /// Rows to create (new check-ins); `version` 1.
    pub created: Vec<AttendanceRecord>,
    /// Rows to update; `version` already incremented.
    pub updated: Vec<AttendanceRecord>,
    /// (user, event) pairs to register as walk-ins.
    pub walk_ins: Vec<(Uuid, Uuid)>,
    /// Events of which this commit leaves rows unwritten for the first time
    /// (see [`AttendanceLog::write_deferred`]): marked in `deferred_rows`.
    pub deferred: Vec<Uuid>,
    /// Sightings for existing rows, left to the instance that holds them
    /// (`row_projector`).
    pub pending: Vec<PendingFold>,
}

/// Updates the rows in `$updated`, each only from the version before its
/// own; any other version fails the transaction.
const UPDATE_ROWS: &str = "FOR $row IN $updated {
    IF array::len(UPDATE $row.id CONTENT $row WHERE version = $row.version - 1 RETURN id) == 0 {
        THROW 'attendance changed concurrently';
    };
};";

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

/// Repository for `attendance` records and check-in cursors.
pub struct AttendanceLog<'a> {
    pub(super) db: &'a Conn,
}

impl<'a> AttendanceLog<'a> {
    pub(super) fn new(db: &'a Conn) -> Self {
        Self { db }
    }

    /// Commits one group of the writer atomically; see the module doc for
    /// the checks. Cursors for the new check-ins are handed out here, from
    /// the counters as they stand, and set on `w.created`; the commit fails
    /// if another commit moved them meanwhile.
    pub async fn commit(&self, w: &mut GroupWrite, now: DateTime<Utc>) -> Result<(), CommitError> {
        let seqs = self.assign_cursors(&mut w.created).await.map_err(CommitError::Store)?;
        let created: Vec<AttendanceRow> = w.created.iter().map(AttendanceRow::from).collect();
        let updated: Vec<AttendanceRow> = w.updated.iter().map(AttendanceRow::from).collect();
        let batches =
            std::mem::take(&mut w.batches).into_iter().map(BatchRecord::into_row).collect::<Result<Vec<_>, _>>()?;
        let walk_ins = walk_in_rows(&w.walk_ins, now);
        let deferred: Vec<RecordId> = w.deferred.iter().map(|e| rid("deferred_rows", *e)).collect();
        let pending =
            std::mem::take(&mut w.pending).into_iter().map(|p| p.into_row(now)).collect::<Result<Vec<_>, _>>()?;
        let res = self
            .db
            .query(format!(
                "BEGIN;
                 IF array::len($batches) > 0 {{ INSERT INTO batch $batches }};
                 {SEQ_STEPS}
                 IF array::len($created) > 0 {{ INSERT INTO attendance $created }};
                 {UPDATE_ROWS}
                 {WALK_INS}
                 FOR $d IN $deferred {{ UPSERT $d SET since = $now; }};
                 IF array::len($pending) > 0 {{ INSERT INTO row_pending $pending }};
                 COMMIT;"
            ))
            .bind(("batches", batches))
            .bind(("seqs", seqs))
            .bind(("created", created))
            .bind(("updated", updated))
            .bind(("walk_ins", walk_ins))
            .bind(("deferred", deferred))
            .bind(("pending", pending))
            .bind(("now", now))
            .await
            .map_err(StoreError::from)?;
        commit_result(res)
    }

    /// Writes rows the writer held back (each with its version already
    /// incremented), atomically. A row whose stored version is not the one
    /// before fails the whole write (`Conflict`).
    pub async fn write_deferred(&self, rows: &[AttendanceRecord]) -> Result<(), CommitError> {
        let updated: Vec<AttendanceRow> = rows.iter().map(AttendanceRow::from).collect();
        let res = self
            .db
            .query(format!("BEGIN; {UPDATE_ROWS} COMMIT;"))
            .bind(("updated", updated))
            .await
            .map_err(StoreError::from)?;
        commit_result(res)
    }

    /// Deletes the `deferred_rows` markers of `events`, none of whose rows
    /// waits any more.
    pub async fn clear_deferred(&self, events: &[Uuid]) -> Result<(), StoreError> {
        let ids: Vec<RecordId> = events.iter().map(|e| rid("deferred_rows", *e)).collect();
        self.db.query("DELETE $ids").bind(("ids", ids)).await?.check()?;
        Ok(())
    }

    /// Turns the `deferred_rows` markers a crash left (rows that lagged
    /// behind the raw log when the process died) into re-derivation
    /// requests; returns their events. Each marker goes in the statement
    /// that requests its re-derivation, so a crash midway asks at most twice.
    pub async fn request_deferred(&self, now: DateTime<Utc>) -> Result<Vec<Uuid>, StoreError> {
        let mut res = self
            .db
            .query(format!(
                "LET $found = SELECT VALUE id FROM deferred_rows;
                 FOR $d IN $found {{
                     LET $rederive = type::record('rederive', record::id($d));
                     {REQUEST}
                     DELETE $d;
                 }};
                 RETURN $found;"
            ))
            .bind(("now", now))
            .await?;
        let found: Vec<RecordId> = res.take(2)?;
        found.iter().map(key_of).collect()
    }
}

/// What a commit's response says: committed, or why not.
fn commit_result(res: surrealdb::IndexedResults) -> Result<(), CommitError> {
    let Some(cause) = super::transaction_failure(res) else { return Ok(()) };
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
