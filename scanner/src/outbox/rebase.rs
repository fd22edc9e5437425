//! What a wrong clock leaves behind in the outbox, and how it is mended: live
//! sightings are stored with this boot's id and monotonic time
//! ([`Outbox::append_stamped`]); a batch is recorded as sent before it first goes
//! to the network ([`Outbox::begin_send`]); and the sightings no server can have
//! seen, pending or in batches never sent, are rebased on the right time
//! ([`Outbox::rebase`]). See [`crate::clock`].

use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::{Batch, Outbox, OutboxError, batch_sightings};
use crate::sighting::Sighting;

/// When and in which boot a group of live sightings was committed (see
/// [`Outbox::append_stamped`] and [`crate::clock`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// This boot's id.
    pub boot_id: String,
    /// The monotonic time since boot at the commit, ms.
    pub mono_ms: i64,
    /// The wall time the sightings were stamped with at the same instant, Unix ms.
    pub wall_ms: i64,
}

/// What [`Outbox::rebase`] changed, and what it could not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebased {
    /// Pending sightings whose time was mended.
    pub pending: u64,
    /// Sightings in sealed batches never sent whose time was mended.
    pub sealed: u64,
    /// How many such batches.
    pub batches: u64,
    /// Sightings of this boot in batches already sent, which keep their times
    /// (the server may have applied them).
    pub kept_sent: u64,
    /// Sightings of other boots waiting, which keep their times (their monotonic
    /// times mean nothing now).
    pub other_boots: u64,
}

impl Outbox {
    /// [`Self::append`] for sightings heard live, stamped by this machine's clock:
    /// each is also given this boot's id and its time on the monotonic clock
    /// (`stamp.mono_ms − (stamp.wall_ms − seen_at_ms)`: exact unless the wall
    /// clock stepped within the last coalescing window), so that
    /// [`Self::rebase`] can mend its wall time if the clock proves wrong.
    pub fn append_stamped(&mut self, sightings: &[Sighting], stamp: Option<&Stamp>) -> Result<(), OutboxError> {
        if sightings.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO sighting (identifier, seen_at_ms, rssi, event_id, boot_id, mono_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for s in sightings {
                let (boot, mono) = match stamp {
                    Some(st) => (Some(st.boot_id.as_str()), Some(st.mono_ms - (st.wall_ms - s.seen_at_ms))),
                    None => (None, None),
                };
                insert.execute(params![s.identifier, s.seen_at_ms, s.rssi, s.event_id, boot, mono])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Mends the wall time of the sightings heard in boot `boot_id` that no server
    /// can have seen: the pending ones, and those in sealed batches never sent
    /// (see [`Self::begin_send`]). Their `seen_at` becomes
    /// `server_ms + (mono − mono_ref)`, where it differs from that by more than
    /// `tolerance_ms`. All in one transaction; a batch already sent is never
    /// touched (the server may have applied it, and would refuse its id with
    /// other contents).
    pub fn rebase(
        &mut self,
        boot_id: &str,
        server_ms: i64,
        mono_ref: i64,
        tolerance_ms: i64,
    ) -> Result<Rebased, OutboxError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let off = "boot_id = ?1 AND mono_ms IS NOT NULL AND abs(?2 + (mono_ms - ?3) - seen_at_ms) > ?4";
        let unsent = "SELECT seq FROM batch WHERE sent_at_ms IS NULL";
        let (batches, sealed): (i64, i64) = tx.query_row(
            &format!("SELECT COUNT(DISTINCT batch), COUNT(*) FROM sighting WHERE {off} AND batch IN ({unsent})"),
            params![boot_id, server_ms, mono_ref, tolerance_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let changed = tx.execute(
            &format!(
                "UPDATE sighting SET seen_at_ms = ?2 + (mono_ms - ?3) WHERE {off} AND (batch IS NULL OR batch IN ({unsent}))"
            ),
            params![boot_id, server_ms, mono_ref, tolerance_ms],
        )?;
        let kept_sent: i64 = tx.query_row(
            &format!("SELECT COUNT(*) FROM sighting WHERE {off} AND batch IN (SELECT seq FROM batch WHERE sent_at_ms IS NOT NULL)"),
            params![boot_id, server_ms, mono_ref, tolerance_ms],
            |r| r.get(0),
        )?;
        let other_boots: i64 = tx.query_row(
            "SELECT COUNT(*) FROM sighting WHERE boot_id IS NOT NULL AND boot_id != ?1
               AND (batch IS NULL OR batch IN (SELECT seq FROM batch WHERE dead_reason IS NULL))",
            [boot_id],
            |r| r.get(0),
        )?;
        tx.commit()?;
        let n = |v: i64| v.max(0) as u64;
        Ok(Rebased {
            pending: (changed as u64).saturating_sub(n(sealed)),
            sealed: n(sealed),
            batches: n(batches),
            kept_sent: n(kept_sent),
            other_boots: n(other_boots),
        })
    }

    /// Records, durably, that `batch_id` is being handed to the network, and
    /// returns it as it is now (a rebase may have mended it since it was read):
    /// from this transaction on it never changes. `None` if it is gone (acked or
    /// parked by another process meanwhile).
    pub fn begin_send(&mut self, batch_id: Uuid) -> Result<Option<Batch>, OutboxError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let row: Option<(i64, u32, bool)> = tx
            .query_row(
                "UPDATE batch SET sent_at_ms = coalesce(sent_at_ms, ?2) WHERE batch_id = ?1 AND dead_reason IS NULL
                 RETURNING seq, attempts, coalesce(resend, 0) != 0",
                params![batch_id.to_string(), crate::sighting::now_ms()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((seq, attempts, resend)) = row else { return Ok(None) };
        let sightings = batch_sightings(&tx, seq)?;
        tx.commit()?;
        Ok(Some(Batch { batch_id, sightings, attempts, sent: true, resend }))
    }
}
