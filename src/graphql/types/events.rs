//! Events: their states and attendance policies, an event with its
//! re-derivation, and registrations.

use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::*;
use crate::domain;
use crate::graphql::error::ApiError;
use crate::graphql::{Page, principal, state};
use crate::store;

/// Where an event is in its life cycle.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "EventState")]
pub enum EventStateGql {
    Scheduled,
    Active,
    Ended,
    Cancelled,
}

impl From<domain::EventState> for EventStateGql {
    fn from(s: domain::EventState) -> Self {
        match s {
            domain::EventState::Scheduled => EventStateGql::Scheduled,
            domain::EventState::Active => EventStateGql::Active,
            domain::EventState::Ended => EventStateGql::Ended,
            domain::EventState::Cancelled => EventStateGql::Cancelled,
        }
    }
}

impl From<EventStateGql> for domain::EventState {
    fn from(s: EventStateGql) -> Self {
        match s {
            EventStateGql::Scheduled => domain::EventState::Scheduled,
            EventStateGql::Active => domain::EventState::Active,
            EventStateGql::Ended => domain::EventState::Ended,
            EventStateGql::Cancelled => domain::EventState::Cancelled,
        }
    }
}

/// Whether a registration stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum RegistrationStatus {
    Registered,
    Cancelled,
}

/// How sightings become attendance for an event.
#[derive(SimpleObject, Clone)]
pub struct AttendancePolicy {
    /// Weakest signal that counts, in dBm.
    pub min_rssi: i32,
    /// Sightings closer together than this many seconds belong to one stay.
    pub departure_gap_seconds: i64,
    /// Seconds before the start and after the end that sightings still count.
    pub grace_seconds: i64,
    /// Whether only registered users are checked in.
    pub require_registration: bool,
    /// Which kinds of identifier count (docs/identity.md).
    pub identity: IdentityPolicyGql,
    /// Whether presence reported by attendees' phones (`reportPresence`)
    /// counts. Off by default.
    pub accept_phone_reports: bool,
    /// The iBeacon the venue advertises, `<uuid>[:<major>[:<minor>]]`: phone
    /// reports must name it.
    pub venue_beacon: Option<String>,
}

/// Which kinds of identifier an event counts.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "IdentityPolicy")]
pub enum IdentityPolicyGql {
    /// Static identifiers only: `bleUuid`s and extra device identifiers.
    Static,
    /// Rotating identifiers only (a copied identifier is useless).
    Rotating,
    /// Both.
    Both,
}

impl From<domain::IdentityPolicy> for IdentityPolicyGql {
    fn from(p: domain::IdentityPolicy) -> Self {
        match p {
            domain::IdentityPolicy::Static => Self::Static,
            domain::IdentityPolicy::Rotating => Self::Rotating,
            domain::IdentityPolicy::Both => Self::Both,
        }
    }
}

impl From<IdentityPolicyGql> for domain::IdentityPolicy {
    fn from(p: IdentityPolicyGql) -> Self {
        match p {
            IdentityPolicyGql::Static => Self::Static,
            IdentityPolicyGql::Rotating => Self::Rotating,
            IdentityPolicyGql::Both => Self::Both,
        }
    }
}

impl From<domain::AttendancePolicy> for AttendancePolicy {
    fn from(p: domain::AttendancePolicy) -> Self {
        Self {
            min_rssi: p.min_rssi,
            departure_gap_seconds: p.departure_gap.num_seconds(),
            grace_seconds: p.grace.num_seconds(),
            require_registration: p.require_registration,
            identity: p.identity.into(),
            accept_phone_reports: p.accept_phone_reports,
            venue_beacon: p.venue_beacon.map(|b| b.to_string()),
        }
    }
}

/// Changes to an attendance policy; omitted fields keep their value (or the
/// default, on creation).
#[derive(InputObject, Default)]
pub struct AttendancePolicyInput {
    pub min_rssi: Option<i32>,
    pub departure_gap_seconds: Option<i64>,
    pub grace_seconds: Option<i64>,
    pub require_registration: Option<bool>,
    pub identity: Option<IdentityPolicyGql>,
    /// Needs `venueBeacon`.
    pub accept_phone_reports: Option<bool>,
    /// `<uuid>`, `<uuid>:<major>` or `<uuid>:<major>:<minor>`; `""` clears it.
    pub venue_beacon: Option<String>,
}

