//! The batch aggregate: each uploaded batch's idempotency record and its
//! raw sightings, the log attendance is derived from.
//!
//! A batch is keyed `batch:[scanner, batchId]`: a new key per batch, so
//! concurrent batches never conflict on it. `scanner` there is the uploading
//! key's id, or a digest of the scanner's own identity (`app::ingest`); the
//! `scanner` field is always the key, which decides the batch's scope. Beside the packed sightings
//! (`raw_log`), a row keeps what lets a derivation or an erasure find it
//! without decoding every batch: the events its sightings name, whether any
//! is unassigned (`implicit`), the time range of its sightings, and the users
//! they resolved to (`user_keys`: their UUIDs' 16 bytes each, in order).
//!
//! The users are packed rather than an `array<record<user>>` (as `users`
//! was before migration 19, and still is in rows written before it): a venue
//! batch names about 490 people, and SurrealDB's per-element work on such an
//! array cost about an eighth of the venue profile's throughput. Only
//! erasure reads them, and it tests membership here, by binary search.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use surrealdb::types::{Array, Bytes, RecordId, SurrealValue};
use uuid::Uuid;

use super::Conn;
use super::raw_log::{self, RawSighting};
use super::{StoreError, key_of, rid};

/// The raw log's format version, as `log_format` on a row (absent: 1).
const LOG_FORMAT: i64 = 2;

/// A batch to store.
#[derive(Debug, Clone)]
pub struct BatchRecord {
    /// `batch:[scanner, batchId]`.
    pub id: RecordId,
    /// The API key that uploaded it (none for a manual check-in).
    pub scanner: Option<Uuid>,
    /// The organiser who recorded a manual check-in.
    pub recorded_by: Option<Uuid>,
    pub received_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// A digest of the sightings as uploaded: a retry must match it.
    pub digest: Option<String>,
    /// Every sighting of a known identifier, as heard.
    pub sightings: Vec<RawSighting>,
    /// The result returned for it, as JSON, to answer retries.
    pub result: String,
}

#[derive(Debug, Clone, SurrealValue)]
pub(super) struct BatchRow {
    id: RecordId,
    scanner: Option<RecordId>,
    recorded_by: Option<RecordId>,
    received_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    digest: Option<String>,
    log_format: i64,
    /// Events named by its sightings (explicit ones).
    events: Vec<RecordId>,
    /// Whether any sighting names no event.
    implicit: bool,
    first_seen: Option<DateTime<Utc>>,
    last_seen: Option<DateTime<Utc>>,
    user_keys: Bytes,
    sightings: Bytes,
    result: String,
}

/// What answers a retry of an applied batch.
#[derive(Debug, Clone, SurrealValue)]
pub struct StoredBatch {
    /// The result it returned, as JSON.
    pub result: String,
    /// The digest of its sightings (none for batches stored before digests).
    pub digest: Option<String>,
}

/// A stored batch's sightings, as read back for a derivation.
#[derive(Debug, SurrealValue)]
struct LoggedRow {
    id: RecordId,
    scanner: Option<RecordId>,
    log_format: Option<i64>,
    events: Vec<RecordId>,
    sightings: Bytes,
}

impl LoggedRow {
    fn into_parts(self) -> Result<(RecordId, Option<Uuid>, Vec<RawSighting>), StoreError> {
        let scanner = self.scanner.as_ref().map(key_of).transpose()?;
        let sightings = self.decode()?;
        Ok((self.id, scanner, sightings))
    }

    fn decode(&self) -> Result<Vec<RawSighting>, StoreError> {
        match self.log_format {
            Some(LOG_FORMAT) => raw_log::decode(&self.sightings),
            Some(v) => Err(StoreError::Corrupt(format!("batch log format {v} is unknown"))),
            None => {
                let events: Vec<Uuid> = self.events.iter().map(key_of).collect::<Result<_, _>>()?;
                raw_log::decode_v1(&self.sightings, &events)
            }
        }
    }
}

impl BatchRecord {
    /// The id of a scanner's batch: `batch:[scanner, batchId]`, `scanner`
    /// being whose batch ids they are (a key, or a scanner identity's digest).
    pub fn id_for(scanner: Uuid, batch: Uuid) -> RecordId {
        let key = Array::from(vec![surrealdb::types::Uuid::from(scanner), surrealdb::types::Uuid::from(batch)]);
        RecordId::new("batch", key)
    }

