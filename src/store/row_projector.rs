//! One projector for attendance rows when several instances share the
//! database (a SurrealDB server, TiKV).
//!
//! Every instance commits its batches' raw records and check-ins (rows
//! created) at once, as on the embedded store. Only one instance at a time,
//! the holder of `row_lease:projector`, changes rows that exist: it holds
//! them in memory and writes each at most once per interval, as the
//! embedded store's writer does. Any other instance commits, with each
//! batch and in the same transaction, a `row_pending` record per event: the
//! sightings that change existing rows, to be folded in by the holder. So
//! instances never write the same row, whatever crowd their scanners hear.
//!
//! - **Durable fold position.** The pending records are it: the holder
//!   deletes those it folded in the transaction that writes `deferred_rows`
//!   markers for their events (migration 16), so a holder that dies either
//!   left them to fold again or left markers that derive the rows again
//!   from the raw log.
//! - **Exact duplicates.** A pending record's batches are in the raw log
//!   but not yet in any row, so the raw log's answer to "was this sighting
//!   counted before?" leaves out every batch still pending
//!   ([`super::Batches::logged_between`]).
//! - **A record that cannot be read** (a bug or a hand edit) does not stop
//!   the others: it is deleted in the transaction that asks for its event
//!   to be derived again from the raw log, which holds its batches.
//! - **The lease** runs out [`LEASE_SECS`] after its holder last renewed
//!   it; another instance then takes it. Rows are guarded by version, so a
//!   holder that was paused past its lease and writes late fails the guard
//!   and lets go (see `app::writer::flush`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use surrealdb::types::{Array, Bytes, RecordId, SurrealValue};
use uuid::Uuid;

use super::{Conn, StoreError, key_of, rid};
use crate::domain::Sighting;

/// How long the lease lasts without being renewed.
pub const LEASE_SECS: i64 = 5;
/// How often the holder renews it, and others try to take it.
pub const RENEW: Duration = Duration::from_secs(1);

/// The sightings one commit of an instance that does not hold the rows
/// made to existing rows of one event, for the holder to fold in.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingFold {
    /// Its record, once stored.
    pub id: Option<RecordId>,
    pub event: Uuid,
    /// The batches they came from (all in the raw log).
    pub batches: Vec<RecordId>,
    /// The event's departure gap when they were planned.
    pub gap: chrono::Duration,
    /// (user, sighting).
    pub sightings: Vec<(Uuid, Sighting)>,
}

#[derive(Debug, SurrealValue)]
pub(super) struct PendingRow {
    id: RecordId,
    event: RecordId,
    batches: Vec<RecordId>,
    gap_secs: i64,
    sightings: Bytes,
}

/// (user, scanner, `seenAt` in Unix ms, RSSI), MessagePack.
type Packed = Vec<(Uuid, Uuid, i64, Option<i32>)>;

fn encode(sightings: &[(Uuid, Sighting)]) -> Result<Vec<u8>, StoreError> {
    let packed: Packed = sightings.iter().map(|(u, s)| (*u, s.scanner, s.seen_at.timestamp_millis(), s.rssi)).collect();
    rmp_serde::to_vec(&packed).map_err(|e| StoreError::Corrupt(format!("pending sightings: {e}")))
}

fn decode(bytes: &[u8]) -> Result<Vec<(Uuid, Sighting)>, StoreError> {
    let packed: Packed =
        rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("pending sightings: {e}")))?;
    packed
        .into_iter()
        .map(|(user, scanner, ms, rssi)| {
            let seen_at = DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| StoreError::Corrupt(format!("pending sighting at {ms} ms")))?;
            Ok((user, Sighting { scanner, seen_at, rssi }))
        })
        .collect()
}

impl PendingFold {
    /// The stored form, keyed `row_pending:[ms, uuid]` so that a scan takes
    /// the oldest first.
    pub(super) fn into_row(self, now: DateTime<Utc>) -> Result<PendingRow, StoreError> {
        let key = Array::from(vec![
            now.timestamp_millis().into_value(),
            surrealdb::types::Uuid::from(Uuid::new_v4()).into_value(),
        ]);
        Ok(PendingRow {
            id: RecordId::new("row_pending", key),
            event: rid("event", self.event),
            batches: self.batches,
            gap_secs: self.gap.num_seconds(),
            sightings: Bytes::from(encode(&self.sightings)?),
        })
    }

