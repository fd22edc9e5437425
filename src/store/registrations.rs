//! The registration aggregate: who signed up for which event.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use surrealdb::types::{Array, RecordId};

use super::Conn;
use super::models::{RegistrationRow, convert_all};
use super::{Registration, StoreError, retried_write, rid};

/// The record id of (event, user)'s registration, so that a batch can check
/// many registrations by id rather than through an index scan.
pub(crate) fn registration_id(event: Uuid, user: Uuid) -> RecordId {
    let key = Array::from(vec![surrealdb::types::Uuid::from(event), surrealdb::types::Uuid::from(user)]);
    RecordId::new("registration", key)
}

/// Repository for `registration` records. There is at most one per
/// (user, event); cancelling keeps it, so that history is not lost, and
/// registering again reinstates it.
pub struct Registrations<'a> {
    db: &'a Conn,
}

impl<'a> Registrations<'a> {
    pub(super) fn new(db: &'a Conn) -> Self {
        Self { db }
    }

    pub async fn get(&self, user: Uuid, event: Uuid) -> Result<Option<Registration>, StoreError> {
        let mut res = self.db.query("SELECT * FROM ONLY $id").bind(("id", registration_id(event, user))).await?;
        let row: Option<RegistrationRow> = res.take(0)?;
        row.map(Registration::try_from).transpose()
    }

    /// Registers `user` for `event`, reinstating a cancelled registration.
    /// Registering twice returns the existing registration unchanged.
    pub async fn register(
        &self,
        user: Uuid,
        event: Uuid,
        walk_in: bool,
        now: DateTime<Utc>,
    ) -> Result<Registration, StoreError> {
        let existing = self.get(user, event).await?;
        let row = match existing {
            Some(r) if r.status == super::RegistrationStatus::Registered => return Ok(r),
            Some(r) => RegistrationRow {
                id: registration_id(event, user),
                user: rid("user", user),
                event: rid("event", event),
                status: "REGISTERED".into(),
                walk_in: r.walk_in,
                registered_at: now,
                cancelled_at: None,
            },
            None => RegistrationRow {
                id: registration_id(event, user),
                user: rid("user", user),
                event: rid("event", event),
                status: "REGISTERED".into(),
                walk_in,
                registered_at: now,
                cancelled_at: None,
            },
        };
        let mut res = self.db.query("UPSERT ONLY $row.id CONTENT $row").bind(("row", row)).await?.check()?;
        let row: Option<RegistrationRow> = res.take(0)?;
        row.ok_or_else(|| StoreError::Corrupt("UPSERT returned nothing".into()))?.try_into()
    }

    /// Cancels a standing registration; `None` if there was none.
    pub async fn cancel(
        &self,
        user: Uuid,
        event: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Registration>, StoreError> {
        if !self.get(user, event).await?.is_some_and(|r| r.status == super::RegistrationStatus::Registered) {
            return Ok(None);
        }
        let sql = concat!(
            "BEGIN; UPDATE $id SET status = 'CANCELLED', cancelled_at = $now WHERE status = 'REGISTERED';",
            super::directory::directory_changed!(),
            "COMMIT;"
        );
        retried_write(|| self.db.query(sql).bind(("id", registration_id(event, user))).bind(("now", now))).await?;
        self.get(user, event).await
    }

    /// An event's registrations by user id, after the user `after`.
    pub async fn for_event(
        &self,
        event: Uuid,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Registration>, StoreError> {
        self.page(("event", rid("event", event)), ("user", after.map(|a| rid("user", a))), limit).await
    }

    /// Whether `user` has a registration (standing or cancelled) for any
    /// event `organizer` runs: what lets an organiser see their private fields.
    pub async fn with_organizer(&self, user: Uuid, organizer: Uuid) -> Result<bool, StoreError> {
        let mut res = self
            .db
            .query("SELECT VALUE id FROM registration WHERE user = $u AND event.organizer = $o LIMIT 1")
            .bind(("u", rid("user", user)))
            .bind(("o", rid("user", organizer)))
            .await?
            .check()?;
        let ids: Vec<RecordId> = res.take(0)?;
        Ok(!ids.is_empty())
    }

    /// A user's registrations by event id, after the event `after`.
    pub async fn for_user(
        &self,
        user: Uuid,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Registration>, StoreError> {
        self.page(("user", rid("user", user)), ("event", after.map(|a| rid("event", a))), limit).await
    }

    async fn page(
        &self,
        (field, owner): (&'static str, RecordId),
        (order, after): (&'static str, Option<RecordId>),
        limit: usize,
    ) -> Result<Vec<Registration>, StoreError> {
        let after_cond = if after.is_some() { format!(" AND {order} > $after") } else { String::new() };
        let sql =
            format!("SELECT * FROM registration WHERE {field} = $owner{after_cond} ORDER BY {order} LIMIT $limit");
        let mut res =
            self.db.query(sql).bind(("owner", owner)).bind(("after", after)).bind(("limit", limit as i64)).await?;
        convert_all(res.take::<Vec<RegistrationRow>>(0)?)
    }

    /// Which of these (user, event) pairs have a standing registration; one
    /// lookup by id for them all.
    pub async fn standing(&self, pairs: &[(Uuid, Uuid)]) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<RecordId> = pairs.iter().map(|(u, e)| registration_id(*e, *u)).collect();
        let mut res = self.db.query("SELECT * FROM $ids WHERE status = 'REGISTERED'").bind(("ids", ids)).await?;
        let rows: Vec<RegistrationRow> = res.take(0)?;
        convert_all::<_, Registration>(rows).map(|rs| rs.into_iter().map(|r| (r.user_id, r.event_id)).collect())
    }

    /// How many standing registrations an event has.
    pub async fn count_registered(&self, event: Uuid) -> Result<usize, StoreError> {
        let mut res = self
            .db
            .query("RETURN count(SELECT id FROM registration WHERE event = $e AND status = 'REGISTERED')")
            .bind(("e", rid("event", event)))
            .await?;
        let n: Option<i64> = res.take(0)?;
        Ok(n.unwrap_or(0).max(0) as usize)
    }
}
