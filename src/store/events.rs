//! The event aggregate: events, their state and attendance policy.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Conn;
use super::models::{EventRow, convert_all};
use super::{Event, StoreError, new_id, rid};
use crate::domain::{AttendancePolicy, EventState, EventWindow};

/// A validated new event.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub name: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub window: EventWindow,
    pub organizer: Uuid,
    pub policy: AttendancePolicy,
}

/// A validated change to an event; the caller has merged it with the current
/// values, so every field is the new full value.
#[derive(Debug, Clone)]
pub struct EventChanges {
    pub name: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub window: EventWindow,
    pub policy: AttendancePolicy,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events in this state.
    pub state: Option<EventState>,
    /// Only events run by this user.
    pub organizer: Option<Uuid>,
    /// Only events that end at or after this instant.
    pub ends_after: Option<DateTime<Utc>>,
    /// Only events that start at or before this instant.
    pub starts_before: Option<DateTime<Utc>>,
}

/// Repository for `event` records.
pub struct Events<'a> {
    db: &'a Conn,
}

fn row_of(
    id: Uuid,
    e: &EventChanges,
    organizer: Uuid,
    state: EventState,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> EventRow {
    let (opens_at, closes_at) = e.window.with_grace(e.policy.grace);
    EventRow {
        id: rid("event", id),
        name: e.name.clone(),
        description: e.description.clone(),
        location: e.location.clone(),
        starts_at: e.window.starts_at(),
        ends_at: e.window.ends_at(),
        state: state.as_str().to_owned(),
        organizer: rid("user", organizer),
        min_rssi: i64::from(e.policy.min_rssi),
        departure_gap_secs: e.policy.departure_gap.num_seconds(),
        grace_secs: e.policy.grace.num_seconds(),
        require_registration: e.policy.require_registration,
        identity: Some(e.policy.identity.as_str().to_owned()),
        accept_phone_reports: Some(e.policy.accept_phone_reports),
        venue_beacon: e.policy.venue_beacon.map(|b| b.to_string()),
        created_at: created,
        updated_at: now,
        opens_at,
        closes_at,
    }
}

impl<'a> Events<'a> {
    pub(super) fn new(db: &'a Conn) -> Self {
        Self { db }
    }

    pub async fn create(&self, new: NewEvent, now: DateTime<Utc>) -> Result<Event, StoreError> {
        let changes = EventChanges {
            name: new.name,
            description: new.description,
            location: new.location,
            window: new.window,
            policy: new.policy,
        };
        let row = row_of(new_id(), &changes, new.organizer, EventState::Scheduled, now, now);
        self.write(row).await
    }

    async fn write(&self, row: EventRow) -> Result<Event, StoreError> {
        let mut res = self.db.query("UPSERT ONLY $row.id CONTENT $row").bind(("row", row)).await?.check()?;
        let row: Option<EventRow> = res.take(0)?;
        row.ok_or_else(|| StoreError::Corrupt("UPSERT returned nothing".into()))?.try_into()
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Event>, StoreError> {
        let mut res = self.db.query("SELECT * FROM ONLY $id").bind(("id", rid("event", id))).await?;
        let row: Option<EventRow> = res.take(0)?;
        row.map(Event::try_from).transpose()
    }

    /// Replaces the editable fields of `event` with `changes`; with
    /// `rederive`, asks in the same transaction for its attendance to be
    /// derived again (see `rederive`), so the request cannot be lost.
    pub async fn update(
        &self,
        event: &Event,
        changes: EventChanges,
        rederive: bool,
        now: DateTime<Utc>,
    ) -> Result<Event, StoreError> {
        let row = row_of(event.id, &changes, event.organizer_id, event.state, event.created_at, now);
        let request = if rederive { super::rederive::REQUEST } else { "" };
        self.db
            .query(format!("BEGIN; UPSERT ONLY $row.id CONTENT $row; {request} COMMIT;"))
            .bind(("row", row))
            .bind(("rederive", super::rederive::rederive_id(event.id)))
            .bind(("now", now))
            .await?
            .check()?;
        self.get(event.id).await?.ok_or_else(|| StoreError::Corrupt("the event vanished while it was updated".into()))
    }

    pub async fn set_state(
        &self,
        id: Uuid,
        state: EventState,
        now: DateTime<Utc>,
    ) -> Result<Option<Event>, StoreError> {
        let mut res = self
            .db
            .query("UPDATE ONLY $id SET state = $state, updated_at = $now RETURN AFTER")
            .bind(("id", rid("event", id)))
            .bind(("state", state.as_str().to_owned()))
            .bind(("now", now))
            .await?
            .check()?;
        let row: Option<EventRow> = res.take(0)?;
        row.map(Event::try_from).transpose()
    }

    /// Deletes an event with its registrations and attendance, atomically;
    /// retried when it conflicts with a concurrent write of its rows.
    pub async fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        let sql = concat!(
            "BEGIN;
             DELETE registration WHERE event = $id;
             DELETE attendance WHERE event = $id;
             DELETE $id;",
            super::directory::directory_changed!(),
            "COMMIT;"
        );
        super::retried_transaction(self.db, sql, rid("event", id)).await
    }

    /// Events matching `filter`, in creation order after `after`, at most `limit`.
    pub async fn list(
        &self,
        filter: &EventFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut conds = Vec::new();
        if after.is_some() {
            conds.push("id > $after");
        }
        if filter.state.is_some() {
            conds.push("state = $state");
        }
        if filter.organizer.is_some() {
            conds.push("organizer = $organizer");
        }
        if filter.ends_after.is_some() {
            conds.push("ends_at >= $ends_after");
        }
        if filter.starts_before.is_some() {
            conds.push("starts_at <= $starts_before");
        }
        let mut sql = String::from("SELECT * FROM event");
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(" ORDER BY id LIMIT $limit");
        let mut res = self
            .db
            .query(sql)
            .bind(("after", after.map(|a| rid("event", a))))
            .bind(("state", filter.state.map(|s| s.as_str().to_owned())))
            .bind(("organizer", filter.organizer.map(|o| rid("user", o))))
            .bind(("ends_after", filter.ends_after))
            .bind(("starts_before", filter.starts_before))
            .bind(("limit", limit as i64))
            .await?;
        convert_all(res.take::<Vec<EventRow>>(0)?)
    }

    /// The events among `ids` that exist.
    pub async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Event>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<_> = ids.iter().map(|id| rid("event", *id)).collect();
        let mut res = self.db.query("SELECT * FROM $ids").bind(("ids", ids)).await?;
        convert_all(res.take::<Vec<EventRow>>(0)?)
    }

    /// The events that take attendance (active or ended) and whose window
    /// with grace overlaps `[from, to]`: where a sighting without an event
    /// may belong, however late it is uploaded.
    pub async fn counting_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<Event>, StoreError> {
        let mut res = self
            .db
            .query(
                "SELECT * FROM event WHERE closes_at >= $from AND opens_at <= $to
                    AND state IN ['ACTIVE', 'ENDED'] ORDER BY starts_at",
            )
            .bind(("from", from))
            .bind(("to", to))
            .await?;
        convert_all(res.take::<Vec<EventRow>>(0)?)
    }

    /// Every event in the ACTIVE state.
    pub async fn active(&self) -> Result<Vec<Event>, StoreError> {
        let mut res = self.db.query("SELECT * FROM event WHERE state = 'ACTIVE' ORDER BY starts_at").await?;
        convert_all(res.take::<Vec<EventRow>>(0)?)
    }
}
