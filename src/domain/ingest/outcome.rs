//! What a batch's answer says: per sighting and in all.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What happened to one sighting; for a sighting offered to several events,
/// the best outcome among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SightingStatus {
    Rejected,
    UnknownDevice,
    OutsideEvent,
    IdentityNotAccepted,
    BelowRssi,
    Unregistered,
    Duplicate,
    Counted,
}

/// A sighting refused by validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Its position in the batch, from 0.
    pub index: usize,
    pub reason: String,
}

/// A check-in a batch created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckIn {
    pub event_id: Uuid,
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
    pub scanner: Uuid,
}

/// The result of a batch, as stored and returned to every retry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// Sightings that passed validation.
    pub accepted: u64,
    /// New check-ins (first counted sighting of a user at an event).
    pub check_ins: u64,
    /// (sighting, event) pairs already counted before.
    pub duplicates: u64,
    /// Sightings of identifiers that belong to nobody.
    pub unknown_devices: u64,
    /// (sighting, event) pairs of users not registered where registration is required.
    pub unregistered: u64,
    /// (sighting, event) pairs outside the event's window with grace, or
    /// sightings with no event in scope at that time.
    pub outside_event: u64,
    /// (sighting, event) pairs weaker than the event's minRssi.
    pub below_rssi: u64,
    /// Sightings of a rotating identifier outside its time slot (copied and
    /// played later): not counted.
    #[serde(default)]
    pub replayed_identifiers: u64,
    /// (sighting, event) pairs of a kind of identifier (static or rotating)
    /// the event does not count.
    #[serde(default)]
    pub identity_not_accepted: u64,
    pub rejected: Vec<Rejection>,
    /// True when this is the stored result of an earlier delivery.
    #[serde(default)]
    pub replayed: bool,
    /// Per sighting, in batch order.
    pub statuses: Vec<SightingStatus>,
    /// The check-ins created, for live subscribers.
    pub new_check_ins: Vec<CheckIn>,
}
