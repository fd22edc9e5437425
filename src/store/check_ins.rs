//! Each event's check-in stream: cursors handed out in commit order and the
//! check-ins after a cursor. (Which events got new ones, commit by commit,
//! is `change_feed`.)
//!
//! A new check-in takes the next number of its event's counter
//! (`checkin_seq:<event>`), bumped in the transaction that creates it, so
//! cursors follow commit order; a commit that read a counter another commit
//! moved fails and is folded again.

use chrono::{DateTime, Utc};
use surrealdb::types::{RecordId, SurrealValue};
use uuid::Uuid;

use super::attendance::{AttendanceLog, AttendanceRecord};
use super::{StoreError, key_of, rid};

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
pub(super) struct SeqStep {
    id: RecordId,
    expected: i64,
    next: i64,
}

/// Checks that no other transaction moved the counters since they were
/// read, and moves them: the commit fails (and is retried) otherwise. The
/// counter keeps where it came from (`prev`), so its change-feed entry says
/// which cursors this commit created (see `change_feed`).
pub(super) const SEQ_STEPS: &str = "FOR $s IN $seqs {
    IF ((SELECT VALUE n FROM $s.id)[0] ?? 0) != $s.expected { THROW 'attendance changed concurrently'; };
    UPSERT $s.id SET n = $s.next, prev = $s.expected;
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

impl AttendanceLog<'_> {
    /// Gives each row without a cursor the next ones of its event, in order,
    /// from the counters as they stand; the returned steps make the commit
    /// fail if another commit moved a counter in between.
    pub(super) async fn assign_cursors(&self, rows: &mut [AttendanceRecord]) -> Result<Vec<SeqStep>, StoreError> {
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
}
