//! Events: their time window, their life cycle and their attendance policy.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};

use super::DomainError;
use super::presence::VenueBeacon;

/// Where an event is in its life cycle.
///
/// ```text
/// SCHEDULED --activate--> ACTIVE --end--> ENDED
///     |  \________________end_________________^
///     +--cancel--> CANCELLED <--cancel-- ACTIVE
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventState {
    /// Created, not yet taking attendance.
    Scheduled,
    /// Scanners' sightings are turned into attendance.
    Active,
    /// Over; attendance is final.
    Ended,
    /// Called off.
    Cancelled,
}

impl EventState {
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Scheduled => "SCHEDULED",
            EventState::Active => "ACTIVE",
            EventState::Ended => "ENDED",
            EventState::Cancelled => "CANCELLED",
        }
    }

    /// The state after `activate`, or why it is not allowed.
    pub fn activate(self) -> Result<Self, DomainError> {
        match self {
            EventState::Scheduled | EventState::Active => Ok(EventState::Active),
            other => Err(DomainError::Conflict(format!(
                "an event that is {} cannot be activated",
                other.as_str().to_lowercase()
            ))),
        }
    }

    /// The state after `end`, or why it is not allowed.
    pub fn end(self) -> Result<Self, DomainError> {
        match self {
            EventState::Scheduled | EventState::Active | EventState::Ended => Ok(EventState::Ended),
            EventState::Cancelled => Err(DomainError::Conflict("a cancelled event cannot be ended".into())),
        }
    }

    /// The state after `cancel`, or why it is not allowed.
    pub fn cancel(self) -> Result<Self, DomainError> {
        match self {
            EventState::Scheduled | EventState::Active | EventState::Cancelled => Ok(EventState::Cancelled),
            EventState::Ended => Err(DomainError::Conflict("an event that has ended cannot be cancelled".into())),
        }
    }

    /// Whether the event takes sightings at all: it has been running (an
    /// upload after it ended is late, not wrong); scheduled or cancelled
    /// events take none.
    pub fn takes_attendance(self) -> bool {
        matches!(self, EventState::Active | EventState::Ended)
    }

    /// Whether people may still register.
    pub fn accepts_registrations(self) -> bool {
        matches!(self, EventState::Scheduled | EventState::Active)
    }
}

impl FromStr for EventState {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "SCHEDULED" => Ok(EventState::Scheduled),
            "ACTIVE" => Ok(EventState::Active),
            "ENDED" => Ok(EventState::Ended),
            "CANCELLED" => Ok(EventState::Cancelled),
            other => Err(DomainError::invalid(format!("unknown event state `{other}`"))),
        }
    }
}

/// When an event takes place. Always `starts_at < ends_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventWindow {
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
}

impl EventWindow {
    /// The longest event we accept; beyond it a typo in a year is likelier.
    pub const MAX_LENGTH_DAYS: i64 = 366;

    pub fn new(starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) -> Result<Self, DomainError> {
        if ends_at <= starts_at {
            return Err(DomainError::invalid("endsAt must be after startsAt"));
        }
        if ends_at - starts_at > Duration::days(Self::MAX_LENGTH_DAYS) {
            return Err(DomainError::invalid(format!("an event may last at most {} days", Self::MAX_LENGTH_DAYS)));
        }
        Ok(Self { starts_at, ends_at })
    }

    pub fn starts_at(&self) -> DateTime<Utc> {
        self.starts_at
    }

    pub fn ends_at(&self) -> DateTime<Utc> {
        self.ends_at
    }

    /// When sightings count, `[starts_at − grace, ends_at + grace]`: the
    /// window the policy's rule 1 applies (saturating at the calendar's ends).
    pub fn with_grace(&self, grace: Duration) -> (DateTime<Utc>, DateTime<Utc>) {
        let opens = self.starts_at.checked_sub_signed(grace).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let closes = self.ends_at.checked_add_signed(grace).unwrap_or(DateTime::<Utc>::MAX_UTC);
        (opens, closes)
    }
}

/// How sightings become attendance for one event (DESIGN.md, "Attendance rules").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttendancePolicy {
    /// Weakest signal that counts, in dBm; weaker sightings are ignored.
    pub min_rssi: i32,
    /// Sightings closer together than this belong to one stay.
    pub departure_gap: Duration,
    /// How long before the start and after the end sightings still count.
    pub grace: Duration,
    /// Whether only registered users are checked in (else walk-ins register).
    pub require_registration: bool,
    /// Which kinds of identifier count (docs/identity.md).
    pub identity: IdentityPolicy,
    /// Whether presence reported by attendees' phones (`reportPresence`) counts.
    pub accept_phone_reports: bool,
    /// The iBeacon the venue advertises, which phone reports must name.
    pub venue_beacon: Option<VenueBeacon>,
}

