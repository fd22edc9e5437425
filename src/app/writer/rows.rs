//! The writer's attendance rows in memory, and which of them wait to be
//! written.
//!
//! Writing one attendance row costs SurrealDB about 100–160 µs whatever the
//! statement (`examples/row_cost.rs`), and at a venue every batch touches
//! rows of the same crowd. So on an embedded store, where this process is
//! the only writer, the writer keeps the rows it has read or written here
//! and folds each group into them in memory. Its commit then holds what
//! must be durable and exact at once: the raw records, the idempotency
//! records and the new check-ins (rows created). A row that only changed
//! (last seen, stays, marks) is written by a later flush, at most once per
//! interval however many batches touched it.
//!
//! - **Nothing is lost.** The raw log, committed with every batch, is the
//!   truth. The first commit that leaves a row of an event unwritten also
//!   writes a `deferred_rows` marker for the event, and the marker goes only
//!   when none of the event's rows waits and no flush is under way. Markers a crash leaves become
//!   re-derivation requests at start-up (`Writer::start`), which derive the
//!   rows again from the raw log.
//! - **Readers on this process see every acknowledged batch**: the read
//!   paths ask the writer to flush the rows they are about to read first
//!   (`Writer::settle`). Live check-ins and counts of check-ins never wait:
//!   check-ins are rows created, and those are committed with their batch.
//! - Each entry remembers the version stored, so a flush writes only over
//!   the row it knows; a row changed behind its back (an erasure, a
//!   re-derivation) fails the flush, and the writer drops what it held.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::domain::Attendance;
use crate::domain::ingest::Pair;
use crate::store::AttendanceRecord;

/// Entries unused this long, and written, are let go.
const IDLE: Duration = Duration::from_secs(120);
/// Beyond this many entries, every written entry is let go at the next tick.
const MAX_ENTRIES: usize = 500_000;

/// One row as the writer knows it.
#[derive(Debug, Clone)]
struct Entry {
    attendance: Attendance,
    /// The version stored in the database.
    version: i64,
    cursor: String,
    /// Folds into this entry, and how many of them are written.
    changes: u64,
    written: u64,
    /// When the oldest unwritten change was made.
    dirty_since: Option<Instant>,
    used: Instant,
}

/// Rows to write, taken from [`Rows::take_due`], and what to record once
/// they are written.
#[derive(Debug, Default)]
pub struct Flush {
    /// Each with its version incremented.
    pub rows: Vec<AttendanceRecord>,
    /// Per row, the number of changes the write covers.
    marks: Vec<(Pair, u64)>,
}

impl Flush {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn pairs(&self) -> impl Iterator<Item = Pair> + '_ {
        self.marks.iter().map(|(p, _)| *p)
    }
}

/// Which waiting rows a reader needs written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Event(Uuid),
    User(Uuid),
    All,
}

impl Scope {
    fn covers(&self, (event, user): Pair) -> bool {
        match self {
            Scope::Event(e) => *e == event,
            Scope::User(u) => *u == user,
            Scope::All => true,
        }
    }
}

/// The rows the writer holds.
#[derive(Debug)]
pub struct Rows {
    entries: HashMap<Pair, Entry>,
    /// How long a changed row may wait before it is written.
    interval: Duration,
}

impl Rows {
    pub fn new(interval: Duration) -> Self {
        Self { entries: HashMap::new(), interval }
    }

    /// Of `pairs`, those not held (to read from the store).
    pub fn missing(&self, pairs: &[Pair]) -> Vec<Pair> {
        pairs.iter().filter(|p| !self.entries.contains_key(p)).copied().collect()
    }

    /// Holds rows read from the store (never over an entry already held).
    pub fn hold_read(&mut self, records: Vec<AttendanceRecord>, now: Instant) {
        for r in records {
            self.entries.entry((r.event_id, r.user_id)).or_insert_with(|| Entry::stored(r, now));
        }
    }

