//! The change feed: what the live hub follows, commit by commit, from
//! SurrealDB `CHANGEFEED`s that every node of a cluster can read, unlike
//! `LIVE SELECT` (which hears only writes made through its own node).
//!
//! Three small tables carry a feed, and one read (`SHOW CHANGES FOR
//! DATABASE`) takes them all:
//!
//! - `checkin_seq` (migration 14): every commit that creates check-ins moves
//!   its events' counters (`checkin_seq:<event>`) from `prev` to `n`, so one
//!   entry says "event E has new check-ins, cursors (prev, n]"; the rows
//!   themselves are read from `attendance` by cursor. Not `attendance`
//!   itself: its rows are rewritten on every sighting, and a feed on them
//!   would copy all of ingest's writes.
//! - `registration` (migration 15), the table itself: a row changes only
//!   when somebody registers, cancels, walks in or is imported, far less
//!   often than check-ins are read, and every writer (the API, ingest, the
//!   CLI, an older Rollcall) is covered without a second write.
//! - `key_revocation` (migration 15): one row per revoked key, written in
//!   the revocation's transaction. Not `api_key`: keys are rewritten on
//!   every heartbeat and use, and their rows hold the secrets' hashes.
//!
//! What SurrealDB 3.3.5 guarantees, read from its source (`surrealdb-core`
//! `cf/reader.rs`, `surrealdb-datastore` `tx.rs::store_changes`,
//! `surrealdb-kvs` `timestamp.rs`, `cf/gc.rs`):
//!
//! - `SHOW CHANGES FOR DATABASE SINCE <n> LIMIT <m>` returns, in ascending
//!   versionstamp order, `{ versionstamp, changes: [{ update: <record> } |
//!   { delete: { id } } | { define_table: … }] }`, one element per commit
//!   that touched a table with a feed, from versionstamp `n` inclusive.
//!   The database stores one entry per (commit, table); `LIMIT` (default
//!   100, at most 1000) counts those, so a read that reaches it may end in
//!   the middle of a commit's tables ([`FeedPage::full`]). (`FOR TABLE t`
//!   would count the other tables' entries too, then drop them: with more
//!   than one feed it cannot tell a short read from the end.)
//! - A commit's versionstamp is minted just before the commit is written,
//!   not atomically with it. On the embedded engines and a single server it
//!   is a hybrid logical clock (milliseconds << 16 | counter), strictly
//!   increasing within the process; on TiKV it is the cluster's timestamp
//!   oracle. Either way two commits can become visible in the other order
//!   than their stamps: a reader that only moves forward can step over a
//!   commit that shows up a moment later. The reader (`live::feed_reader`)
//!   therefore also looks back over the last seconds, and the live hub's
//!   per-event cursor order catches anything else.
//! - `SINCE d"<datetime>"` converts the datetime to nanoseconds while the
//!   embedded engines stamp in HLC units, so it returns nothing there; only
//!   numeric versionstamps are used here.
//! - Entries older than the retention (`CHANGEFEED 1h`) are deleted by a
//!   collector every 30 s, silently: a read from an older versionstamp just
//!   starts at what is left. A reader that falls that far behind must not
//!   trust the feed (see [`FEED_RETENTION`]).

use std::collections::HashSet;
use std::time::Duration;

use surrealdb::types::{RecordId, RecordIdKey, SurrealValue, Value};
use uuid::Uuid;

use super::attendance::AttendanceLog;
use super::{StoreError, key_of};

/// How long the database keeps feed entries (`CHANGEFEED 1h` in migrations 14 and 15).
pub const FEED_RETENTION: Duration = Duration::from_secs(3600);

/// The tables with a feed.
pub(super) const FEED_TABLES: [&str; 3] = ["checkin_seq", "registration", "key_revocation"];

/// Most (commit, table) entries one read returns (SurrealDB's own cap).
pub const FEED_PAGE: usize = 1000;

/// One event's new check-ins in one commit: cursors `after + 1 ..= upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckInStep {
    pub event: Uuid,
    pub after: u64,
    pub upto: u64,
}