/// Which kinds of identifier an event counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentityPolicy {
    /// Static identifiers only: `bleUuid`s and extra device identifiers.
    Static,
    /// Rotating identifiers only: copied identifiers are useless.
    Rotating,
    /// Both (old phones and badges alongside the app).
    #[default]
    Both,
}

impl IdentityPolicy {
    /// Whether a sighting of this kind counts.
    pub fn accepts(self, rotating: bool) -> bool {
        match self {
            IdentityPolicy::Static => !rotating,
            IdentityPolicy::Rotating => rotating,
            IdentityPolicy::Both => true,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IdentityPolicy::Static => "STATIC",
            IdentityPolicy::Rotating => "ROTATING",
            IdentityPolicy::Both => "BOTH",
        }
    }

    /// From [`Self::as_str`]; anything else (and nothing, for events older
    /// than the policy) is `BOTH`.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("STATIC") => IdentityPolicy::Static,
            Some("ROTATING") => IdentityPolicy::Rotating,
            _ => IdentityPolicy::Both,
        }
    }
}

impl Default for AttendancePolicy {
    fn default() -> Self {
        Self {
            min_rssi: -90,
            departure_gap: Duration::minutes(5),
            grace: Duration::minutes(15),
            require_registration: true,
            identity: IdentityPolicy::Both,
            accept_phone_reports: false,
            venue_beacon: None,
        }
    }
}

impl AttendancePolicy {
    /// Checks that every field is in a range that makes physical sense.
    pub fn validate(self) -> Result<Self, DomainError> {
        if !(-127..=20).contains(&self.min_rssi) {
            return Err(DomainError::invalid("minRssi must be between -127 and 20 dBm"));
        }
        if self.departure_gap < Duration::seconds(1) || self.departure_gap > Duration::hours(24) {
            return Err(DomainError::invalid("departureGap must be between 1 second and 24 hours"));
        }
        if self.grace < Duration::zero() || self.grace > Duration::hours(24) {
            return Err(DomainError::invalid("grace must be between 0 and 24 hours"));
        }
        if self.accept_phone_reports && self.venue_beacon.is_none() {
            return Err(DomainError::invalid("acceptPhoneReports needs the venue's beacon: set venueBeacon"));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::hours(h)
    }

    #[test]
    fn window_must_end_after_it_starts() {
        assert!(EventWindow::new(t(1), t(2)).is_ok());
        assert!(EventWindow::new(t(2), t(2)).is_err());
        assert!(EventWindow::new(t(3), t(2)).is_err());
        assert!(EventWindow::new(t(0), t(24 * 400)).is_err());
    }

    #[test]
    fn life_cycle_transitions() {
        use EventState::*;
        assert_eq!(Scheduled.activate(), Ok(Active));
        assert_eq!(Active.end(), Ok(Ended));
        assert!(Ended.activate().is_err());
        assert!(Cancelled.activate().is_err());
        assert!(Cancelled.end().is_err());
        assert!(Ended.cancel().is_err());
        assert!(!Ended.accepts_registrations() && Active.accepts_registrations());
        for s in [Scheduled, Active, Ended, Cancelled] {
            assert_eq!(s.as_str().parse::<EventState>(), Ok(s));
        }
    }

    #[test]
    fn policy_defaults_match_the_design() {
        let p = AttendancePolicy::default();
        assert_eq!(p.min_rssi, -90);
        assert_eq!(p.departure_gap, Duration::minutes(5));
        assert_eq!(p.grace, Duration::minutes(15));
        assert!(p.require_registration);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn policy_ranges_are_checked() {
        let p = AttendancePolicy { min_rssi: -200, ..Default::default() };
        assert!(p.validate().is_err());
        let p = AttendancePolicy { departure_gap: Duration::zero(), ..Default::default() };
        assert!(p.validate().is_err());
        let p = AttendancePolicy { grace: Duration::seconds(-1), ..Default::default() };
        assert!(p.validate().is_err());
        let p = AttendancePolicy { accept_phone_reports: true, ..Default::default() };
        assert!(p.validate().is_err(), "phone reports without a venue beacon");
    }
}
