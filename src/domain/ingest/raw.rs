//! A sighting as the raw log keeps it, and how it belongs to events.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::EventRules;
use crate::domain::CheckInSource;

/// How a sighting in the raw log is assigned to events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// The scanner named the event.
    Explicit(Uuid),
    /// No event named: every event in the scanner's scope whose window with
    /// grace covers `seen_at`, whenever attendance is derived.
    Implicit,
    /// Logged before assignments were kept: the events it was offered to on
    /// arrival.
    Offered(Vec<Uuid>),
}

/// One sighting in the raw log: what a derivation needs, nothing more.
/// Unknown identifiers are never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSighting {
    /// The identifier heard, canonical (empty for sightings logged before
    /// identifiers were kept).
    pub identifier: String,
    /// Whom it resolved to when the batch arrived.
    pub user: Uuid,
    pub seen_at: DateTime<Utc>,
    pub rssi: Option<i32>,
    pub assignment: Assignment,
    /// Whether it was a rotating identifier (else static), for the events'
    /// `identity` policy.
    pub rotating: bool,
}

impl RawSighting {
    /// The events this sighting names itself (explicit or offered).
    pub fn named_events(&self) -> &[Uuid] {
        match &self.assignment {
            Assignment::Explicit(e) => std::slice::from_ref(e),
            Assignment::Implicit => &[],
            Assignment::Offered(es) => es,
        }
    }

    /// Whether this sighting, from `source`, counts at `event` by its
    /// policy (`AttendancePolicy::counts`).
    pub fn source_counts(&self, event: &EventRules, source: CheckInSource) -> bool {
        event.policy.counts(source, self.rotating)
    }

    /// Whether it belongs to `event`, given the event's counting window and
    /// whether the scanner's key covers the event.
    pub fn belongs_to(&self, event: &EventRules) -> bool {
        match &self.assignment {
            Assignment::Explicit(e) => *e == event.id,
            Assignment::Implicit => event.in_scope && event.covers(self.seen_at),
            Assignment::Offered(es) => es.contains(&event.id),
        }
    }
}