    /// The held rows of `pairs` as they stand, with their stored version and
    /// cursor, for a fold.
    pub fn view(&self, pairs: &[Pair]) -> Vec<AttendanceRecord> {
        pairs
            .iter()
            .filter_map(|p| {
                let e = self.entries.get(p)?;
                Some(AttendanceRecord {
                    event_id: p.0,
                    user_id: p.1,
                    attendance: e.attendance.clone(),
                    version: e.version,
                    cursor: e.cursor.clone(),
                })
            })
            .collect()
    }

    /// Records a committed group: rows it created (stored, with their
    /// cursors) and rows it changed without writing them.
    pub fn committed(&mut self, created: &[AttendanceRecord], changed: Vec<(Pair, Attendance)>, now: Instant) {
        for r in created {
            self.entries.insert((r.event_id, r.user_id), Entry::stored(r.clone(), now));
        }
        for (pair, attendance) in changed {
            let Some(e) = self.entries.get_mut(&pair) else { continue };
            e.attendance = attendance;
            e.changes += 1;
            e.dirty_since.get_or_insert(now);
            e.used = now;
        }
    }

    /// The rows to write now: those waiting for an interval or more, and
    /// every waiting one in `scopes`.
    pub fn take_due(&self, now: Instant, scopes: &[Scope]) -> Flush {
        let mut flush = Flush::default();
        for (pair, e) in &self.entries {
            let Some(since) = e.dirty_since else { continue };
            let due = now.duration_since(since) >= self.interval || scopes.iter().any(|s| s.covers(*pair));
            if !due {
                continue;
            }
            flush.rows.push(AttendanceRecord {
                event_id: pair.0,
                user_id: pair.1,
                attendance: e.attendance.clone(),
                version: e.version + 1,
                cursor: e.cursor.clone(),
            });
            flush.marks.push((*pair, e.changes));
        }
        flush
    }

    /// Records a flush as written: each row's stored version moved on by
    /// one, and it is clean unless it changed again meanwhile.
    pub fn written(&mut self, flush: &Flush) {
        for (pair, changes) in &flush.marks {
            let Some(e) = self.entries.get_mut(pair) else { continue };
            e.version += 1;
            e.written = *changes;
            if e.written == e.changes {
                e.dirty_since = None;
            }
        }
    }

    /// The version each of `pairs` is held at.
    pub fn versions(&self, pairs: impl Iterator<Item = Pair>) -> Vec<(Pair, i64)> {
        pairs.filter_map(|p| Some((p, self.entries.get(&p)?.version))).collect()
    }

    /// Lets go of the entries of `pairs`, written or not; returns the events
    /// of those that were waiting.
    pub fn drop_pairs(&mut self, pairs: &[Pair]) -> HashSet<Uuid> {
        let mut events = HashSet::new();
        for p in pairs {
            if let Some(e) = self.entries.remove(p)
                && e.dirty_since.is_some()
            {
                events.insert(p.0);
            }
        }
        events
    }

    /// Lets go of every entry `scope` covers (the store's rows changed
    /// behind the writer: re-derived, erased, deleted).
    pub fn forget(&mut self, scope: Scope) {
        self.entries.retain(|p, _| !scope.covers(*p));
    }

    /// Events with rows waiting to be written.
    pub fn waiting_events(&self) -> HashSet<Uuid> {
        self.entries.iter().filter(|(_, e)| e.dirty_since.is_some()).map(|(p, _)| p.0).collect()
    }

    /// Rows waiting to be written.
    pub fn waiting(&self) -> usize {
        self.entries.values().filter(|e| e.dirty_since.is_some()).count()
    }

    /// Lets go of written entries unused for a while (all written ones when
    /// there are too many).
    pub fn evict(&mut self, now: Instant) {
        let crowded = self.entries.len() > MAX_ENTRIES;
        self.entries.retain(|_, e| e.dirty_since.is_some() || (!crowded && now.duration_since(e.used) < IDLE));
    }

    /// Rows held, written or not.
    pub fn held(&self) -> usize {
        self.entries.len()
    }
}

