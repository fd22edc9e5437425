//! A re-derivation's write: an event's rows replaced by what the raw log
//! derives, guarded against every concurrent change to them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use surrealdb::types::{RecordId, SurrealValue};
use uuid::Uuid;

use super::{
    AttendanceLog, AttendanceRecord, AttendanceRow, CommitError, SEQ_STEPS, WALK_INS, attendance_id, commit_result,
    walk_in_rows,
};
use crate::store::rederive::{FINISH, rederive_id};
use crate::store::{StoreError, key_of, rid};

/// A row that no longer derives, at the version it was read.
#[derive(Debug, SurrealValue)]
struct Gone {
    id: RecordId,
    version: i64,
}

impl AttendanceLog<'_> {
    /// Replaces all of an event's attendance rows, registers the `walk_ins`
    /// (user, event) pairs, and marks re-derivation `generation` done,
    /// atomically.
    ///
    /// Rows that stay are written over in place (with the cursor they carry),
    /// so a live subscriber sees updates, not the same check-ins again. Each
    /// carries the version it was read at plus one: a row another instance
    /// changed meanwhile fails the commit (`Conflict`), to be derived again.
    /// Pending sightings (`row_projector`) of the `read` batches go: the rows
    /// hold them now; those of batches committed since stay, to be folded in.
    /// Of the rows there were, those of the users in `gone` go, each only at
    /// the version it was read at: one another instance wrote since fails
    /// the commit (`Conflict`) like a changed row that stays. A row another
    /// instance created since (from a batch not read) stays.
    #[allow(clippy::too_many_arguments)]
    pub async fn replace_for_event(
        &self,
        event: Uuid,
        mut rows: Vec<AttendanceRecord>,
        walk_ins: &[(Uuid, Uuid)],
        gone: &[(Uuid, i64)],
        read: Vec<RecordId>,
        generation: i64,
        now: DateTime<Utc>,
    ) -> Result<(), CommitError> {
        let seqs = self.assign_cursors(&mut rows).await?;
        let n = rows.len() as i64;
        let rows: Vec<AttendanceRow> = rows.iter().map(AttendanceRow::from).collect();
        let res = self
            .db
            .query(format!(
                "BEGIN;
                 {SEQ_STEPS}
                 FOR $g IN $gone {{
                     IF array::len(DELETE $g.id WHERE version = $g.version RETURN BEFORE) == 0 {{
                         THROW 'attendance changed concurrently';
                     }};
                 }};
                 DELETE row_pending WHERE event = $e AND batches ANYINSIDE $read;
                 FOR $row IN $rows {{
                     IF $row.version > 1 {{
                         IF array::len(UPDATE $row.id CONTENT $row WHERE version = $row.version - 1 RETURN id) == 0 {{
                             THROW 'attendance changed concurrently';
                         }};
                     }} ELSE {{
                         CREATE $row.id CONTENT $row;
                     }};
                 }};
                 {WALK_INS}
                 {FINISH}
                 COMMIT;"
            ))
            .bind(("e", rid("event", event)))
            .bind(("seqs", seqs))
            .bind((
                "gone",
                gone.iter()
                    .map(|(u, version)| Gone { id: attendance_id(event, *u), version: *version })
                    .collect::<Vec<_>>(),
            ))
            .bind(("rows", rows))
            .bind(("walk_ins", walk_in_rows(walk_ins, now)))
            .bind(("read", read))
            .bind(("rederive", rederive_id(event)))
            .bind(("generation", generation))
            .bind(("rows_n", n))
            .bind(("now", now))
            .await
            .map_err(StoreError::from)?;
        commit_result(res)
    }

    /// The cursor and version of each of an event's attendance rows, by user.
    pub async fn cursors(&self, event: Uuid) -> Result<HashMap<Uuid, (String, i64)>, StoreError> {
        #[derive(Debug, SurrealValue)]
        struct Kept {
            user: RecordId,
            cursor: Option<String>,
            version: i64,
        }
        let mut res = self
            .db
            .query("SELECT user, cursor, version FROM attendance WHERE event = $e")
            .bind(("e", rid("event", event)))
            .await?;
        let rows: Vec<Kept> = res.take(0)?;
        rows.into_iter().map(|k| Ok((key_of(&k.user)?, (k.cursor.unwrap_or_default(), k.version)))).collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::domain::{Attendance, Mark};
    use crate::store::{GroupWrite, SurrealStore};

    fn row(event: Uuid, user: Uuid, version: i64) -> AttendanceRecord {
        let now = Utc::now();
        let scanner = Uuid::new_v4();
        AttendanceRecord {
            event_id: event,
            user_id: user,
            attendance: Attendance {
                first_seen: now,
                first_scanner: scanner,
                last_seen: now,
                stays: Vec::new(),
                sightings: 1,
                best_rssi: None,
                marks: vec![Mark { scanner, at: now }],
            },
            version,
            cursor: String::new(),
        }
    }

    /// A row the re-derivation read, and that no longer derives, goes only
    /// if nobody wrote it since: a row another instance wrote meanwhile
    /// fails the replacement, to be derived again from fresh reads.
    #[tokio::test]
    async fn a_row_written_since_it_was_read_is_not_deleted_as_gone() {
        let store = SurrealStore::memory().await.expect("store");
        let log = store.attendance();
        let (event, user) = (Uuid::new_v4(), Uuid::new_v4());
        let mut created = GroupWrite {
            batches: Vec::new(),
            created: vec![row(event, user, 1)],
            updated: Vec::new(),
            walk_ins: Vec::new(),
            deferred: Vec::new(),
            pending: Vec::new(),
        };
        log.commit(&mut created, Utc::now()).await.expect("created");
        let read = log.cursors(event).await.expect("read");
        assert_eq!(read[&user].1, 1);
        // Another instance writes the row through after the read.
        let mut newer = log.get(event, user).await.expect("row").expect("there");
        newer.version += 1;
        newer.attendance.sightings += 1;
        log.write_deferred(&[newer]).await.expect("written");

        let gone = [(user, read[&user].1)];
        let replaced = log.replace_for_event(event, Vec::new(), &[], &gone, Vec::new(), 1, Utc::now()).await;
        assert!(matches!(replaced, Err(CommitError::Conflict)), "{replaced:?}");
        let kept = log.get(event, user).await.expect("read again").expect("the row stays");
        assert_eq!((kept.version, kept.attendance.sightings), (2, 2));

        // Read again, it goes.
        let gone = [(user, 2)];
        log.replace_for_event(event, Vec::new(), &[], &gone, Vec::new(), 2, Utc::now()).await.expect("replaced");
        assert!(log.get(event, user).await.expect("read").is_none());
    }
}
