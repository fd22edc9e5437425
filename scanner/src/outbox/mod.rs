//! The durable outbox: every sighting the scanner has accepted, until the server
//! has answered for it.
//!
//! It is one SQLite database (`outbox.sqlite3` in the data directory) in WAL mode
//! with `synchronous=FULL`, so a committed transaction survives `kill -9` and power
//! loss. Other processes (`rollcall-scanner status`, `flush`) can read and work on
//! it while `run` holds it; SQLite's locking keeps them consistent.
//!
//! # Invariants
//!
//! 1. **Accepted means durable.** [`Outbox::append`] returns only after its
//!    transaction is committed. The pipeline calls it once per commit interval with
//!    everything coalesced since the last call (a group commit): one fsync per
//!    interval, not one per advertisement.
//! 2. **A batch is fixed once sent.** [`Outbox::next_batch`] returns the oldest
//!    sealed batch if there is one; otherwise, in one transaction, it takes up to N
//!    pending sightings, gives them a fresh `batchId`, and records both. Before a
//!    batch first goes to the network, [`Outbox::begin_send`] records that it was
//!    sent (durably, in the transaction that reads what is sent). From then on its
//!    id and members never change, so a retry, even after a restart, sends exactly
//!    the same batch under the same id, and the server applies it once (the server
//!    refuses a batch id reused with other contents). The one change a batch may
//!    see is before it was ever sent, which no server can have seen:
//!    [`Outbox::rebase`] mends the times of the sightings heard under a wrong clock
//!    in batches never sent, with the pending ones.
//! 3. **Removed only after an answer.** [`Outbox::ack`] deletes a batch and its
//!    sightings in one transaction, and only the uploader calls it, after the
//!    server's result (fresh or `replayed`) arrived. A crash before the ack means
//!    the batch is sent again and answered `replayed: true`: exactly once overall.
//!    In the same transaction the batch is *kept* for a while (see [`kept`]): if
//!    the server's store later reports a new epoch (it stopped uncleanly and may
//!    have lost what it acknowledged), the kept batches it no longer has go back
//!    into the outbox, to be sent again under their own ids.
//! 4. **A permanent refusal is parked, not retried, not lost.** [`Outbox::park`]
//!    marks a batch the server refused as a whole (a validation error) as *dead*
//!    with the reason. Only the resolver's `VALIDATION` answer parks a batch (see
//!    [`crate::api::interpret`]); anything else is retried. Dead batches are never
//!    sent again automatically; `status` counts them, `flush` fails while any
//!    remain, and [`Outbox::unpark_all`] (`flush --retry-dead`) gives them another
//!    go under their own ids.
//! 5. **Order.** Batches are sent in sealing order and sightings are sealed in the
//!    order they were appended.
//! 6. **Damage is survived.** `run` opens the outbox with
//!    [`Outbox::open_or_recover`]: a file that fails `quick_check` is moved aside,
//!    never deleted, and the rows that can still be read go into a fresh outbox
//!    (see [`salvage`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::sighting::Sighting;

mod kept;
mod poison;
mod rebase;
mod salvage;
pub use rebase::{Rebased, Stamp};
pub use salvage::Recovery;

/// File name of the outbox inside the data directory.
pub const OUTBOX_FILE: &str = "outbox.sqlite3";

/// What can go wrong with the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("outbox: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// A sealed batch, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The id fixed at sealing; the server's idempotency key (with the API key).
    pub batch_id: Uuid,
    /// Its sightings, in append order.
    pub sightings: Vec<Sighting>,
    /// How many times it has been sent without an answer (for the logs).
    pub attempts: u32,
    /// Whether it was ever handed to the network ([`Outbox::begin_send`]): from
    /// then on it never changes.
    pub sent: bool,
    /// Acknowledged before, and back because the store's epoch changed (see
    /// [`kept`]): it is sent flagged `resent`.
    pub resend: bool,
}

