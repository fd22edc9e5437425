//! Reading attendance rows: by (event, user), by event in pages, by user,
//! and an event's counts.

use chrono::{DateTime, Utc};
use surrealdb::types::{RecordId, SurrealValue};
use uuid::Uuid;

use super::{AttendanceLog, AttendanceRecord, AttendanceRow, attendance_id};
use crate::store::{StoreError, rid};

impl AttendanceLog<'_> {
    /// The attendance rows of these (event, user) pairs that exist.
    pub async fn rows(&self, pairs: &[(Uuid, Uuid)]) -> Result<Vec<AttendanceRecord>, StoreError> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<RecordId> = pairs.iter().map(|(e, u)| attendance_id(*e, *u)).collect();
        let mut res = self.db.query("SELECT * FROM $ids").bind(("ids", ids)).await?;
        let rows: Vec<AttendanceRow> = res.take(0)?;
        rows.into_iter().map(AttendanceRecord::try_from).collect()
    }

    /// How many of an event's users have checked in, and how many of them
    /// were last seen in `(since, now]` (present now).
    pub async fn counts(
        &self,
        event: Uuid,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(usize, usize), StoreError> {
        #[derive(Debug, SurrealValue)]
        struct Counts {
            checked_in: i64,
            present: i64,
        }
        let mut res = self
            .db
            .query(
                "LET $rows = SELECT last_seen FROM attendance WHERE event = $e;
                 RETURN { checked_in: array::len($rows),
                          present: array::len($rows[WHERE last_seen > $since AND last_seen <= $now]) };",
            )
            .bind(("e", rid("event", event)))
            .bind(("since", since))
            .bind(("now", now))
            .await?;
        let c: Option<Counts> = res.take(1)?;
        let c = c.ok_or_else(|| StoreError::Corrupt("no attendance counts".into()))?;
        Ok((c.checked_in.max(0) as usize, c.present.max(0) as usize))
    }

    /// An event's attendance, ordered by user id, after `after`.
    pub async fn for_event(
        &self,
        event: Uuid,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<AttendanceRecord>, StoreError> {
        let sql = if after.is_some() {
            "SELECT * FROM attendance WHERE event = $e AND user > $after ORDER BY user LIMIT $limit"
        } else {
            "SELECT * FROM attendance WHERE event = $e ORDER BY user LIMIT $limit"
        };
        let mut res = self
            .db
            .query(sql)
            .bind(("e", rid("event", event)))
            .bind(("after", after.map(|a| rid("user", a))))
            .bind(("limit", limit as i64))
            .await?;
        let rows: Vec<AttendanceRow> = res.take(0)?;
        rows.into_iter().map(AttendanceRecord::try_from).collect()
    }

    /// A user's attendance at every event.
    pub async fn for_user(&self, user: Uuid) -> Result<Vec<AttendanceRecord>, StoreError> {
        let mut res = self
            .db
            .query("SELECT * FROM attendance WHERE user = $u ORDER BY first_seen")
            .bind(("u", rid("user", user)))
            .await?;
        let rows: Vec<AttendanceRow> = res.take(0)?;
        rows.into_iter().map(AttendanceRecord::try_from).collect()
    }

    /// One row.
    pub async fn get(&self, event: Uuid, user: Uuid) -> Result<Option<AttendanceRecord>, StoreError> {
        Ok(self.rows(&[(event, user)]).await?.into_iter().next())
    }
}