    pub(super) fn into_row(self) -> Result<BatchRow, StoreError> {
        let bytes = raw_log::encode(&self.sightings)?;
        let index = Index::of(&self.sightings);
        Ok(BatchRow {
            id: self.id,
            scanner: self.scanner.map(|s| rid("api_key", s)),
            recorded_by: self.recorded_by.map(|u| rid("user", u)),
            received_at: self.received_at,
            sent_at: self.sent_at,
            digest: self.digest,
            log_format: LOG_FORMAT,
            events: index.events,
            implicit: index.implicit,
            first_seen: index.first_seen,
            last_seen: index.last_seen,
            user_keys: index.user_keys,
            sightings: Bytes::from(bytes),
            result: self.result,
        })
    }
}

/// The fields a row keeps to be found without decoding it.
struct Index {
    events: Vec<RecordId>,
    implicit: bool,
    first_seen: Option<DateTime<Utc>>,
    last_seen: Option<DateTime<Utc>>,
    user_keys: Bytes,
}

impl Index {
    fn of(sightings: &[RawSighting]) -> Self {
        let mut events = HashSet::new();
        let mut users = HashSet::new();
        let mut implicit = false;
        for s in sightings {
            events.extend(s.named_events().iter().copied());
            users.insert(s.user);
            implicit |= matches!(s.assignment, raw_log::Assignment::Implicit);
        }
        let mut events: Vec<Uuid> = events.into_iter().collect();
        events.sort_unstable();
        let mut users: Vec<Uuid> = users.into_iter().collect();
        users.sort_unstable();
        Self {
            events: events.into_iter().map(|e| rid("event", e)).collect(),
            implicit,
            first_seen: sightings.iter().map(|s| s.seen_at).min(),
            last_seen: sightings.iter().map(|s| s.seen_at).max(),
            user_keys: Bytes::from(users.iter().flat_map(|u| *u.as_bytes()).collect::<Vec<u8>>()),
        }
    }
}

/// Whether the packed, sorted `user_keys` of a row hold `user`.
fn holds(user_keys: &[u8], user: Uuid) -> bool {
    let keys: Vec<&[u8]> = user_keys.chunks_exact(16).collect();
    keys.binary_search(&user.as_bytes().as_slice()).is_ok()
}

/// Repository for `batch` records.
pub struct Batches<'a> {
    db: &'a Conn,
}

/// How many batch rows a derivation or an erasure reads at a time.
pub const PAGE: usize = 200;

impl<'a> Batches<'a> {
    pub(super) fn new(db: &'a Conn) -> Self {
        Self { db }
    }

    /// The stored result of a batch, if it was applied.
    pub async fn stored(&self, id: &RecordId) -> Result<Option<StoredBatch>, StoreError> {
        let mut res = self.db.query("SELECT result, digest FROM ONLY $id").bind(("id", id.clone())).await?;
        Ok(res.take(0)?)
    }

    /// Which of these batches are stored already.
    pub async fn existing(&self, ids: Vec<RecordId>) -> Result<Vec<RecordId>, StoreError> {
        let mut res = self.db.query("SELECT VALUE id FROM $ids").bind(("ids", ids)).await?;
        Ok(res.take(0)?)
    }
}

/// The batches that may hold sightings of `$e`: those naming it, and those
/// with unassigned sightings from the keys in `$scanners` whose time range
/// meets `[$opens, $closes]`.
const FOR_EVENT: &str = "(events CONTAINS $e
    OR (implicit = true AND scanner INSIDE $scanners AND first_seen <= $closes AND last_seen >= $opens))";

/// The variables of [`FOR_EVENT`].
fn for_event(event: Uuid, scanners: &[Uuid], (opens, closes): (DateTime<Utc>, DateTime<Utc>)) -> ForEventVars {
    ForEventVars {
        e: rid("event", event),
        scanners: scanners.iter().map(|s| rid("api_key", *s)).collect(),
        opens,
        closes,
    }
}

#[derive(SurrealValue)]
struct ForEventVars {
    e: RecordId,
    scanners: Vec<RecordId>,
    opens: DateTime<Utc>,
    closes: DateTime<Utc>,
}

