//! Batches that do not go through: counted attempts, a batch split in two when
//! refused as too large, and batches parked as dead (and given another go). See
//! [`crate::uploader`].

use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::{Outbox, OutboxError};

impl Outbox {
    /// Counts one more send of `batch_id` that failed; returns how many there have
    /// been and when the first was (Unix ms), for deciding to park it.
    pub fn note_attempt(&mut self, batch_id: Uuid) -> Result<(u32, i64), OutboxError> {
        let now = crate::sighting::now_ms();
        let row = self
            .conn
            .query_row(
                "UPDATE batch SET attempts = attempts + 1, first_failed_ms = coalesce(first_failed_ms, ?2)
                 WHERE batch_id = ?1 RETURNING attempts, first_failed_ms",
                params![batch_id.to_string(), now],
                |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?;
        Ok(row.unwrap_or((0, now)))
    }

    /// Splits a sealed batch the server never accepted (refused as too large) in
    /// two, each under a fresh id: the first half keeps its place in the sending
    /// order, the second is sealed after the batches already waiting. Neither half
    /// has been sent (the server applied nothing of the whole). Returns the
    /// new ids, or `None` for a batch of one sighting, which cannot be split.
    pub fn split(&mut self, batch_id: Uuid) -> Result<Option<(Uuid, Uuid)>, OutboxError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let seq: Option<i64> = tx
            .query_row("SELECT seq FROM batch WHERE batch_id = ?1", [batch_id.to_string()], |r| r.get(0))
            .optional()?;
        let Some(seq) = seq else { return Ok(None) };
        let n: i64 = tx.query_row("SELECT COUNT(*) FROM sighting WHERE batch = ?1", [seq], |r| r.get(0))?;
        if n < 2 {
            return Ok(None);
        }
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        tx.execute(
            "UPDATE batch SET batch_id = ?2, attempts = 0, first_failed_ms = NULL, sent_at_ms = NULL WHERE seq = ?1",
            params![seq, first.to_string()],
        )?;
        tx.execute(
            "INSERT INTO batch (batch_id, sealed_at_ms) VALUES (?1, ?2)",
            params![second.to_string(), crate::sighting::now_ms()],
        )?;
        let second_seq = tx.last_insert_rowid();
        tx.execute(
            "UPDATE sighting SET batch = ?2 WHERE id IN
               (SELECT id FROM sighting WHERE batch = ?1 ORDER BY id LIMIT -1 OFFSET ?3)",
            params![seq, second_seq, n / 2],
        )?;
        tx.commit()?;
        Ok(Some((first, second)))
    }

    /// The server refused `batch_id` as a whole for good: keep it, never send it again.
    pub fn park(&mut self, batch_id: Uuid, reason: &str) -> Result<(), OutboxError> {
        self.conn
            .execute("UPDATE batch SET dead_reason = ?2 WHERE batch_id = ?1", params![batch_id.to_string(), reason])?;
        Ok(())
    }

    /// Gives every dead batch another go: they become sealed batches again, with
    /// their ids and members unchanged, sent before anything sealed after them.
    /// Returns how many there were.
    pub fn unpark_all(&mut self) -> Result<u64, OutboxError> {
        let n =
            self.conn.execute("UPDATE batch SET dead_reason = NULL, attempts = 0 WHERE dead_reason IS NOT NULL", [])?;
        Ok(n as u64)
    }
}