/// What some commits changed that the live hub follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedChanges {
    /// New check-ins, in versionstamp order.
    pub steps: Vec<CheckInStep>,
    /// Events whose registrations changed (repeats possible).
    pub registrations: Vec<Uuid>,
    /// API keys revoked (repeats possible).
    pub revoked: Vec<Uuid>,
}

impl FeedChanges {
    pub fn append(&mut self, other: FeedChanges) {
        self.steps.extend(other.steps);
        self.registrations.extend(other.registrations);
        self.revoked.extend(other.revoked);
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.registrations.is_empty() && self.revoked.is_empty()
    }
}

/// One commit's entry in the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// The commit's versionstamp: the feed's order.
    pub stamp: u64,
    pub changes: FeedChanges,
    /// How many tables with a feed the commit wrote (at least): what
    /// `LIMIT` counts.
    pub tables: usize,
}

/// One read of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    pub entries: Vec<FeedEntry>,
    /// The read stopped at its limit: there may be more, and the last entry
    /// may lack the tables of its commit that fell past the limit.
    pub full: bool,
}

#[derive(Debug, SurrealValue)]
struct RawEntry {
    versionstamp: i64,
    changes: Vec<RawChange>,
}

/// A feed change: a record written or deleted, or a table defined.
#[derive(Debug, SurrealValue)]
struct RawChange {
    update: Option<RawRecord>,
    delete: Option<RawDeleted>,
    /// A table definition; only counted.
    define_table: Option<Value>,
}

/// A written record of any table with a feed; each has its own fields.
#[derive(Debug, SurrealValue)]
struct RawRecord {
    id: RecordId,
    /// `checkin_seq`: the counter and where this commit moved it from.
    n: Option<i64>,
    prev: Option<i64>,
    /// `registration`: its event.
    event: Option<RecordId>,
}

#[derive(Debug, SurrealValue)]
struct RawDeleted {
    id: RecordId,
}

/// The event of a registration, from its id `registration:[event, user]`
/// (a deleted one carries nothing else).
fn registration_event(id: &RecordId) -> Option<Uuid> {
    match &id.key {
        RecordIdKey::Array(key) => match key.first() {
            Some(Value::Uuid(event)) => Some(**event),
            _ => None,
        },
        _ => None,
    }
}

impl RawEntry {
    fn into_entry(self) -> Result<FeedEntry, StoreError> {
        let mut changes = FeedChanges::default();
        let mut tables = HashSet::new();
        for (i, change) in self.changes.into_iter().enumerate() {
            if change.define_table.is_some() {
                // Its table is not read; counted on its own, the count errs
                // high, which only ends a page early.
                tables.insert(format!("#{i}"));
            } else if let Some(d) = change.delete {
                if d.id.table.as_str() == "registration" {
                    changes.registrations.extend(registration_event(&d.id));
                }
                tables.insert(d.id.table.to_string());
            } else if let Some(r) = change.update {
                match r.id.table.as_str() {
                    "checkin_seq" => {
                        let upto = r.n.unwrap_or(0).max(0) as u64;
                        // A counter written without `prev` (by a Rollcall from
                        // before migration 14) says only where it got to: take its last one.
                        let after = r.prev.map_or(upto.saturating_sub(1), |p| (p.max(0) as u64).min(upto));
                        changes.steps.push(CheckInStep { event: key_of(&r.id)?, after, upto });
                    }
                    "registration" => {
                        changes.registrations.extend(r.event.as_ref().and_then(|e| key_of(e).ok()));
                    }
                    "key_revocation" => changes.revoked.push(key_of(&r.id)?),
                    _ => {}
                }
                tables.insert(r.id.table.to_string());
            }
        }
        Ok(FeedEntry { stamp: self.versionstamp.max(0) as u64, changes, tables: tables.len().max(1) })
    }
}

