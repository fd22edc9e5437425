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
//! they resolved to.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use surrealdb::Surreal;
use surrealdb::engine::any::Any;
use surrealdb::types::{Array, Bytes, RecordId, SurrealValue};
use uuid::Uuid;

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
    users: Vec<RecordId>,
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
            users: index.users,
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
    users: Vec<RecordId>,
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
            users: users.into_iter().map(|u| rid("user", u)).collect(),
        }
    }
}

/// Repository for `batch` records.
pub struct Batches<'a> {
    db: &'a Surreal<Any>,
}

/// How many batch rows a derivation or an erasure reads at a time.
pub const PAGE: usize = 200;

impl<'a> Batches<'a> {
    pub(super) fn new(db: &'a Surreal<Any>) -> Self {
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
    pub async fn logged_between(
        &self,
        scanner: Option<Uuid>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<RawSighting>, StoreError> {
        let mut res = self
            .db
            .query(
                "SELECT id, scanner, log_format, events, sightings FROM batch
                 WHERE scanner = $s AND (log_format IS NONE OR (first_seen <= $to AND last_seen >= $from))",
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
        self.erase("users CONTAINS $u OR log_format IS NONE", None, user, |s| s.user == user).await
    }

    /// Erases the manual check-ins (sightings an organiser recorded, with no
    /// scanner) of `user` at `event`. Returns how many sightings went.
    pub async fn erase_manual(&self, event: Uuid, user: Uuid) -> Result<usize, StoreError> {
        self.erase(
            "scanner IS NONE AND events CONTAINS $e AND (users CONTAINS $u OR log_format IS NONE)",
            Some(event),
            user,
            |s| s.user == user && s.named_events().contains(&event),
        )
        .await
    }

    /// Rewrites the batches matching `filter` (with `$u` and `$e` bound)
    /// without the sightings `gone` picks, a page at a time.
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
            let mut res = self
                .db
                .query(format!(
                    "SELECT id, scanner, log_format, events, sightings FROM batch
                     WHERE ($after IS NONE OR id > $after) AND ({filter})
                     ORDER BY id LIMIT $limit"
                ))
                .bind(("after", after.clone()))
                .bind(("u", rid("user", user)))
                .bind(("e", event.map(|e| rid("event", e))))
                .bind(("limit", PAGE as i64))
                .await?;
            let rows: Vec<LoggedRow> = res.take(0)?;
            let Some(last) = rows.last().map(|r| r.id.clone()) else { break };
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
                             implicit = $implicit, first_seen = $first, last_seen = $last, users = $users",
                    )
                    .bind(("id", r.id))
                    .bind(("bytes", Bytes::from(raw_log::encode(&kept)?)))
                    .bind(("format", LOG_FORMAT))
                    .bind(("events", index.events))
                    .bind(("implicit", index.implicit))
                    .bind(("first", index.first_seen))
                    .bind(("last", index.last_seen))
                    .bind(("users", index.users))
                    .await?
                    .check()?;
            }
            after = Some(last);
        }
        Ok(erased)
    }
}