    fn from_row(row: PendingRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: Some(row.id),
            event: key_of(&row.event)?,
            batches: row.batches,
            gap: chrono::Duration::try_seconds(row.gap_secs)
                .ok_or_else(|| StoreError::Corrupt(format!("pending gap {} s", row.gap_secs)))?,
            sightings: decode(&row.sightings)?,
        })
    }
}

/// Repository for the rows' lease and the pending records.
pub struct RowProjector<'a> {
    db: &'a Conn,
}

impl<'a> RowProjector<'a> {
    pub(super) fn new(db: &'a Conn) -> Self {
        Self { db }
    }

    /// Takes or renews the lease for `me`; true if `me` holds it now. A
    /// lost race with another instance taking it is a `false`.
    pub async fn lease(&self, me: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let res = self
            .db
            .query(
                "BEGIN;
                 LET $l = (SELECT holder, until FROM row_lease:projector)[0];
                 IF $l IS NOT NONE AND $l.holder != $me AND $l.until >= $now { THROW 'held by another instance' };
                 UPSERT row_lease:projector SET holder = $me, until = $until;
                 COMMIT;",
            )
            .bind(("me", me.to_owned()))
            .bind(("now", now))
            .bind(("until", now + chrono::Duration::seconds(LEASE_SECS)))
            .await?;
        match super::transaction_failure(res) {
            None => Ok(true),
            Some(e) if e.message().contains("held by another") || e.message().to_lowercase().contains("conflict") => {
                Ok(false)
            }
            Some(e) => Err(e.into()),
        }
    }

    /// Gives the lease up (a clean stop), so that another instance takes it
    /// at once.
    pub async fn release(&self, me: &str) -> Result<(), StoreError> {
        self.db.query("DELETE row_lease:projector WHERE holder = $me").bind(("me", me.to_owned())).await?.check()?;
        Ok(())
    }

    /// The oldest `limit` pending records that can be read. One that cannot
    /// (only a bug or a hand edit makes one) must not stop the folding of
    /// those behind it: it is deleted, in the transaction that asks for its
    /// event to be derived again from the raw log, which holds its batches.
    pub async fn pending(&self, limit: usize, now: DateTime<Utc>) -> Result<Vec<PendingFold>, StoreError> {
        let mut res = self.db.query("SELECT * FROM row_pending LIMIT $n").bind(("n", limit as i64)).await?;
        let rows: Vec<PendingRow> = res.take(0)?;
        let mut readable = Vec::with_capacity(rows.len());
        let mut unreadable = Vec::new();
        for row in rows {
            let (id, event) = (row.id.clone(), row.event.clone());
            match PendingFold::from_row(row) {
                Ok(p) => readable.push(p),
                Err(e) => match key_of(&event) {
                    Ok(event) => {
                        tracing::error!(record = ?id, %event, error = %e,
                            "a pending record of sightings cannot be read; deriving its event again from the raw log");
                        unreadable.push((id, super::rederive::rederive_id(event)));
                    }
                    // Without its event nothing can derive it: it stays, for
                    // an operator, and the others go on.
                    Err(_) => tracing::error!(record = ?id, error = %e, "a pending record of sightings cannot be read"),
                },
            }
        }
        if !unreadable.is_empty() {
            let (ids, rederive): (Vec<RecordId>, Vec<RecordId>) = unreadable.into_iter().unzip();
            self.db
                .query(format!(
                    "BEGIN;
                     FOR $rederive IN $rederives {{ {} }};
                     DELETE $ids;
                     COMMIT;",
                    super::rederive::REQUEST
                ))
                .bind(("rederives", rederive))
                .bind(("ids", ids))
                .bind(("now", now))
                .await?
                .check()?;
        }
        Ok(readable)
    }

