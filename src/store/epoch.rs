//! The store's epoch: an id that changes whenever the store may have lost
//! writes it had acknowledged, so that scanners know to send again what
//! they still hold.
//!
//! **Why.** SurrealKV 0.21.4 (the engine of SurrealDB 3.3.5) can lose a
//! commit it acknowledged when it is killed: when its write buffer fills,
//! the commit that found it full is logged in the old log segment but put in
//! the new buffer, and the old segment is deleted once the old buffer is on
//! disk; until the new buffer is written too, that commit lives only in
//! memory (see `embedded_wal`). Nothing outside the engine can make that
//! commit durable. But the scanner that sent it still has it: it keeps each
//! acknowledged batch for a while, and when the epoch in an answer differs
//! from the one a batch was acknowledged under, it asks which of those the
//! store no longer has (`storedBatches`) and sends them again, flagged
//! `resent`; the store takes them again (see `app::ingest`).
//!
//! **When it changes.** An embedded store on disk keeps its epoch in
//! `rollcall-epoch` in its directory. A clean stop, once the engine has
//! written its buffers and let go of its lock, leaves a `rollcall-clean-stop`
//! mark beside it. The next open removes the mark and keeps the epoch; an
//! open without the mark (the last process was killed, or the machine lost
//! power) starts a new epoch. An in-memory store starts a new epoch every
//! time (it starts empty). A SurrealDB server or TiKV reports none: this
//! process cannot see their restarts.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;

use uuid::Uuid;

/// The epoch's file in the store's directory.
const EPOCH_FILE: &str = "rollcall-epoch";
/// Left by a clean stop; removed by the next open.
const CLEAN_STOP_FILE: &str = "rollcall-clean-stop";

/// The epoch of the embedded store in `dir`, which this process has just
/// opened (it holds the engine's lock): the same as last time if the last
/// process stopped cleanly, else a new one, written durably before it is
/// returned.
pub(super) fn begin(dir: &Path) -> io::Result<String> {
    // Unreadable counts as absent: a new epoch is the safe side (scanners only
    // ask what the store still has), and writing it reports a real problem.
    let kept = fs::read_to_string(dir.join(EPOCH_FILE)).ok().map(|s| s.trim().to_owned());
    let clean = dir.join(CLEAN_STOP_FILE);
    let stopped_cleanly = clean.exists();
    if stopped_cleanly {
        fs::remove_file(&clean)?;
        sync_dir(dir)?;
    }
    match kept {
        Some(epoch) if stopped_cleanly && !epoch.is_empty() => Ok(epoch),
        _ => {
            let epoch = Uuid::new_v4().to_string();
            write_durably(dir, EPOCH_FILE, &epoch)?;
            Ok(epoch)
        }
    }
}

/// Records that the store in `dir` was closed cleanly: the engine has
/// written everything and released its lock.
pub(super) fn mark_clean_stop(dir: &Path) -> io::Result<()> {
    write_durably(dir, CLEAN_STOP_FILE, "")
}

/// A new epoch for a store that starts empty (in memory).
pub(super) fn fresh() -> String {
    Uuid::new_v4().to_string()
}

/// Writes `name` in `dir` through a temporary file and a rename, both
/// synced, so that a crash leaves the old content or the new, never half.
fn write_durably(dir: &Path, name: &str, content: &str) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Makes a directory's entries (a created, renamed or removed file) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_survives_a_clean_stop_and_changes_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let first = begin(dir.path()).unwrap();
        // Killed: no mark.
        let after_crash = begin(dir.path()).unwrap();
        assert_ne!(first, after_crash, "a start after a crash must start a new epoch");
        mark_clean_stop(dir.path()).unwrap();
        let after_clean_stop = begin(dir.path()).unwrap();
        assert_eq!(after_crash, after_clean_stop, "a clean stop keeps the epoch");
        // The mark is used up: the next start without one is after a crash again.
        assert_ne!(begin(dir.path()).unwrap(), after_clean_stop);
    }

    #[test]
    fn a_new_store_gets_an_epoch_and_keeps_it_when_stopped_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        mark_clean_stop(dir.path()).unwrap(); // a mark without an epoch file
        let first = begin(dir.path()).unwrap();
        assert_eq!(Uuid::parse_str(&first).unwrap().get_version_num(), 4);
        mark_clean_stop(dir.path()).unwrap();
        assert_eq!(begin(dir.path()).unwrap(), first);
    }
}