impl AttendanceLog<'_> {
    /// The database's feed entries from versionstamp `since` (inclusive),
    /// in versionstamp order, up to [`FEED_PAGE`] tables' worth.
    pub async fn feed_since(&self, since: u64) -> Result<FeedPage, StoreError> {
        // Both numbers are ours: SHOW CHANGES takes literals only.
        let mut res = self.db.query(format!("SHOW CHANGES FOR DATABASE SINCE {since} LIMIT {FEED_PAGE}")).await?;
        let raw: Vec<RawEntry> = res.take(0)?;
        let entries = raw.into_iter().map(RawEntry::into_entry).collect::<Result<Vec<_>, _>>()?;
        let full = entries.iter().map(|e| e.tables).sum::<usize>() >= FEED_PAGE;
        Ok(FeedPage { entries, full })
    }

    /// A versionstamp at or before that of every commit made from `back`
    /// ago: where a new reader starts. From the database's clock, in the
    /// HLC units of the embedded engines and of a single server; on TiKV
    /// (whose stamps are larger for the same time) it lies further back,
    /// which costs a longer first read, never a missed entry.
    pub async fn feed_stamp_before(&self, back: Duration) -> Result<u64, StoreError> {
        let mut res = self.db.query("RETURN time::millis(time::now())").await?;
        let now_ms: Option<i64> = res.take(0)?;
        let ms = (now_ms.unwrap_or(0).max(0) as u64).saturating_sub(back.as_millis() as u64);
        Ok(ms << 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SurrealStore;
    use chrono::Utc;

    async fn read_all(log: &AttendanceLog<'_>, since: u64) -> Vec<FeedEntry> {
        let page = log.feed_since(since).await.unwrap();
        assert!(!page.full);
        page.entries
    }

    #[tokio::test]
    async fn a_commit_that_creates_check_ins_is_one_entry_with_its_range() {
        let store = SurrealStore::memory().await.unwrap();
        let log = store.attendance();
        let since = log.feed_stamp_before(Duration::from_secs(1)).await.unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for (event, prev, n) in [(a, 0, 3), (b, 0, 1), (a, 3, 5)] {
            store
                .db
                .query("UPSERT $id SET n = $n, prev = $prev")
                .bind(("id", crate::store::rid("checkin_seq", event)))
                .bind(("n", n))
                .bind(("prev", prev))
                .await
                .unwrap()
                .check()
                .unwrap();
        }
        let entries = read_all(&log, since).await;
        let steps: Vec<CheckInStep> = entries.iter().flat_map(|e| e.changes.steps.clone()).collect();
        assert_eq!(
            steps,
            [
                CheckInStep { event: a, after: 0, upto: 3 },
                CheckInStep { event: b, after: 0, upto: 1 },
                CheckInStep { event: a, after: 3, upto: 5 }
            ]
        );
        assert!(entries.windows(2).all(|w| w[0].stamp < w[1].stamp), "{entries:?}");
        // From just after the last one: nothing.
        let last = entries.last().unwrap().stamp;
        assert!(read_all(&log, last + 1).await.is_empty());
    }

    #[tokio::test]
    async fn revocations_and_registration_changes_are_in_the_feed() {
        let store = SurrealStore::memory().await.unwrap();
        let log = store.attendance();
        let since = log.feed_stamp_before(Duration::from_secs(1)).await.unwrap();
        let keys = store.api_keys();
        let key =
            keys.create("door".into(), "rc_x".into(), "h".into(), true, Vec::new(), None, Utc::now()).await.unwrap();
        let (user, event) = (Uuid::new_v4(), Uuid::new_v4());
        store.registrations().register(user, event, false, Utc::now()).await.unwrap();
        store.registrations().cancel(user, event, Utc::now()).await.unwrap();
        // A deleted one (its user or event went) names its event by its id.
        let id = crate::store::registration_id(event, user);
        store.db.query("DELETE $id").bind(("id", id)).await.unwrap().check().unwrap();
        // Creating and using a key is not in the feed; revoking it is.
        keys.touch(key.id, Utc::now()).await.unwrap();
        assert!(keys.revoke(key.id, Utc::now()).await.unwrap().unwrap().revoked_at.is_some());
        // An unknown key leaves no trace.
        assert!(keys.revoke(Uuid::new_v4(), Utc::now()).await.unwrap().is_none());
        let mut changes = FeedChanges::default();
        for entry in read_all(&log, since).await {
            assert_eq!(entry.tables, 1, "{entry:?}");
            changes.append(entry.changes);
        }
        assert_eq!(changes, FeedChanges { steps: Vec::new(), registrations: vec![event; 3], revoked: vec![key.id] });
    }
}
