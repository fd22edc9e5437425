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
    /// Of the rows there were, those of the users in `gone` go; a row another
    /// instance created since (from a batch not read) stays.
    #[allow(clippy::too_many_arguments)]
    pub async fn replace_for_event(
        &self,
        event: Uuid,
        mut rows: Vec<AttendanceRecord>,
        walk_ins: &[(Uuid, Uuid)],
        gone: &[Uuid],
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
                 DELETE $gone;
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
            .bind(("gone", gone.iter().map(|u| attendance_id(event, *u)).collect::<Vec<_>>()))
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
