//! Pure domain logic: validated values, roles, events and their attendance
//! policy. Nothing here performs I/O or knows about SurrealDB or GraphQL, so
//! every rule can be unit-tested in place; the store's unique indexes back up
//! these rules, they do not replace them.

mod attendance;
pub mod batch;
pub mod door;
mod event;
pub mod identity;
pub mod ingest;
pub mod presence;
mod source;
mod values;

pub use attendance::{Attendance, Mark, Sighting, Stay, Verdict, classify};
pub use event::{AttendancePolicy, EventState, EventWindow, IdentityPolicy};
pub use presence::VenueBeacon;
pub use source::CheckInSource;
pub use values::{BleUuid, DeviceIdentifier, Email, Password, PersonName, Role, Text};

/// A value or a transition that the domain rules refuse. Every variant is a
/// message that is safe and useful to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Input that does not parse or breaks a rule about a single value.
    #[error("{0}")]
    Invalid(String),
    /// A state transition that the current state does not allow.
    #[error("{0}")]
    Conflict(String),
}

impl DomainError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
}
