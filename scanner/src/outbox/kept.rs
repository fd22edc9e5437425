//! Acknowledged batches, kept for a while in case the server's store lost them.
//!
//! The server's embedded store can lose a commit it acknowledged if it is killed
//! at the wrong moment (a fault of its storage engine; see the server's
//! `store::epoch`). What it may have lost, this scanner still has: each batch
//! the server answers for is copied into `kept_batch`/`kept_sighting` in the
//! transaction that acks it, with the store's epoch from the answer, and kept
//! for `--keep-acked-secs` (a day by default).
//!
//! The store's epoch changes when the store starts after an unclean stop. When
//! an answer brings an epoch other than the one a kept batch was acknowledged
//! under, [`Outbox::requeue_for_epoch`] puts that batch back into the outbox,
//! sealed and marked sent, under its own id and with its own sightings, flagged
//! `resend`: it goes out with `resent: true`, and the server answers `replayed`
//! if it still has it, or takes it again if it lost it. Either way it is
//! acknowledged (and kept) again under the new epoch.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Outbox, OutboxError};
use crate::sighting::now_ms;

/// Copies the batch `seq` (being acked) into the kept tables under `epoch`,
/// and drops what was kept longer than `keep`. With `keep` zero, or no
/// epoch, nothing is kept.
pub(super) fn keep(
    conn: &Connection,
    seq: i64,
    batch_id: &str,
    epoch: Option<&str>,
    keep: Duration,
) -> rusqlite::Result<()> {
    let now = now_ms();
    let cutoff = now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
    conn.execute(
        "DELETE FROM kept_sighting WHERE kept IN (SELECT seq FROM kept_batch WHERE acked_at_ms < ?1)",
        [cutoff],
    )?;
    conn.execute("DELETE FROM kept_batch WHERE acked_at_ms < ?1", [cutoff])?;
    // A batch sent again is acknowledged again: its old copy goes.
    conn.execute(
        "DELETE FROM kept_sighting WHERE kept IN (SELECT seq FROM kept_batch WHERE batch_id = ?1)",
        [batch_id],
    )?;
    conn.execute("DELETE FROM kept_batch WHERE batch_id = ?1", [batch_id])?;
    // A server that reports no epoch (a SurrealDB server or TiKV behind it)
    // will never say that its store lost anything: nothing to keep for.
    let Some(epoch) = epoch.filter(|_| !keep.is_zero()) else {
        return Ok(());
    };
    conn.execute(
        "INSERT INTO kept_batch (batch_id, acked_at_ms, epoch) VALUES (?1, ?2, ?3)",
        params![batch_id, now, epoch],
    )?;
    let kept = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO kept_sighting (kept, identifier, seen_at_ms, rssi, event_id)
         SELECT ?1, identifier, seen_at_ms, rssi, event_id FROM sighting WHERE batch = ?2 ORDER BY id",
        params![kept, seq],
    )?;
    Ok(())
}

impl Outbox {
    /// The server's store reports `epoch`: every kept batch acknowledged under
    /// another epoch goes back into the outbox to be sent again (see the module
    /// doc), in the order they were acknowledged, after the batches waiting now.
    /// Returns how many went back.
    pub fn requeue_for_epoch(&mut self, epoch: &str) -> Result<u64, OutboxError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Every kept batch is under the epoch last seen unless it changed.
        let last: Option<String> =
            tx.query_row("SELECT value FROM note WHERE name = 'store_epoch'", [], |r| r.get(0)).optional()?;
        if last.as_deref() == Some(epoch) {
            return Ok(0);
        }
        let stale: Vec<(i64, String)> = {
            let mut stmt =
                tx.prepare("SELECT seq, batch_id FROM kept_batch WHERE epoch IS NOT ?1 ORDER BY acked_at_ms, seq")?;
            let rows = stmt.query_map([epoch], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let now = now_ms();
        for (kept, batch_id) in &stale {
            tx.execute(
                "INSERT INTO batch (batch_id, sealed_at_ms, sent_at_ms, resend) VALUES (?1, ?2, ?2, 1)",
                params![batch_id, now],
            )?;
            let seq = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO sighting (identifier, seen_at_ms, rssi, event_id, batch)
                 SELECT identifier, seen_at_ms, rssi, event_id, ?1 FROM kept_sighting WHERE kept = ?2 ORDER BY id",
                params![seq, kept],
            )?;
            tx.execute("DELETE FROM kept_sighting WHERE kept = ?1", [kept])?;
            tx.execute("DELETE FROM kept_batch WHERE seq = ?1", [kept])?;
        }
        tx.execute(
            "INSERT INTO note (name, value) VALUES ('store_epoch', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [epoch],
        )?;
        tx.commit()?;
        Ok(stale.len() as u64)
    }
}