    /// Deletes the records folded in and marks their events' rows as
    /// waiting (`deferred_rows`), in one transaction.
    pub async fn folded(&self, ids: Vec<RecordId>, marks: &[Uuid], now: DateTime<Utc>) -> Result<(), StoreError> {
        let marks: Vec<RecordId> = marks.iter().map(|e| rid("deferred_rows", *e)).collect();
        self.db
            .query(
                "BEGIN;
                 DELETE $ids;
                 FOR $d IN $marks { UPSERT $d SET since = $now; };
                 COMMIT;",
            )
            .bind(("ids", ids))
            .bind(("marks", marks))
            .bind(("now", now))
            .await?
            .check()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SurrealStore;

    /// One holder at a time; another takes the lease once it ran out, and
    /// at once when it was given up.
    #[tokio::test]
    async fn the_lease_has_one_holder_until_it_runs_out_or_is_given_up() {
        let store = SurrealStore::memory().await.expect("store");
        let lease = store.row_projector();
        let t0 = Utc::now();
        assert!(lease.lease("a", t0).await.expect("taken"));
        assert!(!lease.lease("b", t0).await.expect("asked"), "held by a");
        assert!(lease.lease("a", t0 + chrono::Duration::seconds(LEASE_SECS - 1)).await.expect("renewed"));
        let later = t0 + chrono::Duration::seconds(2 * LEASE_SECS);
        assert!(!lease.lease("b", later - chrono::Duration::seconds(2)).await.expect("asked"), "renewed by a");
        assert!(lease.lease("b", later).await.expect("taken"), "a's lease ran out");
        assert!(!lease.lease("a", later).await.expect("asked"));
        lease.release("a").await.expect("a gives up nothing");
        assert!(!lease.lease("a", later).await.expect("asked"), "b still holds it");
        lease.release("b").await.expect("given up");
        assert!(lease.lease("a", later).await.expect("taken at once"));
    }

    /// A record that cannot be read is set aside for the raw log to derive
    /// again; the others behind it are still folded.
    #[tokio::test]
    async fn an_unreadable_pending_record_asks_for_its_event_again_and_does_not_stop_the_others() {
        let store = SurrealStore::memory().await.expect("store");
        let (bad_event, good_event) = (Uuid::new_v4(), Uuid::new_v4());
        let t = Utc::now();
        let sighting = Sighting { scanner: Uuid::new_v4(), seen_at: t, rssi: Some(-60) };
        let fold = |event| PendingFold {
            id: None,
            event,
            batches: vec![],
            gap: chrono::Duration::minutes(10),
            sightings: vec![(Uuid::new_v4(), sighting)],
        };
        let mut bad = fold(bad_event).into_row(t).expect("row");
        bad.sightings = Bytes::from(b"\x01\x02".to_vec());
        let good = fold(good_event).into_row(t + chrono::Duration::milliseconds(1)).expect("row");
        store
            .raw()
            .query("INSERT INTO row_pending $rows")
            .bind(("rows", vec![bad, good]))
            .await
            .unwrap()
            .check()
            .unwrap();

        let read = store.row_projector().pending(10, t).await.expect("the readable ones");
        assert_eq!(read.iter().map(|p| p.event).collect::<Vec<_>>(), vec![good_event]);
        let asked = store.rederivations().get(bad_event).await.expect("read").expect("asked for");
        assert_eq!(asked.requested, 1);
        assert!(store.rederivations().get(good_event).await.expect("read").is_none());
        let again = store.row_projector().pending(10, t).await.expect("the readable ones");
        assert_eq!(again.len(), 1, "the unreadable record went, the readable one waits for its fold");
        assert_eq!(store.rederivations().get(bad_event).await.unwrap().unwrap().requested, 1, "asked once");
    }

    #[test]
    fn pending_sightings_round_trip() {
        let t = DateTime::from_timestamp_millis(1_764_000_000_123).expect("a time");
        let sightings = vec![
            (Uuid::new_v4(), Sighting { scanner: Uuid::new_v4(), seen_at: t, rssi: Some(-71) }),
            (Uuid::new_v4(), Sighting { scanner: Uuid::nil(), seen_at: t, rssi: None }),
        ];
        assert_eq!(decode(&encode(&sightings).expect("encoded")).expect("decoded"), sightings);
        assert!(decode(b"\x01\x02").is_err());
    }
}