impl<'a> Batches<'a> {
    /// How many batches [`Batches::page_for_event`] will go through.
    pub async fn count_for_event(
        &self,
        event: Uuid,
        scanners: &[Uuid],
        (opens, closes): (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<i64, StoreError> {
        let mut res = self
            .db
            .query(format!("RETURN count(SELECT VALUE id FROM batch WHERE {FOR_EVENT})"))
            .bind(for_event(event, scanners, (opens, closes)))
            .await?;
        let n: Option<i64> = res.take(0)?;
        Ok(n.unwrap_or(0))
    }

    /// The batches for `event` (as [`Batches::page_for_event`]) received
    /// since `since`: what committed while a derivation was reading.
    pub async fn for_event_since(
        &self,
        event: Uuid,
        scanners: &[Uuid],
        (opens, closes): (DateTime<Utc>, DateTime<Utc>),
        since: DateTime<Utc>,
    ) -> Result<Vec<(RecordId, Option<Uuid>, Vec<RawSighting>)>, StoreError> {
        let mut res = self
            .db
            .query(format!(
                "SELECT id, scanner, log_format, events, sightings FROM batch
                 WHERE received_at >= $since AND {FOR_EVENT}"
            ))
            .bind(("since", since))
            .bind(for_event(event, scanners, (opens, closes)))
            .await?;
        let rows: Vec<LoggedRow> = res.take(0)?;
        rows.into_iter().map(LoggedRow::into_parts).collect()
    }

    /// One page of the batches that may hold sightings of `event`: those
    /// naming it, and those with unassigned sightings, from the keys in
    /// `scanners`, whose time range meets `[opens, closes]`. In id order
    /// after `after`. Returns (batch id, scanner, sightings).
    pub async fn page_for_event(
        &self,
        event: Uuid,
        scanners: &[Uuid],
        (opens, closes): (DateTime<Utc>, DateTime<Utc>),
        after: Option<RecordId>,
    ) -> Result<Vec<(RecordId, Option<Uuid>, Vec<RawSighting>)>, StoreError> {
        let mut res = self
            .db
            .query(format!(
                "SELECT id, scanner, log_format, events, sightings FROM batch
                 WHERE ($after IS NONE OR id > $after) AND {FOR_EVENT}
                 ORDER BY id LIMIT $limit"
            ))
            .bind(("after", after))
            .bind(for_event(event, scanners, (opens, closes)))
            .bind(("limit", PAGE as i64))
            .await?;
        let rows: Vec<LoggedRow> = res.take(0)?;
        rows.into_iter().map(LoggedRow::into_parts).collect()
    }

    /// The sightings a scanner (none: manual check-ins) logged between
    /// `from` and `to`: the raw log's answer to "was this counted before?".
    /// Batches whose sightings still wait to be folded into existing rows
    /// (`row_pending`, see `row_projector`) are left out: they were not
    /// counted yet. Both are read in one statement, so at one moment.
    pub async fn logged_between(
        &self,
        scanner: Option<Uuid>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<RawSighting>, StoreError> {
        let mut res = self
            .db
            .query(
                "RETURN {
                     LET $pending = array::flatten(SELECT VALUE batches FROM row_pending);
                     RETURN (SELECT id, scanner, log_format, events, sightings FROM batch
                         WHERE scanner = $s AND (log_format IS NONE OR (first_seen <= $to AND last_seen >= $from))
                         AND id NOTINSIDE $pending);
                 }",
            )
            .bind(("s", scanner.map(|s| rid("api_key", s))))
            .bind(("from", from))
            .bind(("to", to))
            .await?;
        let rows: Vec<LoggedRow> = res.take(0)?;
        let mut out = Vec::new();
        for r in rows {
            out.extend(r.decode()?.into_iter().filter(|s| s.seen_at >= from && s.seen_at <= to));
        }
        Ok(out)
    }

    /// Erases a user's sightings from the raw log (the right to erasure):
    /// every batch that holds one is rewritten without them. Returns how
    /// many sightings went.
    pub async fn erase_user(&self, user: Uuid) -> Result<usize, StoreError> {
        self.erase("user_keys IS NOT NONE OR users CONTAINS $u OR log_format IS NONE", None, user, |s| s.user == user)
            .await
    }

    /// Erases the manual check-ins (sightings an organiser recorded, with no
    /// scanner) of `user` at `event`. Returns how many sightings went.
    pub async fn erase_manual(&self, event: Uuid, user: Uuid) -> Result<usize, StoreError> {
        self.erase(
            "scanner IS NONE AND events CONTAINS $e AND (user_keys IS NOT NONE OR users CONTAINS $u OR log_format IS NONE)",
            Some(event),
            user,
            |s| s.user == user && s.named_events().contains(&event),
        )
        .await
    }

    /// Rewrites the batches matching `filter` (with `$u` and `$e` bound)
    /// whose users include `user` without the sightings `gone` picks, a
    /// page at a time. A page lists ids and user keys only; the sightings
    /// are read for the rows that hold the user.
    async fn erase(
        &self,
        filter: &str,
        event: Option<Uuid>,
        user: Uuid,
        gone: impl Fn(&RawSighting) -> bool,
    ) -> Result<usize, StoreError> {
        let mut erased = 0;
        let mut after: Option<RecordId> = None;
        loop {
            #[derive(Debug, SurrealValue)]
            struct Candidate {
                id: RecordId,
                /// None in rows written before migration 19, which `filter` found by `users`.
                user_keys: Option<Bytes>,
            }
            let mut res = self
                .db
                .query(format!(
                    "SELECT id, user_keys FROM batch
                     WHERE ($after IS NONE OR id > $after) AND ({filter})
                     ORDER BY id LIMIT $limit"
                ))
                .bind(("after", after.clone()))
                .bind(("u", rid("user", user)))
                .bind(("e", event.map(|e| rid("event", e))))
                .bind(("limit", PAGE as i64))
                .await?;
            let page: Vec<Candidate> = res.take(0)?;
            let Some(last) = page.last().map(|r| r.id.clone()) else { break };
            let ids: Vec<RecordId> = page
                .into_iter()
                .filter(|c| c.user_keys.as_ref().is_none_or(|k| holds(k, user)))
                .map(|c| c.id)
                .collect();
            let mut res = self
                .db
                .query("SELECT id, scanner, log_format, events, sightings FROM $ids ORDER BY id")
                .bind(("ids", ids))
                .await?;
            let rows: Vec<LoggedRow> = res.take(0)?;
            for r in rows {
                let all = r.decode()?;
                let kept: Vec<RawSighting> = all.iter().filter(|s| !gone(s)).cloned().collect();
                if kept.len() == all.len() {
                    continue;
                }
                erased += all.len() - kept.len();
                let index = Index::of(&kept);
                self.db
                    .query(
                        "UPDATE $id SET sightings = $bytes, log_format = $format, events = $events,
                             implicit = $implicit, first_seen = $first, last_seen = $last, users = [],
                             user_keys = $user_keys",
                    )
                    .bind(("id", r.id))
                    .bind(("bytes", Bytes::from(raw_log::encode(&kept)?)))
                    .bind(("format", LOG_FORMAT))
                    .bind(("events", index.events))
                    .bind(("implicit", index.implicit))
                    .bind(("first", index.first_seen))
                    .bind(("last", index.last_seen))
                    .bind(("user_keys", index.user_keys))
                    .await?
                    .check()?;
            }
            after = Some(last);
        }
        Ok(erased)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ingest::Assignment;
    use crate::store::SurrealStore;

    fn sighting(user: Uuid, ms: i64) -> RawSighting {
        RawSighting {
            identifier: format!("id-{user}"),
            user,
            seen_at: DateTime::<Utc>::from_timestamp_millis(ms).unwrap(),
            rssi: Some(-60),
            assignment: Assignment::Implicit,
            rotating: false,
        }
    }

    fn batch(n: u128, sightings: Vec<RawSighting>) -> BatchRecord {
        BatchRecord {
            id: BatchRecord::id_for(Uuid::from_u128(9), Uuid::from_u128(n)),
            scanner: None,
            recorded_by: None,
            received_at: Utc::now(),
            sent_at: None,
            digest: None,
            sightings,
            result: "{}".into(),
        }
    }

    #[test]
    fn the_packed_users_hold_exactly_the_batchs_users() {
        let users: Vec<Uuid> = (0..50u128).map(|i| Uuid::from_u128(i * 7919 + 3)).collect();
        let index = Index::of(&users.iter().enumerate().map(|(i, u)| sighting(*u, i as i64)).collect::<Vec<_>>());
        assert_eq!(index.user_keys.len(), 50 * 16);
        assert!(users.iter().all(|u| holds(&index.user_keys, *u)));
        assert!(!holds(&index.user_keys, Uuid::from_u128(1)));
        assert!(!holds(&[], users[0]));
    }

    /// Rows written before migration 19 list their users in `users` and
    /// have no `user_keys`; an erasure finds the person in either.
    #[tokio::test]
    async fn erasure_finds_a_person_in_rows_of_either_shape() {
        let store = SurrealStore::memory().await.unwrap();
        let (ada, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let new = batch(1, vec![sighting(ada, 1), sighting(bob, 2)]);
        let old = batch(2, vec![sighting(ada, 3), sighting(bob, 4)]).into_row().unwrap();
        let rows = vec![new.into_row().unwrap(), old];
        store.raw().query("INSERT INTO batch $rows").bind(("rows", rows)).await.unwrap().check().unwrap();
        let old_id = BatchRecord::id_for(Uuid::from_u128(9), Uuid::from_u128(2));
        store
            .raw()
            .query("UPDATE $id SET users = $users, user_keys = NONE")
            .bind(("id", old_id))
            .bind(("users", vec![rid("user", ada), rid("user", bob)]))
            .await
            .unwrap()
            .check()
            .unwrap();

        let batches = store.batches();
        assert_eq!(batches.erase_user(ada).await.unwrap(), 2, "one sighting from each row");
        assert_eq!(batches.erase_user(ada).await.unwrap(), 0);
        let left = batches.logged_between(None, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC).await.unwrap();
        assert_eq!(left.iter().map(|s| s.user).collect::<Vec<_>>(), vec![bob, bob]);
        assert_eq!(batches.erase_user(bob).await.unwrap(), 2, "the rewritten old row is found by its new keys");
    }
}
