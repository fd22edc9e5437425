//! A damaged outbox: found at start, moved aside, salvaged into a fresh one.
//!
//! An SD card that loses power mid-write, or wears out, can leave pages of the
//! SQLite file unreadable. Opening such a file may still work while reading it
//! fails, so `run` checks it first with `PRAGMA quick_check` (see
//! [`Outbox::open_or_recover`]). When the file is damaged:
//!
//! 1. it is **moved aside**, with its WAL, under a name with the time
//!    (`outbox-corrupt-20300501T090000Z.sqlite3`), never deleted: an operator
//!    can still take it apart with better tools;
//! 2. a **fresh outbox** is created in its place, so the scanner goes on scanning
//!    instead of failing at every start (and systemd restarting it every 5 s);
//! 3. every sighting row that can still be read is **salvaged** into the fresh
//!    outbox as pending, to be sealed into new batches. Rows that had been sent
//!    in a batch whose answer never came may reach the server twice; the server
//!    counts the same sighting (scanner, identifier, `seenAt`) once, so that is
//!    safe. A damaged page loses the rows on it, and the reader skips past it;
//! 4. what happened is **reported**: logged as an error, and kept in the fresh
//!    outbox's notes for `status` and the heartbeat ([`Recovery`]).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, params};

use super::{OUTBOX_FILE, Outbox, OutboxError};
use crate::sighting::{Sighting, now_ms};

/// What a recovery did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// Where the damaged file was moved.
    pub moved_to: PathBuf,
    /// Why it was taken for damaged.
    pub reason: String,
    /// Sighting rows read back into the fresh outbox.
    pub salvaged: u64,
    /// Whether some rows could not be read (lost).
    pub rows_lost: bool,
}

/// Whether an error says the file is damaged (rather than busy, missing or full).
fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase))
}

/// `Ok(None)` when the outbox at `conn` passes `quick_check`, else why not.
fn check(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let problems: Vec<String> = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<_, _>>()?;
    Ok(match problems.as_slice() {
        [ok] if ok == "ok" => None,
        _ => Some(problems.into_iter().take(3).collect::<Vec<_>>().join("; ")),
    })
}

impl Outbox {
    /// Opens the outbox like [`Outbox::open`], after checking it with
    /// `quick_check`; a damaged one is moved aside, salvaged and replaced (see the
    /// module doc). `run` and `doctor` use this; other commands open without the
    /// check, which reads the whole file.
    pub fn open_or_recover(data_dir: &Path) -> Result<(Self, Option<Recovery>), OutboxError> {
        let damage = match Self::open(data_dir) {
            Ok(outbox) => match check(&outbox.conn) {
                Ok(None) => return Ok((outbox, None)),
                Ok(Some(problems)) => format!("quick_check: {problems}"),
                Err(e) if is_corruption(&e) => format!("quick_check: {e}"),
                Err(e) => return Err(e.into()),
            },
            Err(OutboxError::Open { source, .. }) if is_corruption(&source) => format!("opening: {source}"),
            Err(e) => return Err(e),
        };
        let recovery = recover(data_dir, damage)?;
        let mut outbox = Self::open(data_dir)?;
        outbox.note_recovery(&recovery)?;
        tracing::error!(
            moved_to = %recovery.moved_to.display(), salvaged = recovery.salvaged, rows_lost = recovery.rows_lost,
            "the outbox was damaged ({}); it was moved aside and a fresh one started with the {} sightings that \
             could be read{}",
            recovery.reason, recovery.salvaged,
            if recovery.rows_lost { "; some rows could not be read and are lost" } else { "" }
        );
        Ok((outbox, Some(recovery)))
    }

