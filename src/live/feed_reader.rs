//! This process's position in the check-in change feed (`store::change_feed`):
//! each read returns the entries it has not returned before, once each.
//!
//! Reads go forward from one past the highest versionstamp seen. A commit's
//! versionstamp is minted a moment before the commit becomes visible, so a
//! commit can appear behind one that was already read; once a second a read
//! therefore starts from where the reader stood [`LOOK_BACK`] ago instead,
//! and entries already taken are skipped by their versionstamp. A commit
//! visible within [`SETTLE`] of its stamp is found by the next look-back at
//! the latest; any later one is still found by the live hub's per-event
//! cursor order when the event's next check-in arrives.
//!
//! The database forgets entries older than its retention without saying
//! so. A reader that has not read for half of it ([`Read::Behind`]) is
//! replaced by a new one from now, and the hub reads its subscribers'
//! check-ins from the rows instead.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::store::{AttendanceLog, FEED_RETENTION, FeedChanges, FeedEntry, FeedPage, StoreError};

/// How long a commit may take from its versionstamp to being visible and
/// still be found by a look-back.
pub(super) const SETTLE: Duration = Duration::from_secs(2);
/// How often a read looks back.
const LOOK_BACK_EVERY: Duration = Duration::from_secs(1);
/// How far a look-back reaches.
const LOOK_BACK: Duration = Duration::from_secs(3);

/// What one read found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Read {
    /// The changes of the entries not returned before, in versionstamp order.
    Changes(FeedChanges),
    /// The reader has not read for so long that the database may have
    /// forgotten entries it needs: start a new one and read rows instead.
    Behind,
}

pub(super) struct FeedReader {
    /// Where a forward read starts: one past the highest versionstamp seen.
    next: u64,
    /// `(when, next then)` for the last [`LOOK_BACK`]: where look-backs start.
    marks: VecDeque<(Instant, u64)>,
    /// The versionstamps taken that a look-back can read again.
    seen: BTreeSet<u64>,
    last_look_back: Instant,
    /// When the last successful read began.
    last_ok: Instant,
}

impl FeedReader {
    /// A reader whose first read starts at versionstamp `start`.
    pub(super) fn new(start: u64, now: Instant) -> Self {
        FeedReader {
            next: start,
            marks: VecDeque::from([(now, start)]),
            seen: BTreeSet::new(),
            last_look_back: now,
            last_ok: now,
        }
    }

    /// Reads the feed up to its end.
    pub(super) async fn read(&mut self, log: AttendanceLog<'_>) -> Result<Read, StoreError> {
        let now = Instant::now();
        if self.behind(now) {
            return Ok(Read::Behind);
        }
        let mut since = self.since(now);
        let mut changes = FeedChanges::default();
        loop {
            metrics::counter!("rollcall_live_feed_reads_total").increment(1);
            let FeedPage { mut entries, full } = log.feed_since(since).await?;
            let more = full && entries.len() > 1;
            if more {
                // The read stopped at its limit, perhaps inside the last
                // commit: the next page reads that one again, whole.
                since = entries.pop().map_or(since, |last| last.stamp);
            }
            changes.append(self.take(entries));
            if !more {
                break;
            }
        }
        self.last_ok = now;
        Ok(Read::Changes(changes))
    }

    fn behind(&self, now: Instant) -> bool {
        now.duration_since(self.last_ok) > FEED_RETENTION / 2
    }

    /// Where a read at `now` starts: forward, or once every
    /// [`LOOK_BACK_EVERY`], from where the reader stood [`LOOK_BACK`] ago.
    fn since(&mut self, now: Instant) -> u64 {
        self.marks.push_back((now, self.next));
        if now.duration_since(self.last_look_back) < LOOK_BACK_EVERY {
            return self.next;
        }
        self.last_look_back = now;
        while self.marks.len() > 1 && now.duration_since(self.marks[1].0) >= LOOK_BACK {
            self.marks.pop_front();
        }
        let from = self.marks[0].1;
        // Nothing below `from` is read again from now on.
        self.seen = self.seen.split_off(&from);
        from
    }

