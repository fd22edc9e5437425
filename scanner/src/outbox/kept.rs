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
//! an answer brings an epoch other than the one kept batches were acknowledged
//! under, the uploader asks the server (`storedBatches`, a thousand ids at a
//! time) which of them its store no longer has, and [`Outbox::settle`] puts
//! those back into the outbox, sealed and marked sent, under their own ids and
//! with their own sightings, flagged `resend`: they go out with `resent: true`,
//! and the server takes them again. The others stay kept, under the new epoch.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use uuid::Uuid;

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
    /// The last epoch every kept batch was settled under ([`Self::settle`]).
    pub fn settled_epoch(&self) -> Result<Option<String>, OutboxError> {
        Ok(self.conn.query_row("SELECT value FROM note WHERE name = 'store_epoch'", [], |r| r.get(0)).optional()?)
    }

    /// Whether `epoch` is the last one every kept batch was settled under:
    /// then there is nothing to ask the server.
    pub fn epoch_settled(&self, epoch: &str) -> Result<bool, OutboxError> {
        Ok(self.settled_epoch()?.as_deref() == Some(epoch))
    }

    /// Whether any acknowledged batch is kept.
    pub fn keeps_any(&self) -> Result<bool, OutboxError> {
        Ok(self.conn.query_row("SELECT EXISTS (SELECT 1 FROM kept_batch)", [], |r| r.get(0))?)
    }

    /// Up to `limit` kept batches acknowledged under an epoch other than
    /// `epoch`, oldest first: the ones to ask the server about.
    pub fn kept_under_other_epochs(&self, epoch: &str, limit: usize) -> Result<Vec<Uuid>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare("SELECT batch_id FROM kept_batch WHERE epoch IS NOT ?1 ORDER BY acked_at_ms, seq LIMIT ?2")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let ids = stmt.query_map(params![epoch, limit], |r| r.get::<_, String>(0))?;
        Ok(ids.filter_map(|id| id.ok().and_then(|id| Uuid::parse_str(&id).ok())).collect())
    }

    /// The server, under `epoch`, was asked about the kept batches `checked`
    /// and does not have `missing`: those go back into the outbox, sealed and
    /// marked sent, under their own ids and flagged `resend`, after the
    /// batches waiting now; the rest stay kept, now under `epoch`. Once no kept
    /// batch is left under another epoch, `epoch` is noted as settled. Returns
    /// how many went back.
    pub fn settle(&mut self, epoch: &str, checked: &[Uuid], missing: &[Uuid]) -> Result<u64, OutboxError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_ms();
        let mut requeued = 0;
        for id in checked {
            let id_text = id.to_string();
            let kept: Option<i64> =
                tx.query_row("SELECT seq FROM kept_batch WHERE batch_id = ?1", [&id_text], |r| r.get(0)).optional()?;
            let Some(kept) = kept else { continue };
            if !missing.contains(id) {
                tx.execute("UPDATE kept_batch SET epoch = ?2 WHERE seq = ?1", params![kept, epoch])?;
                continue;
            }
            tx.execute(
                "INSERT INTO batch (batch_id, sealed_at_ms, sent_at_ms, resend) VALUES (?1, ?2, ?2, 1)",
                params![id_text, now],
            )?;
            let seq = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO sighting (identifier, seen_at_ms, rssi, event_id, batch)
                 SELECT identifier, seen_at_ms, rssi, event_id, ?1 FROM kept_sighting WHERE kept = ?2 ORDER BY id",
                params![seq, kept],
            )?;
            tx.execute("DELETE FROM kept_sighting WHERE kept = ?1", [kept])?;
            tx.execute("DELETE FROM kept_batch WHERE seq = ?1", [kept])?;
            requeued += 1;
        }
        let left: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM kept_batch WHERE epoch IS NOT ?1)", [epoch], |r| r.get(0))?;
        if !left {
            tx.execute(
                "INSERT INTO note (name, value) VALUES ('store_epoch', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [epoch],
            )?;
        }
        tx.commit()?;
        Ok(requeued)
    }
}