impl Entry {
    fn stored(r: AttendanceRecord, now: Instant) -> Self {
        Self {
            attendance: r.attendance,
            version: r.version,
            cursor: r.cursor,
            changes: 0,
            written: 0,
            dirty_since: None,
            used: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::Sighting;

    fn record(event: Uuid, user: Uuid, version: i64) -> AttendanceRecord {
        let s = Sighting { scanner: Uuid::nil(), seen_at: Utc::now(), rssi: None };
        AttendanceRecord {
            event_id: event,
            user_id: user,
            attendance: Attendance::first(&s),
            version,
            cursor: "c".into(),
        }
    }

    #[test]
    fn a_changed_row_waits_for_the_interval_unless_a_reader_needs_it() {
        let (event, user) = (Uuid::new_v4(), Uuid::new_v4());
        let mut rows = Rows::new(Duration::from_secs(10));
        let t0 = Instant::now();
        rows.hold_read(vec![record(event, user, 3)], t0);
        let changed = rows.view(&[(event, user)]).remove(0).attendance;
        rows.committed(&[], vec![((event, user), changed)], t0);
        assert_eq!(rows.waiting(), 1);
        assert_eq!(rows.waiting_events(), HashSet::from([event]));
        assert!(rows.take_due(t0 + Duration::from_secs(5), &[]).is_empty());
        assert!(rows.take_due(t0 + Duration::from_secs(5), &[Scope::User(Uuid::new_v4())]).is_empty());
        let flush = rows.take_due(t0 + Duration::from_secs(5), &[Scope::Event(event)]);
        assert_eq!(flush.rows.len(), 1);
        assert_eq!(flush.rows[0].version, 4, "written over version 3");
        assert_eq!(rows.take_due(t0 + Duration::from_secs(10), &[]).rows.len(), 1);
        rows.written(&flush);
        assert_eq!(rows.waiting(), 0);
        assert_eq!(rows.versions([(event, user)].into_iter()), vec![((event, user), 4)]);
        assert!(rows.waiting_events().is_empty());
    }

    #[test]
    fn a_row_changed_while_its_flush_ran_still_waits() {
        let (event, user) = (Uuid::new_v4(), Uuid::new_v4());
        let mut rows = Rows::new(Duration::ZERO);
        let t0 = Instant::now();
        rows.hold_read(vec![record(event, user, 1)], t0);
        let a = rows.view(&[(event, user)]).remove(0).attendance;
        rows.committed(&[], vec![((event, user), a.clone())], t0);
        let flush = rows.take_due(t0, &[]);
        rows.committed(&[], vec![((event, user), a)], t0);
        rows.written(&flush);
        assert_eq!(rows.waiting(), 1);
        let again = rows.take_due(t0, &[]);
        assert_eq!(again.rows[0].version, 3, "over the version the first flush wrote");
    }

    #[test]
    fn created_rows_are_held_written_and_idle_written_rows_go() {
        let (event, user) = (Uuid::new_v4(), Uuid::new_v4());
        let mut rows = Rows::new(Duration::from_secs(1));
        let t0 = Instant::now();
        rows.committed(&[record(event, user, 1)], Vec::new(), t0);
        assert!(rows.missing(&[(event, user)]).is_empty());
        assert_eq!(rows.waiting(), 0);
        rows.evict(t0 + IDLE);
        assert_eq!(rows.missing(&[(event, user)]), vec![(event, user)]);
    }

    #[test]
    fn waiting_rows_are_never_evicted_but_can_be_forgotten() {
        let (event, user) = (Uuid::new_v4(), Uuid::new_v4());
        let mut rows = Rows::new(Duration::from_secs(1));
        let t0 = Instant::now();
        rows.hold_read(vec![record(event, user, 1)], t0);
        let a = rows.view(&[(event, user)]).remove(0).attendance;
        rows.committed(&[], vec![((event, user), a)], t0);
        rows.evict(t0 + IDLE * 2);
        assert_eq!(rows.waiting(), 1);
        rows.forget(Scope::User(user));
        assert_eq!(rows.waiting(), 0);
        assert_eq!(rows.held(), 0);
    }
}