    /// Checks the outbox in `data_dir` with `quick_check`, read-only: `Ok(None)`
    /// when it is sound, else what is wrong. Changes nothing (`doctor`).
    pub fn integrity(data_dir: &Path) -> Result<Option<String>, OutboxError> {
        let path = data_dir.join(OUTBOX_FILE);
        let conn = match Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY) {
            Ok(c) => c,
            Err(e) if is_corruption(&e) => return Ok(Some(e.to_string())),
            Err(source) => return Err(OutboxError::Open { path, source }),
        };
        match check(&conn) {
            Ok(problems) => Ok(problems),
            Err(e) if is_corruption(&e) => Ok(Some(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Keeps the report of a recovery in the notes, for `status` and the heartbeat.
    fn note_recovery(&mut self, r: &Recovery) -> Result<(), OutboxError> {
        let text = serde_json::to_string(r).unwrap_or_default();
        let tx = self.conn.transaction()?;
        for (name, value) in [("last_recovery", text), ("last_recovery_ms", now_ms().to_string())] {
            tx.execute(
                "INSERT INTO note (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Moves the damaged file aside and fills a fresh outbox with what can be read.
fn recover(data_dir: &Path, reason: String) -> Result<Recovery, OutboxError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let original = data_dir.join(OUTBOX_FILE);
    let moved_to = data_dir.join(format!("outbox-corrupt-{stamp}.sqlite3"));
    // The WAL and shared-memory files go along under matching names, so that the
    // moved copy opens with its last commits.
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", original.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", moved_to.display()));
            std::fs::rename(&from, &to).map_err(|source| OutboxError::DataDir { path: from.clone(), source })?;
        }
    }
    let (rows, rows_lost) = read_what_can_be_read(&moved_to);
    let mut fresh = Outbox::open(data_dir)?;
    // Appended in chunks, so one huge salvage does not need one huge transaction.
    for chunk in rows.chunks(5_000) {
        fresh.append(chunk)?;
    }
    Ok(Recovery { moved_to, reason, salvaged: rows.len() as u64, rows_lost })
}

/// Reads every sighting row it can from a damaged outbox, in id order, skipping
/// past unreadable pages. Returns the rows and whether some could not be read.
fn read_what_can_be_read(path: &Path) -> (Vec<Sighting>, bool) {
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return (Vec::new(), true);
    };
    // The highest id, to know when to stop skipping; the rightmost pages may be
    // the damaged ones, so the autoincrement counter is asked as well.
    let max_id = ["SELECT max(id) FROM sighting", "SELECT seq FROM sqlite_sequence WHERE name = 'sighting'"]
        .iter()
        .filter_map(|sql| conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0)).ok().flatten())
        .max();
    let Some(max_id) = max_id else {
        // Nothing readable says how many there were: try once from the start.
        let mut rows = Vec::new();
        let lost = read_from(&conn, 0, &mut rows).is_err();
        return (rows, lost);
    };
    let mut rows = Vec::new();
    let mut lost = false;
    let mut cursor = 0i64;
    let mut step = 1i64;
    while cursor < max_id {
        match read_from(&conn, cursor, &mut rows) {
            Ok(()) => break,
            Err(last) => {
                lost = true;
                // Skip past the damaged page: a little at first, then faster.
                if last > cursor {
                    cursor = last;
                    step = 1;
                } else {
                    cursor = cursor.saturating_add(step);
                    step = step.saturating_mul(2);
                }
            }
        }
    }
    (rows, lost)
}

/// Reads the rows after id `after` into `rows`; on an error, returns the last id read.
fn read_from(conn: &Connection, after: i64, rows: &mut Vec<Sighting>) -> Result<(), i64> {
    let mut last = after;
    let mut stmt = conn
        .prepare("SELECT id, identifier, seen_at_ms, rssi, event_id FROM sighting WHERE id > ?1 ORDER BY id")
        .map_err(|_| last)?;
    let mut query = stmt.query([after]).map_err(|_| last)?;
    loop {
        match query.next() {
            Ok(Some(r)) => {
                let read = (|| -> rusqlite::Result<(i64, Sighting)> {
                    Ok((
                        r.get(0)?,
                        Sighting { identifier: r.get(1)?, seen_at_ms: r.get(2)?, rssi: r.get(3)?, event_id: r.get(4)? },
                    ))
                })();
                match read {
                    Ok((id, s)) => {
                        last = id;
                        rows.push(s);
                    }
                    Err(_) => return Err(last),
                }
            }
            Ok(None) => return Ok(()),
            Err(_) => return Err(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(i: i64) -> Sighting {
        Sighting { identifier: format!("device-{i:05}"), seen_at_ms: 1_000 + i, rssi: Some(-60), event_id: None }
    }

    /// An outbox of `n` sightings, checkpointed into the main file, then closed.
    fn outbox_with(dir: &Path, n: i64) -> PathBuf {
        let mut ob = Outbox::open(dir).unwrap();
        ob.append(&(0..n).map(s).collect::<Vec<_>>()).unwrap();
        ob.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        drop(ob);
        dir.join(OUTBOX_FILE)
    }

    #[test]
    fn a_sound_outbox_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        outbox_with(dir.path(), 10);
        let (ob, recovery) = Outbox::open_or_recover(dir.path()).unwrap();
        assert_eq!((ob.depth().unwrap(), recovery), (10, None));
    }

    #[test]
    fn a_damaged_page_is_moved_aside_and_the_rest_salvaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = outbox_with(dir.path(), 3_000);
        let mut bytes = std::fs::read(&path).unwrap();
        let pages = bytes.len() / 4096;
        // Garbage over two pages in the middle of the file.
        for b in &mut bytes[(pages / 2) * 4096..(pages / 2 + 2) * 4096] {
            *b = 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();

        let (ob, recovery) = Outbox::open_or_recover(dir.path()).unwrap();
        let recovery = recovery.expect("the damage was found");
        assert!(recovery.moved_to.exists(), "the damaged file is kept");
        assert!(recovery.moved_to.file_name().unwrap().to_str().unwrap().starts_with("outbox-corrupt-"));
        let depth = ob.depth().unwrap();
        assert_eq!(depth, recovery.salvaged);
        assert!(depth > 1_000 && depth <= 3_000, "most rows salvaged: {depth}");
        let st = ob.stats().unwrap();
        assert_eq!(st.last_recovery.as_ref().map(|r| r.salvaged), Some(depth));
        drop(ob);
        // The fresh one is sound.
        let (_, again) = Outbox::open_or_recover(dir.path()).unwrap();
        assert_eq!(again, None);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_replaced_with_an_empty_outbox() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OUTBOX_FILE), vec![0x42; 8192]).unwrap();
        let (ob, recovery) = Outbox::open_or_recover(dir.path()).unwrap();
        let recovery = recovery.expect("the damage was found");
        assert_eq!((recovery.salvaged, ob.depth().unwrap()), (0, 0));
    }
}
