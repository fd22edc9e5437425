//! Presence reported by the attendee's phone (`reportPresence`): the app
//! heard the venue's iBeacon, which iOS lets an app monitor in the
//! background, where it cannot advertise (docs/identity.md).
//!
//! An event declares its venue beacon ([`VenueBeacon`]): an iBeacon
//! proximity UUID, optionally narrowed by major, or by major and minor. A
//! report names the beacon the phone heard, in the same form; it matches
//! when the UUIDs are equal and so is every part the event declares.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::DomainError;

/// How far a report's `at` may be from the server's clock, either way: a
/// phone reports what it hears now, and its clock is set by the network.
pub const MAX_REPORT_SKEW: Duration = Duration::minutes(5);

/// How often one user's reports count at one event.
pub const REPORT_INTERVAL: Duration = Duration::seconds(30);

/// An iBeacon as an event declares it, or as a phone reports it heard:
/// `<uuid>`, `<uuid>:<major>` or `<uuid>:<major>:<minor>` (decimal, as iOS's
/// `CLBeacon` and Android's beacon libraries give them); an `ibeacon:`
/// prefix, as the scanner writes iBeacons, is accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VenueBeacon {
    pub uuid: Uuid,
    pub major: Option<u16>,
    pub minor: Option<u16>,
}

impl FromStr for VenueBeacon {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        let bad = || {
            DomainError::invalid(
                "a beacon is an iBeacon UUID, optionally with its major and minor: <uuid>[:<major>[:<minor>]]",
            )
        };
        let s = s.trim();
        let s = s.strip_prefix("ibeacon:").unwrap_or(s);
        let mut parts = s.split(':');
        let uuid = parts.next().and_then(|u| Uuid::parse_str(u).ok()).ok_or_else(bad)?;
        let mut number = || parts.next().map(|n| n.parse::<u16>().map_err(|_| bad())).transpose();
        let major = number()?;
        let minor = number()?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self { uuid, major, minor })
    }
}

impl fmt::Display for VenueBeacon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.uuid.hyphenated())?;
        if let Some(major) = self.major {
            write!(f, ":{major}")?;
            if let Some(minor) = self.minor {
                write!(f, ":{minor}")?;
            }
        }
        Ok(())
    }
}

impl VenueBeacon {
    /// Whether a phone that heard `heard` heard this venue's beacon.
    pub fn matches(&self, heard: &VenueBeacon) -> bool {
        self.uuid == heard.uuid
            && self.major.is_none_or(|m| heard.major == Some(m))
            && self.minor.is_none_or(|m| heard.minor == Some(m))
    }
}

/// Checks a report's time against the server's clock.
pub fn check_report_time(at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), DomainError> {
    if (at - now).abs() > MAX_REPORT_SKEW {
        return Err(DomainError::invalid(format!(
            "`at` is more than {} minutes from the server's clock; report what the phone hears now",
            MAX_REPORT_SKEW.num_minutes()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "f7826da6-4fa2-4e98-8024-bc5b71e0893e";

    #[test]
    fn beacons_parse_in_every_form_and_print_canonically() {
        let b: VenueBeacon = U.to_uppercase().parse().unwrap();
        assert_eq!(b.to_string(), U);
        let b: VenueBeacon = format!("ibeacon:{U}:12:7").parse().unwrap();
        assert_eq!((b.major, b.minor), (Some(12), Some(7)));
        assert_eq!(b.to_string(), format!("{U}:12:7"));
        for bad in ["", "nope", &format!("{U}:70000"), &format!("{U}:1:2:3"), &format!("{U}:x")] {
            assert!(bad.parse::<VenueBeacon>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_report_matches_what_the_event_declares() {
        let venue: VenueBeacon = format!("{U}:12").parse().unwrap();
        assert!(venue.matches(&format!("{U}:12:7").parse().unwrap()));
        assert!(!venue.matches(&format!("{U}:13:7").parse().unwrap()));
        assert!(!venue.matches(&U.parse().unwrap()), "the declared major was not heard");
        let any: VenueBeacon = U.parse().unwrap();
        assert!(any.matches(&format!("{U}:1:2").parse().unwrap()));
        assert!(!any.matches(&Uuid::new_v4().to_string().parse().unwrap()));
    }

    #[test]
    fn report_times_near_the_server_clock_only() {
        let now = Utc::now();
        assert!(check_report_time(now - Duration::minutes(4), now).is_ok());
        assert!(check_report_time(now - Duration::minutes(6), now).is_err());
        assert!(check_report_time(now + Duration::minutes(6), now).is_err());
    }
}
