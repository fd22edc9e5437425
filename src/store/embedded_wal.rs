//! A guard, run before the embedded engine opens, against losing
//! acknowledged writes after a crash.
//!
//! **What goes wrong without it** (SurrealKV 0.21.4, the engine of
//! SurrealDB 3.3.5). A process killed in the middle of writing a log record
//! leaves that record torn at the end of the active log segment. On the
//! next start the engine replays the segment, reads the torn record as its
//! end, and then *appends to that same segment*, after the torn bytes. Every
//! commit of that run is fsynced and acknowledged, but it sits behind
//! garbage: on the start after, replay meets the torn record in the middle
//! of the segment, calls it corruption, and repairs the segment by keeping
//! only what comes before it. What came after, all the acknowledged commits
//! of the run in between, is gone. The test below does exactly this; without
//! the guard it finds the second run's 50 records gone.
//!
//! **The guard.** The engine appends to the highest-numbered segment in its
//! `wal` directory. So before it opens, an empty segment numbered one past
//! the highest is created: this run's commits go to a file of their own, and
//! a torn record stays at the end of the previous segment, where replay
//! takes it for that segment's end (or repairs that segment alone), and
//! carries on with the next one. No record is rewritten or removed here.
//!
//! **What it does not cover.** When the engine's write buffer fills, the
//! commit that found it full was already appended to the old log segment,
//! but goes into the new buffer; once the old buffer is on disk the old
//! segment is deleted, and until the new buffer is written too, that commit
//! (and any other caught the same way) exists only in memory. A crash in
//! that window loses it. Nothing outside the engine can make that commit
//! durable; a larger buffer makes such windows rarer. For batches, the
//! scanner that sent one still has it and sends it again once the store's
//! epoch tells it the store stopped uncleanly (`super::epoch`; see
//! `examples/crash_loop.rs` and the crash-loop figures in the README).

use std::fs;
use std::io;
use std::path::Path;

use super::engine::held_open;

/// The engine's segment files: `wal/<20-digit number>.wal`.
const WAL_DIR: &str = "wal";
const EXTENSION: &str = "wal";

/// Creates an empty log segment after the highest one in the store at
/// `store_dir`, if the store has any. A new store is left as it is, and so
/// is one that another process holds open (opening it will fail on its
/// lock anyway).
pub fn start_a_new_segment(store_dir: &Path) -> io::Result<()> {
    if held_open(store_dir) {
        return Ok(());
    }
    let wal = store_dir.join(WAL_DIR);
    let entries = match fs::read_dir(&wal) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut highest = None;
    for entry in entries {
        let name = entry?.file_name();
        let Some(number) = name.to_str().and_then(segment_number) else { continue };
        highest = highest.max(Some(number));
    }
    let Some(highest) = highest else { return Ok(()) };
    let next = wal.join(format!("{:020}.{EXTENSION}", highest + 1));
    // `create_new`: never over a segment that exists.
    let file = fs::OpenOptions::new().write(true).create_new(true).open(&next)?;
    file.sync_all()?;
    // The new name must survive a crash as well as the file.
    fs::File::open(&wal)?.sync_all()
}

/// The number of a segment file's name, `None` for any other file.
fn segment_number(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(EXTENSION)?.strip_suffix('.')?;
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) { stem.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Conn, EmbeddedMemory};

    #[test]
    fn only_segment_files_are_numbered() {
        assert_eq!(segment_number("00000000000000000007.wal"), Some(7));
        assert_eq!(segment_number("00000000000000000007.wal.repair"), None);
        assert_eq!(segment_number("7.wal"), None);
        assert_eq!(segment_number("repair_temp"), None);
    }

    #[test]
    fn a_new_segment_follows_the_highest_and_a_new_store_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        start_a_new_segment(dir.path()).unwrap();
        assert!(!dir.path().join(WAL_DIR).exists());
        fs::create_dir(dir.path().join(WAL_DIR)).unwrap();
        start_a_new_segment(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join(WAL_DIR)).unwrap().count(), 0);
        for n in [3, 4] {
            fs::write(dir.path().join(WAL_DIR).join(format!("{n:020}.wal")), b"x").unwrap();
        }
        start_a_new_segment(dir.path()).unwrap();
        let new = dir.path().join(WAL_DIR).join("00000000000000000005.wal");
        assert_eq!(fs::metadata(&new).unwrap().len(), 0);
        // The segments before it are untouched.
        assert_eq!(fs::read(dir.path().join(WAL_DIR).join("00000000000000000004.wal")).unwrap(), b"x");
    }

    /// A copy of the store's directory as a crash would leave it: every
    /// commit is fsynced, so the files hold exactly what was acknowledged.
    fn crash_copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                crash_copy(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    /// Appends the start of a log record that never finished: a header that
    /// announces 200 bytes (checksum, length, type "full"), then 20 of them.
    fn tear_the_last_segment(store: &Path) {
        let wal = store.join(WAL_DIR);
        let last = fs::read_dir(&wal)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str().and_then(segment_number))
            .max()
            .unwrap();
        let mut torn = vec![0xAB, 0xCD, 0xEF, 0x01, 0x00, 200, 1];
        torn.extend_from_slice(&[0x55; 20]);
        let path = wal.join(format!("{last:020}.wal"));
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&torn);
        fs::write(&path, bytes).unwrap();
    }

    async fn open(dir: &Path) -> Conn {
        let conn = Conn::embedded(&format!("surrealkv://{}", dir.display()), EmbeddedMemory::default()).await.unwrap();
        conn.use_ns_db("t", "t").await.unwrap();
        conn
    }

    async fn write(conn: &Conn, run: i64) {
        conn.query("FOR $i IN 0..50 { CREATE note SET run = $run, i = $i }")
            .bind(("run", run))
            .await
            .unwrap()
            .check()
            .unwrap();
    }

    async fn notes_per_run(conn: &Conn) -> Vec<(i64, i64)> {
        let mut res =
            conn.query("SELECT run, count() AS n FROM note GROUP BY run ORDER BY run").await.unwrap().check().unwrap();
        let rows: Vec<serde_json::Value> = res.take(0).unwrap();
        rows.iter().map(|r| (r["run"].as_i64().unwrap(), r["n"].as_i64().unwrap())).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_open_elsewhere_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(dir.path()).await;
        write(&conn, 1).await;
        let segments = || fs::read_dir(dir.path().join(WAL_DIR)).unwrap().count();
        let before = segments();
        start_a_new_segment(dir.path()).unwrap();
        assert_eq!(segments(), before, "a segment was added to a store in use");
    }

    /// Two crashes in a row, the first with a record torn at the end of the
    /// log: what the run between them acknowledged is still there after
    /// the second. (Without the new segment, that run's commits were
    /// appended after the torn record and lost at the next start.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_was_acknowledged_between_two_crashes_survives_a_torn_record() {
        let root = tempfile::tempdir().unwrap();
        let (first, second, third) = (root.path().join("a"), root.path().join("b"), root.path().join("c"));
        let conn = open(&first).await;
        write(&conn, 1).await;
        crash_copy(&first, &second);
        tear_the_last_segment(&second);
        let conn = open(&second).await;
        write(&conn, 2).await;
        crash_copy(&second, &third);
        let conn = open(&third).await;
        assert_eq!(notes_per_run(&conn).await, vec![(1, 50), (2, 50)]);
    }
}
