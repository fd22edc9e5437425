//! Where a counted sighting came from: a scanner that heard the phone, an
//! organiser's manual check-in, an attendee's app that scanned the door's
//! QR code, or an attendee's app that heard the venue's beacon.
//!
//! Every sighting is attributed to a *reporter* id: a scanner's API key id,
//! or, for the other sources, a reserved id that no key can have (API key
//! ids are random v4 or v7 UUIDs; these are not). The reporter id is what
//! the raw log keeps per batch and what an attendance row keeps for its
//! check-in (`first_scanner`) and per reporter (its marks), so the source
//! survives a re-derivation without any extra column, and duplicate
//! detection ("the same sighting from the same reporter") works unchanged.

use uuid::Uuid;

use super::AttendancePolicy;

/// Where a sighting (and so a check-in) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckInSource {
    /// A scanner heard the phone's advertisement.
    Scanner,
    /// An organiser recorded it (`recordAttendance`).
    Manual,
    /// The attendee's app scanned the door screen's QR code (`checkInWithCode`).
    DoorCode,
    /// The attendee's app heard the venue's beacon (`reportPresence`).
    Phone,
}

/// The reporter id of manual check-ins (as before sources had names).
const MANUAL: Uuid = Uuid::nil();
/// The reporter id of door-code check-ins.
const DOOR_CODE: Uuid = Uuid::from_u128(1);
/// The reporter id of phone reports.
const PHONE: Uuid = Uuid::from_u128(2);

impl CheckInSource {
    /// The source of a sighting attributed to `reporter`.
    pub fn of(reporter: Uuid) -> Self {
        match reporter {
            MANUAL => CheckInSource::Manual,
            DOOR_CODE => CheckInSource::DoorCode,
            PHONE => CheckInSource::Phone,
            _ => CheckInSource::Scanner,
        }
    }

    /// The reserved reporter id of a source other than scanners (each
    /// scanner has its own: its key's id).
    pub fn reporter(self) -> Option<Uuid> {
        match self {
            CheckInSource::Scanner => None,
            CheckInSource::Manual => Some(MANUAL),
            CheckInSource::DoorCode => Some(DOOR_CODE),
            CheckInSource::Phone => Some(PHONE),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CheckInSource::Scanner => "SCANNER",
            CheckInSource::Manual => "MANUAL",
            CheckInSource::DoorCode => "DOOR_CODE",
            CheckInSource::Phone => "PHONE",
        }
    }
}

impl AttendancePolicy {
    /// Whether a sighting from `source`, of a rotating identifier or not,
    /// counts at this event. The identity policy judges what scanners hear;
    /// the other sources name the person by their account, not by an
    /// advertised identifier. Phone reports count only where the event
    /// accepts them.
    pub fn counts(&self, source: CheckInSource, rotating: bool) -> bool {
        match source {
            CheckInSource::Scanner => self.identity.accepts(rotating),
            CheckInSource::Manual | CheckInSource::DoorCode => true,
            CheckInSource::Phone => self.accept_phone_reports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IdentityPolicy;

    #[test]
    fn reporter_ids_round_trip_and_keys_are_scanners() {
        for s in [CheckInSource::Manual, CheckInSource::DoorCode, CheckInSource::Phone] {
            assert_eq!(CheckInSource::of(s.reporter().unwrap()), s);
        }
        assert_eq!(CheckInSource::of(Uuid::new_v4()), CheckInSource::Scanner);
        assert_eq!(CheckInSource::of(Uuid::now_v7()), CheckInSource::Scanner);
    }

    #[test]
    fn the_policy_says_which_sources_count() {
        let p = AttendancePolicy { identity: IdentityPolicy::Rotating, ..Default::default() };
        assert!(!p.counts(CheckInSource::Scanner, false));
        assert!(p.counts(CheckInSource::Scanner, true));
        assert!(p.counts(CheckInSource::Manual, false) && p.counts(CheckInSource::DoorCode, false));
        assert!(!p.counts(CheckInSource::Phone, false), "phone reports are off by default");
        let p = AttendancePolicy { accept_phone_reports: true, ..p };
        assert!(p.counts(CheckInSource::Phone, false));
    }
}
