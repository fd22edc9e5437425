//! The identifiers worth recording: those that may count for the active
//! events (the design's "only the identifiers registered for active
//! events"), so a crowd's unrelated wearables are neither stored nor
//! uploaded.
//!
//! The server lists them per event (`registeredDevices`: the standing
//! registrations' BLE UUIDs and device identifiers, everyone's at an event
//! that takes walk-ins). A rotating identifier (docs/identity.md) cannot be
//! listed: it changes every slot and only the server can resolve it. So
//! while any of those events counts rotating identifiers, anything that can
//! be one (a UUID, or an iBeacon, whose proximity UUID can be one) is kept.
//!
//! An identifier is compared in the server's canonical form (UUIDs in lower
//! case, iBeacons normalised, the rest as heard); an iBeacon also matches by
//! its bare proximity UUID, as on the server. Until every relevant event's
//! list is known, nothing is dropped: a scanner that cannot reach the server
//! records everything, as before.

use std::collections::HashSet;

/// The identifiers that may count now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// Canonical identifiers listed by the events.
    pub identifiers: HashSet<String>,
    /// Whether one of the events counts rotating identifiers.
    pub rotating: bool,
    /// How many events the list covers.
    pub events: usize,
}

impl Allowed {
    /// Whether a sighting of `identifier` may count for one of the events.
    pub fn admits(&self, identifier: &str) -> bool {
        let canonical = canonical(identifier);
        match &canonical {
            Canonical::Uuid(u) => self.rotating || self.identifiers.contains(u),
            Canonical::IBeacon { full, uuid } => {
                self.rotating || self.identifiers.contains(full) || self.identifiers.contains(uuid)
            }
            Canonical::Other(s) => self.identifiers.contains(s),
        }
    }
}

/// An identifier in the server's canonical form.
enum Canonical {
    Uuid(String),
    IBeacon { full: String, uuid: String },
    Other(String),
}

/// The server's canonical form (`domain::batch::canonical_identifier`): the
/// scanner crate does not depend on the server's, so this is its own copy,
/// checked by the tests below against the same cases.
fn canonical(raw: &str) -> Canonical {
    let raw = raw.trim();
    if let Ok(u) = uuid::Uuid::parse_str(raw) {
        return Canonical::Uuid(u.hyphenated().to_string());
    }
    if let Some(rest) = raw.strip_prefix("ibeacon:") {
        let parts: Vec<&str> = rest.split(':').collect();
        if let [uuid, major, minor] = parts[..]
            && let (Ok(uuid), Ok(major), Ok(minor)) =
                (uuid::Uuid::parse_str(uuid), major.parse::<u16>(), minor.parse::<u16>())
        {
            let uuid = uuid.hyphenated().to_string();
            return Canonical::IBeacon { full: format!("ibeacon:{uuid}:{major}:{minor}"), uuid };
        }
    }
    Canonical::Other(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(ids: &[&str], rotating: bool) -> Allowed {
        Allowed { identifiers: ids.iter().map(|s| s.to_string()).collect(), rotating, events: 1 }
    }

    const ADA: &str = "6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a";

    #[test]
    fn listed_identifiers_pass_in_any_spelling_and_others_do_not() {
        let a = allowed(&[ADA, "badge-7", "ibeacon:11111111-2222-4333-8444-555555555555:1:2"], false);
        assert!(a.admits(ADA));
        assert!(a.admits(" 6F1C2A3E-8D4B-4C55-9A0E-2B7F4D9E1C3A "), "upper case and spaces");
        assert!(a.admits("badge-7"));
        assert!(!a.admits("badge-8"));
        assert!(!a.admits("0b3c7c55-0000-4000-8000-000000000001"), "another UUID");
        assert!(a.admits("ibeacon:11111111-2222-4333-8444-555555555555:01:2"), "an iBeacon in another spelling");
        assert!(!a.admits("ibeacon:11111111-2222-4333-8444-555555555555:1:3"), "another minor");
        assert!(a.admits(&format!("ibeacon:{}:9:9", ADA.to_uppercase())), "a phone's bare UUID in an iBeacon");
        assert!(!a.admits("eddystone:00112233445566778899:aabbccddeeff"));
    }

    #[test]
    fn where_rotating_identifiers_count_anything_that_can_be_one_passes() {
        let a = allowed(&["badge-7"], true);
        assert!(a.admits("0b3c7c55-0000-4000-8000-000000000001"));
        assert!(a.admits("ibeacon:11111111-2222-4333-8444-555555555555:1:3"));
        assert!(!a.admits("badge-8"), "a device identifier is never rotating");
        assert!(!a.admits("ATT-USER-somebody"));
    }
}