impl AttendancePolicyInput {
    /// `base` with these changes applied, validated.
    pub fn apply(&self, base: domain::AttendancePolicy) -> Result<domain::AttendancePolicy, domain::DomainError> {
        // Out of chrono's range is out of the policy's range too: let
        // `validate` say so rather than panic in `Duration::seconds`.
        let seconds = |field: &str, secs: Option<i64>, base: chrono::Duration| match secs {
            None => Ok(base),
            Some(s) => chrono::Duration::try_seconds(s)
                .ok_or_else(|| domain::DomainError::invalid(format!("{field} is out of range"))),
        };
        domain::AttendancePolicy {
            min_rssi: self.min_rssi.unwrap_or(base.min_rssi),
            departure_gap: seconds("departureGapSeconds", self.departure_gap_seconds, base.departure_gap)?,
            grace: seconds("graceSeconds", self.grace_seconds, base.grace)?,
            require_registration: self.require_registration.unwrap_or(base.require_registration),
            identity: self.identity.map_or(base.identity, Into::into),
            accept_phone_reports: self.accept_phone_reports.unwrap_or(base.accept_phone_reports),
            venue_beacon: match self.venue_beacon.as_deref().map(str::trim) {
                None => base.venue_beacon,
                Some("") => None,
                Some(b) => Some(b.parse()?),
            },
        }
        .validate()
    }
}

/// An event that takes attendance.
pub struct Event(pub store::Event);

/// An event's attendance being derived again from the raw log.
#[derive(async_graphql::SimpleObject)]
pub struct Rederivation {
    /// The rows lag behind a change: a derivation is queued or running.
    pub pending: bool,
    /// A worker is on it now.
    pub running: bool,
    /// From 0 to 1: the raw-log batches read of those to read (1 when done).
    pub progress: f64,
    pub batches_done: i64,
    pub batches_total: i64,
    /// When it was last asked for, and last finished.
    pub requested_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How many attendance rows the last derivation produced.
    pub rows: Option<i64>,
}

#[Object]
impl Event {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    async fn location(&self) -> Option<&str> {
        self.0.location.as_deref()
    }

    async fn starts_at(&self) -> DateTime<Utc> {
        self.0.starts_at
    }

    async fn ends_at(&self) -> DateTime<Utc> {
        self.0.ends_at
    }

    async fn state(&self) -> EventStateGql {
        self.0.state.into()
    }

    /// Shorthand for `state == ACTIVE`.
    async fn is_active(&self) -> bool {
        self.0.state == domain::EventState::Active
    }

    async fn policy(&self) -> AttendancePolicy {
        self.0.policy.into()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// Whether its attendance is being derived again from the raw log
    /// (after a policy or window change), and how far that has got; null if
    /// it never was.
    async fn rederivation(&self, ctx: &Context<'_>) -> Result<Option<Rederivation>> {
        let r = state(ctx)?.store.rederivations().get(self.0.id).await?;
        Ok(r.map(|r| Rederivation {
            pending: r.pending(),
            running: r.running,
            progress: if !r.pending() {
                1.0
            } else if r.batches_total > 0 {
                (r.batches_done as f64 / r.batches_total as f64).min(1.0)
            } else {
                0.0
            },
            batches_done: r.batches_done,
            batches_total: r.batches_total,
            requested_at: r.requested_at,
            finished_at: r.finished_at,
            rows: r.rows,
        }))
    }

    /// The user who runs the event.
    async fn organizer(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        Ok(crate::graphql::load_user(ctx, self.0.organizer_id).await?.map(User::new))
    }

    /// How many people are registered (cancelled registrations excluded).
    async fn registered_count(&self, ctx: &Context<'_>) -> Result<i64> {
        Ok(state(ctx)?.store.registrations().count_registered(self.0.id).await? as i64)
    }

    /// Everyone who registered; for the organiser and admins.
    #[graphql(complexity = "crate::graphql::page_cost(first, child_complexity)")]
    async fn registrations(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Registration>> {
        if !principal(ctx)?.manages(&self.0) {
            return Err(ApiError::forbidden().into());
        }
        let page = Page::parse(first, after)?;
        let rows = state(ctx)?.store.registrations().for_event(self.0.id, page.after, page.fetch()).await?;
        Ok(page.connection(rows, |r| r.user_id, Registration))
    }
}

/// A user's registration for an event.
pub struct Registration(pub store::Registration);

#[Object]
impl Registration {
    /// `<eventId>:<userId>`: a registration is the pair.
    async fn id(&self) -> ID {
        ID(format!("{}:{}", self.0.event_id, self.0.user_id))
    }

    async fn status(&self) -> RegistrationStatus {
        match self.0.status {
            store::RegistrationStatus::Registered => RegistrationStatus::Registered,
            store::RegistrationStatus::Cancelled => RegistrationStatus::Cancelled,
        }
    }

    /// Registered by being seen at an event open to walk-ins.
    async fn walk_in(&self) -> bool {
        self.0.walk_in
    }

    async fn registered_at(&self) -> DateTime<Utc> {
        self.0.registered_at
    }

    async fn cancelled_at(&self) -> Option<DateTime<Utc>> {
        self.0.cancelled_at
    }

    async fn user(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        Ok(crate::graphql::load_user(ctx, self.0.user_id).await?.map(User::in_managed_event))
    }

    async fn event(&self, ctx: &Context<'_>) -> Result<Option<Event>> {
        Ok(state(ctx)?.store.events().get(self.0.event_id).await?.map(Event))
    }
}