    /// The changes of the entries not taken before.
    fn take(&mut self, entries: Vec<FeedEntry>) -> FeedChanges {
        let mut changes = FeedChanges::default();
        for entry in entries {
            self.next = self.next.max(entry.stamp + 1);
            if self.seen.insert(entry.stamp) {
                changes.append(entry.changes);
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CheckInStep;
    use uuid::Uuid;

    fn entry(stamp: u64, event: Uuid, upto: u64) -> FeedEntry {
        let steps = vec![CheckInStep { event, after: upto - 1, upto }];
        FeedEntry { stamp, changes: FeedChanges { steps, ..FeedChanges::default() }, tables: 1 }
    }

    #[test]
    fn forward_reads_go_on_from_past_the_last_stamp_and_take_each_entry_once() {
        let t0 = Instant::now();
        let e = Uuid::new_v4();
        let mut r = FeedReader::new(100, t0);
        assert_eq!(r.since(t0), 100);
        assert_eq!(r.take(vec![entry(100, e, 1), entry(105, e, 2)]).steps.len(), 2);
        assert_eq!(r.since(t0 + Duration::from_millis(10)), 106);
        // The same entries again (a read racing another): nothing new.
        assert!(r.take(vec![entry(105, e, 2)]).is_empty());
    }

    #[test]
    fn a_commit_that_shows_up_behind_one_already_read_is_found_by_the_next_look_back() {
        let t0 = Instant::now();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut r = FeedReader::new(100, t0);
        assert_eq!(r.since(t0), 100);
        // Stamp 110 (event b) is read while 107 (event a) is not visible yet.
        assert_eq!(r.take(vec![entry(110, b, 1)]).steps.len(), 1);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.since(t1), 111, "forward reads start past what was seen");
        assert!(r.take(Vec::new()).is_empty());
        // A second later the reader looks back to where it stood then, and
        // takes 107 but not 110 again.
        let t2 = t0 + LOOK_BACK_EVERY;
        let from = r.since(t2);
        assert!(from <= 107, "look-back from {from}");
        let got = r.take(vec![entry(107, a, 1), entry(110, b, 1)]);
        assert_eq!(got.steps, vec![CheckInStep { event: a, after: 0, upto: 1 }]);
        assert_eq!(r.since(t2 + Duration::from_millis(10)), 111);
    }

    #[test]
    fn look_backs_reach_back_a_bounded_time_and_forget_what_they_cannot_read_again() {
        let t0 = Instant::now();
        let e = Uuid::new_v4();
        let mut r = FeedReader::new(0, t0);
        for i in 1..=100u64 {
            let now = t0 + Duration::from_millis(100 * i);
            r.since(now);
            r.take(vec![entry(i * 10, e, i)]);
        }
        // At 11 s the look-back starts where the reader stood at 8 s
        // (LOOK_BACK before), before its 80th read, not at the beginning.
        let now = t0 + Duration::from_secs(11);
        assert_eq!(LOOK_BACK, Duration::from_secs(3));
        let from = r.since(now);
        assert_eq!(from, 791);
        assert!(r.seen.iter().all(|&s| s >= from));
        assert!(r.marks.len() <= 40, "{}", r.marks.len());
    }

    #[test]
    fn a_reader_that_has_not_read_for_half_the_retention_is_behind() {
        let t0 = Instant::now();
        let r = FeedReader::new(0, t0);
        assert!(!r.behind(t0 + FEED_RETENTION / 4));
        assert!(r.behind(t0 + FEED_RETENTION / 2 + Duration::from_secs(1)));
    }

    /// A read stops at SurrealDB's limit of 1000 (commit, table) entries,
    /// which can fall inside a commit that wrote two tables with a feed.
    #[tokio::test]
    async fn a_commit_cut_by_the_read_limit_is_read_whole() {
        use crate::store::{FEED_PAGE, SurrealStore, rid};
        let store = SurrealStore::memory().await.unwrap();
        let log = store.attendance();
        let start = log.feed_stamp_before(Duration::from_secs(1)).await.unwrap();
        let (event, user) = (Uuid::new_v4(), Uuid::new_v4());
        let seq = rid("checkin_seq", event);
        for n in 1..FEED_PAGE as i64 {
            let q = store.raw().query("UPSERT $id SET n = $n, prev = $n - 1").bind(("id", seq.clone())).bind(("n", n));
            q.await.unwrap().check().unwrap();
        }
        // Entry 1000 is this commit's counter, 1001 its registration.
        store
            .raw()
            .query(
                "BEGIN; UPSERT $id SET n = $n, prev = $n - 1;
                 UPSERT $reg SET user = $user, event = $event, status = 'REGISTERED', walk_in = true,
                    registered_at = time::now();
                 COMMIT;",
            )
            .bind(("id", seq))
            .bind(("n", FEED_PAGE as i64))
            .bind(("reg", crate::store::registration_id(event, user)))
            .bind(("user", rid("user", user)))
            .bind(("event", rid("event", event)))
            .await
            .unwrap()
            .check()
            .unwrap();
        let mut r = FeedReader::new(start, Instant::now());
        let Read::Changes(changes) = r.read(log).await.unwrap() else { panic!("behind") };
        assert_eq!(changes.steps.len(), FEED_PAGE);
        assert_eq!(changes.steps.last().unwrap().upto, FEED_PAGE as u64);
        assert_eq!(changes.registrations, vec![event]);
    }
}