/// Counters kept with the outbox, so they survive restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxStats {
    /// Sightings waiting: pending plus sealed, dead excluded.
    pub depth: u64,
    /// Sightings not yet in a batch.
    pub pending: u64,
    /// Batches sealed and not yet answered.
    pub sealed_batches: u64,
    /// Batches the server refused as a whole.
    pub dead_batches: u64,
    /// Sightings in dead batches.
    pub dead_sightings: u64,
    /// Why the most recently parked batch was refused.
    pub last_dead_reason: Option<String>,
    /// When the last batch was acknowledged (Unix ms, scanner clock).
    pub last_upload_ms: Option<i64>,
    /// The id of that batch.
    pub last_batch_id: Option<String>,
    /// Batches acknowledged, ever.
    pub batches_acked: u64,
    /// Sightings in acknowledged batches, ever.
    pub sightings_acked: u64,
    /// Sightings the server rejected with a reason, ever.
    pub sightings_rejected: u64,
    /// Batches the server answered as already applied (`replayed`), ever.
    pub batches_replayed: u64,
    /// The id of the batch to be sent next (the oldest sealed one), if any.
    pub next_batch_id: Option<String>,
    /// The last time a damaged outbox was moved aside and salvaged, if ever.
    pub last_recovery: Option<Recovery>,
    /// Acknowledged batches kept in case the server's store lost them.
    pub kept_batches: u64,
    /// Kept batches sent again because the store's epoch changed, ever.
    pub batches_resent: u64,
    /// Of those, the ones the store had lost and took again, ever.
    pub batches_restored: u64,
}

/// The outbox, one connection. Each task that uses it opens its own.
pub struct Outbox {
    /// The SQLite connection.
    conn: Connection,
    /// How long an acknowledged batch is kept (see [`kept`]); zero: not at all.
    keep_acked: Duration,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("path", &self.conn.path()).finish()
    }
}

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS sighting (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    identifier TEXT    NOT NULL,
    seen_at_ms INTEGER NOT NULL,
    rssi       INTEGER,
    event_id   TEXT,
    batch      INTEGER          -- NULL while pending; else batch.seq
);
CREATE INDEX IF NOT EXISTS sighting_by_batch ON sighting (batch, id);
CREATE TABLE IF NOT EXISTS batch (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id    TEXT    NOT NULL UNIQUE,
    sealed_at_ms INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    dead_reason TEXT                -- NULL while live
);
CREATE TABLE IF NOT EXISTS counter (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS note (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kept_batch (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id    TEXT    NOT NULL UNIQUE,
    acked_at_ms INTEGER NOT NULL,
    epoch       TEXT             -- the store's epoch it was acknowledged under
);
CREATE INDEX IF NOT EXISTS kept_batch_by_time ON kept_batch (acked_at_ms);
CREATE TABLE IF NOT EXISTS kept_sighting (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kept       INTEGER NOT NULL, -- kept_batch.seq
    identifier TEXT    NOT NULL,
    seen_at_ms INTEGER NOT NULL,
    rssi       INTEGER,
    event_id   TEXT
);
CREATE INDEX IF NOT EXISTS kept_sighting_by_batch ON kept_sighting (kept, id);
";

/// The schema's version (`PRAGMA user_version`) this code writes.
const SCHEMA_VERSION: i64 = 4;

/// Creates the tables if needed and brings an outbox made by an older scanner up
/// to [`SCHEMA_VERSION`], in one write transaction: `status` or `flush` may open
/// the file while `run` is creating it, and neither may see the other's half-done
/// migration. Only ever adds nullable columns, so an older scanner can still read
/// a newer outbox.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return tx.commit();
    }
    let conn = &tx;
    let has = |table: &str, column: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1)"),
            [column],
            |r| r.get(0),
        )
    };
    // Version 2: when a batch first failed (for parking poison batches), and the
    // boot and monotonic clock a sighting was heard at (for rebasing a wrong clock).
    // Version 3: when a batch was first handed to the network (NULL: never, so it
    // may still be rebased).
    // Version 4: whether a batch is one acknowledged before and sent again
    // because the store's epoch changed (see `kept`); the `kept_*` tables.
    for (table, column, ty) in [
        ("batch", "first_failed_ms", "INTEGER"),
        ("sighting", "boot_id", "TEXT"),
        ("sighting", "mono_ms", "INTEGER"),
        ("batch", "sent_at_ms", "INTEGER"),
        ("batch", "resend", "INTEGER"),
    ] {
        if !has(table, column)? {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
        }
    }
    // An older scanner did not record sending: any batch it sealed may have been
    // sent, so none of them is ever rebased.
    conn.execute("UPDATE batch SET sent_at_ms = coalesce(first_failed_ms, sealed_at_ms) WHERE sent_at_ms IS NULL", [])?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// Switches a new file to WAL. SQLite answers `SQLITE_BUSY` at once, without
