//! The check-in change feed: which events got new check-ins, commit by
//! commit, from a SurrealDB `CHANGEFEED` that every node of a cluster can
//! read (migration 14).
//!
//! Every commit that creates check-ins moves its events' counters
//! (`checkin_seq:<event>`) from `prev` to `n`, so one feed entry says "event
//! E has new check-ins, cursors (prev, n]"; the rows themselves are read
//! from `attendance` by cursor. The feed is on the counters, not on
//! `attendance`, because attendance rows are rewritten on every sighting and
//! a feed on them would copy all of ingest's writes.
//!
//! What SurrealDB 3.3.5 guarantees, read from its source (`surrealdb-core`
//! `cf/reader.rs`, `surrealdb-datastore` `tx.rs::store_changes`,
//! `surrealdb-kvs` `timestamp.rs`, `cf/gc.rs`):
//!
//! - `SHOW CHANGES FOR TABLE t SINCE <n> LIMIT <m>` returns, in ascending
//!   versionstamp order, `{ versionstamp, changes: [{ update: <record> } |
//!   { delete: { id } } | { define_table: … }] }`, one element per commit
//!   that touched `t`, from versionstamp `n` inclusive. `LIMIT` defaults to
//!   100 and is capped at 1000; it counts feed entries of every table in the
//!   database (only this one has a feed).
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

use std::time::Duration;

use futures_util::StreamExt;
use surrealdb::types::{RecordId, SurrealValue};
use uuid::Uuid;

use super::attendance::AttendanceLog;
use super::{StoreError, key_of};

/// How long the database keeps feed entries (`CHANGEFEED 1h` in migration 14).
pub const FEED_RETENTION: Duration = Duration::from_secs(3600);

/// Most entries one read returns (SurrealDB's own cap).
pub const FEED_PAGE: usize = 1000;

/// One event's new check-ins in one commit: cursors `after + 1 ..= upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckInStep {
    pub event: Uuid,
    pub after: u64,
    pub upto: u64,
}

/// One commit's entry in the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// The commit's versionstamp: the feed's order.
    pub stamp: u64,
    pub steps: Vec<CheckInStep>,
}

#[derive(Debug, SurrealValue)]
struct RawEntry {
    versionstamp: i64,
    changes: Vec<RawChange>,
}

/// A feed change; deletes and table definitions carry no `update`.
#[derive(Debug, SurrealValue)]
struct RawChange {
    update: Option<RawStep>,
}

#[derive(Debug, SurrealValue)]
struct RawStep {
    id: RecordId,
    n: i64,
    prev: Option<i64>,
}

impl RawEntry {
    fn into_entry(self) -> Result<FeedEntry, StoreError> {
        let steps = self
            .changes
            .into_iter()
            .filter_map(|c| c.update)
            .map(|s| {
                let upto = s.n.max(0) as u64;
                // A counter written without `prev` (by a Rollcall from before
                // migration 14) says only where it got to: take its last one.
                let after = s.prev.map_or(upto.saturating_sub(1), |p| p.clamp(0, s.n.max(0)) as u64);
                Ok(CheckInStep { event: key_of(&s.id)?, after, upto })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(FeedEntry { stamp: self.versionstamp.max(0) as u64, steps })
    }
}

impl AttendanceLog<'_> {
    /// Up to [`FEED_PAGE`] feed entries from versionstamp `since` (inclusive),
    /// in versionstamp order. Fewer than [`FEED_PAGE`] means there were no more.
    pub async fn feed_since(&self, since: u64) -> Result<Vec<FeedEntry>, StoreError> {
        // Both numbers are ours: SHOW CHANGES takes literals only.
        let mut res =
            self.db.query(format!("SHOW CHANGES FOR TABLE checkin_seq SINCE {since} LIMIT {FEED_PAGE}")).await?;
        let raw: Vec<RawEntry> = res.take(0)?;
        raw.into_iter().map(RawEntry::into_entry).collect()
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

    /// A hint each time a commit creates check-ins: a live query on the
    /// counters. Only a hint: on a cluster of several SurrealDB nodes it
    /// hears only the writes made through its own node, and it carries no
    /// data; the feed is read for that.
    pub async fn feed_hints(&self) -> Result<impl futures_util::Stream<Item = ()> + use<>, StoreError> {
        #[derive(Debug, SurrealValue)]
        struct Bumped {
            id: RecordId,
        }
        // Registering a live query writes: instances starting together may conflict.
        let stream = super::retry_on_conflict(|| async {
            let mut res = self.db.query("LIVE SELECT id FROM checkin_seq").await?;
            Ok(res.stream::<surrealdb::Notification<Bumped>>(0)?)
        })
        .await?;
        Ok(stream.map(|_| ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SurrealStore;

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
        let entries = log.feed_since(since).await.unwrap();
        let steps: Vec<CheckInStep> = entries.iter().flat_map(|e| e.steps.clone()).collect();
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
        assert!(log.feed_since(last + 1).await.unwrap().is_empty());
    }
}