/// calling the busy handler, when another connection is switching the same file,
/// so this waits here, up to the same 10 s as every other lock.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl Outbox {
    /// Opens (creating if needed) the outbox in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, OutboxError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| OutboxError::DataDir { path: data_dir.to_owned(), source })?;
        let path = data_dir.join(OUTBOX_FILE);
        let open = || -> rusqlite::Result<Connection> {
            let mut conn = Connection::open(&path)?;
            // Another process may hold a write lock for a moment (`flush` next to `run`).
            conn.busy_timeout(Duration::from_secs(10))?;
            set_wal(&conn)?;
            // FULL: a commit is fsynced before it returns; with WAL that is one fsync per commit.
            conn.pragma_update(None, "synchronous", "FULL")?;
            migrate(&mut conn)?;
            Ok(conn)
        };
        let conn = open().map_err(|source| OutboxError::Open { path: path.clone(), source })?;
        Ok(Self { conn, keep_acked: Duration::ZERO })
    }

    /// The same outbox, keeping each acknowledged batch for `keep` (see [`kept`]).
    pub fn keeping_acked(mut self, keep: Duration) -> Self {
        self.keep_acked = keep;
        self
    }

    /// Appends sightings in one transaction (a group commit). When it returns `Ok`,
    /// they are durable.
    pub fn append(&mut self, sightings: &[Sighting]) -> Result<(), OutboxError> {
        self.append_stamped(sightings, None)
    }

    /// The oldest sealed batch, or a newly sealed one of at most `max` pending
    /// sightings; `None` when nothing is waiting.
    pub fn next_batch(&mut self, max: usize) -> Result<Option<Batch>, OutboxError> {
        self.next_batch_sealing(max, true)
    }

    /// [`Self::next_batch`], sealing a new batch only if `seal` (not while the
    /// clock is known to be wrong: see [`crate::clock`]).
    pub fn next_batch_sealing(&mut self, max: usize, seal: bool) -> Result<Option<Batch>, OutboxError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let existing: Option<(i64, String, u32, bool, bool)> = tx
            .query_row(
                "SELECT seq, batch_id, attempts, sent_at_ms IS NOT NULL, coalesce(resend, 0) != 0 FROM batch
                 WHERE dead_reason IS NULL ORDER BY seq LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let (seq, batch_id, attempts, sent, resend) = match existing {
            Some(found) => found,
            None if !seal => return Ok(None),
            None => {
                let has_pending: bool =
                    tx.query_row("SELECT EXISTS (SELECT 1 FROM sighting WHERE batch IS NULL)", [], |r| r.get(0))?;
                if !has_pending {
                    return Ok(None);
                }
                let batch_id = Uuid::new_v4().to_string();
                tx.execute(
                    "INSERT INTO batch (batch_id, sealed_at_ms) VALUES (?1, ?2)",
                    params![batch_id, crate::sighting::now_ms()],
                )?;
                let seq = tx.last_insert_rowid();
                let limit = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
                tx.execute(
                    "UPDATE sighting SET batch = ?1 WHERE id IN
                       (SELECT id FROM sighting WHERE batch IS NULL ORDER BY id LIMIT ?2)",
                    params![seq, limit],
                )?;
                (seq, batch_id, 0, false, false)
            }
        };
        let sightings = batch_sightings(&tx, seq)?;
        tx.commit()?;
        let batch_id = Uuid::parse_str(&batch_id).unwrap_or_else(|_| Uuid::nil());
        Ok(Some(Batch { batch_id, sightings, attempts, sent, resend }))
    }

    /// The server answered for `batch_id`, under the store's `epoch` (if it
    /// reports one): remove it with its sightings, keep a copy (see [`kept`]),
    /// and update the counters, in one transaction. Acking an unknown batch
    /// (another process acked it already) changes nothing.
    pub fn ack(
        &mut self,
        batch_id: Uuid,
        rejected: u64,
        replayed: bool,
        epoch: Option<&str>,
    ) -> Result<bool, OutboxError> {
        let id = batch_id.to_string();
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let row: Option<(i64, bool)> = tx
            .query_row("SELECT seq, coalesce(resend, 0) != 0 FROM batch WHERE batch_id = ?1", [&id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((seq, resend)) = row else {
            return Ok(false);
        };
        kept::keep(&tx, seq, &id, epoch, self.keep_acked)?;
        let n = tx.execute("DELETE FROM sighting WHERE batch = ?1", [seq])?;
        tx.execute("DELETE FROM batch WHERE seq = ?1", [seq])?;
        if resend {
            // Counted once already, when it was first acknowledged.
            bump(&tx, "batches_resent", 1)?;
            bump(&tx, "batches_restored", u64::from(!replayed))?;
        } else {
            bump(&tx, "batches_acked", 1)?;
            bump(&tx, "sightings_acked", n as u64)?;
            bump(&tx, "sightings_rejected", rejected)?;
            bump(&tx, "batches_replayed", u64::from(replayed))?;
        }
        let now = crate::sighting::now_ms().to_string();
        for (name, value) in [("last_upload_ms", now.as_str()), ("last_batch_id", id.as_str())] {
            tx.execute(
                "INSERT INTO note (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Sightings waiting to be delivered (pending and sealed, dead excluded).
    pub fn depth(&self) -> Result<u64, OutboxError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM sighting WHERE batch IS NULL
                OR batch IN (SELECT seq FROM batch WHERE dead_reason IS NULL)",
            [],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// The counters and depths.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let count = |sql: &str| -> rusqlite::Result<u64> {
            self.conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n.max(0) as u64)
        };
        let counter = |name: &str| -> rusqlite::Result<u64> {
            self.conn
                .query_row("SELECT value FROM counter WHERE name = ?1", [name], |r| r.get::<_, i64>(0))
                .optional()
                .map(|v| v.unwrap_or(0).max(0) as u64)
        };
        let note = |name: &str| -> rusqlite::Result<Option<String>> {
            self.conn.query_row("SELECT value FROM note WHERE name = ?1", [name], |r| r.get(0)).optional()
        };
        Ok(OutboxStats {
            depth: self.depth()?,
            pending: count("SELECT COUNT(*) FROM sighting WHERE batch IS NULL")?,
            sealed_batches: count("SELECT COUNT(*) FROM batch WHERE dead_reason IS NULL")?,
            dead_batches: count("SELECT COUNT(*) FROM batch WHERE dead_reason IS NOT NULL")?,
            dead_sightings: count(
                "SELECT COUNT(*) FROM sighting WHERE batch IN (SELECT seq FROM batch WHERE dead_reason IS NOT NULL)",
            )?,
            last_dead_reason: self
                .conn
                .query_row(
                    "SELECT dead_reason FROM batch WHERE dead_reason IS NOT NULL ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?,
            last_upload_ms: note("last_upload_ms")?.and_then(|v| v.parse().ok()),
            last_batch_id: note("last_batch_id")?,
            batches_acked: counter("batches_acked")?,
            sightings_acked: counter("sightings_acked")?,
            sightings_rejected: counter("sightings_rejected")?,
            batches_replayed: counter("batches_replayed")?,
            next_batch_id: self
                .conn
                .query_row("SELECT batch_id FROM batch WHERE dead_reason IS NULL ORDER BY seq LIMIT 1", [], |r| {
                    r.get(0)
                })
                .optional()?,
            last_recovery: note("last_recovery")?.and_then(|v| serde_json::from_str(&v).ok()),
            kept_batches: count("SELECT COUNT(*) FROM kept_batch")?,
            batches_resent: counter("batches_resent")?,
            batches_restored: counter("batches_restored")?,
        })
    }
}

/// Adds `by` to the counter `name`.
fn bump(conn: &Connection, name: &str, by: u64) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO counter (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        params![name, i64::try_from(by).unwrap_or(i64::MAX)],
    )
}

/// The sightings of the batch `seq`, in append order.
fn batch_sightings(conn: &Connection, seq: i64) -> rusqlite::Result<Vec<Sighting>> {
    let mut stmt = conn
        .prepare_cached("SELECT identifier, seen_at_ms, rssi, event_id FROM sighting WHERE batch = ?1 ORDER BY id")?;
    let rows = stmt.query_map([seq], |r| {
        Ok(Sighting { identifier: r.get(0)?, seen_at_ms: r.get(1)?, rssi: r.get(2)?, event_id: r.get(3)? })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests;
