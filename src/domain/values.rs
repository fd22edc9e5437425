//! Validated value types. Each is constructed only through `parse`, so holding
//! one means its rule was checked once, at the edge of the system.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::DomainError;

/// What a user may do. The order of authority is ADMIN > ORGANIZER > ATTENDEE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything, including users, roles and API keys.
    Admin,
    /// Creates and runs their own events.
    Organizer,
    /// Registers for events and sees their own attendance.
    Attendee,
}

impl Role {
    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Organizer => "ORGANIZER",
            Role::Attendee => "ATTENDEE",
        }
    }

    /// Whether this role may run events (create them, see their attendance).
    pub fn can_organize(self) -> bool {
        matches!(self, Role::Admin | Role::Organizer)
    }
}

impl FromStr for Role {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "ADMIN" => Ok(Role::Admin),
            "ORGANIZER" => Ok(Role::Organizer),
            "ATTENDEE" => Ok(Role::Attendee),
            other => Err(DomainError::invalid(format!(
                "unknown role {}: expected ADMIN, ORGANIZER or ATTENDEE",
                quoted(other)
            ))),
        }
    }
}

/// How a refused input is shown in its error: in backticks, and cut short,
/// so that a megabyte sent as an e-mail address is not sent back whole.
fn quoted(raw: &str) -> String {
    const SHOWN: usize = 64;
    match raw.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("`{}…`", &raw[..cut]),
        None => format!("`{raw}`"),
    }
}

/// An e-mail address, trimmed and lower-cased so that uniqueness is
/// case-insensitive. The check is deliberately shallow (one `@`, a dot in the
/// domain, no spaces): the only real test of an address is mail reaching it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let email = raw.trim().to_lowercase();
        let bad = || DomainError::invalid(format!("{} is not a valid e-mail address", quoted(raw.trim())));
        if email.len() > 254 || email.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        let (local, domain) = email.split_once('@').ok_or_else(bad)?;
        if local.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err(bad());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text with a required, bounded length (names, descriptions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

impl Text {
    /// Trims `raw` and checks that it is non-empty and at most `max` characters.
    pub fn parse(field: &str, raw: &str, max: usize) -> Result<Self, DomainError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(DomainError::invalid(format!("{field} must not be empty")));
        }
        if text.chars().count() > max {
            return Err(DomainError::invalid(format!("{field} must be at most {max} characters")));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A person's display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        Text::parse("name", raw, 200).map(|t| Self(t.into_inner()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password that meets the minimum rules. `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Minimum length. Length beats composition rules (NIST SP 800-63B).
    pub const MIN_LEN: usize = 10;
    /// Upper bound, so hashing cost stays bounded.
    pub const MAX_LEN: usize = 256;

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let len = raw.chars().count();
        if len < Self::MIN_LEN {
            return Err(DomainError::invalid(format!(
                "password is too weak: use at least {} characters",
                Self::MIN_LEN
            )));
        }
        if len > Self::MAX_LEN {
            return Err(DomainError::invalid(format!("password must be at most {} characters", Self::MAX_LEN)));
        }
        let first = raw.chars().next();
        if raw.chars().all(|c| Some(c) == first) {
            return Err(DomainError::invalid("password is too weak: it repeats a single character"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The identifier a user's phone advertises: a UUID, stored in lower-case
/// hyphenated form so that every spelling of it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BleUuid(Uuid);

impl BleUuid {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        Uuid::parse_str(raw.trim()).map(Self).map_err(|_| {
            DomainError::invalid(format!(
                "{} is not a valid UUID (expected e.g. 6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a)",
                quoted(raw.trim())
            ))
        })
    }

    /// A fresh random identifier; v4, so it carries no time or host data.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn to_canonical(self) -> String {
        self.0.hyphenated().to_string()
    }
}

/// An extra device identifier a user can be recognised by, such as a MAC
/// address or an advertised device name sent by older scanners. It is matched
/// exactly, so only surrounding whitespace is removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceIdentifier(String);

impl DeviceIdentifier {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let id = raw.trim();
        if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
            return Err(DomainError::invalid("a device identifier must be 1 to 128 printable characters"));
        }
        // Spelled as ingest spells what a scanner heard, so that it matches.
        Ok(Self(super::batch::canonical_identifier(id)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_normalised_and_checked() {
        assert_eq!(Email::parse("  Ada@Example.ORG ").unwrap().as_str(), "ada@example.org");
        for bad in ["", "ada", "ada@", "@example.org", "ada@example", "a b@example.org", "a@b@c.org", "ada@.org"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn names_must_not_be_blank_or_huge() {
        assert_eq!(PersonName::parse(" Ada Lovelace ").unwrap().as_str(), "Ada Lovelace");
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse(&"x".repeat(201)).is_err());
    }

    #[test]
    fn weak_passwords_are_refused_and_never_printed() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("aaaaaaaaaaaa").is_err());
        let pw = Password::parse("correct horse battery").unwrap();
        assert!(!format!("{pw:?}").contains("horse"));
    }

    #[test]
    fn ble_uuid_accepts_any_spelling_and_canonicalises() {
        let a = BleUuid::parse("6F1C2A3E-8D4B-4C55-9A0E-2B7F4D9E1C3A").unwrap();
        let b = BleUuid::parse("6f1c2a3e8d4b4c559a0e2b7f4d9e1c3a").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_canonical(), "6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a");
        assert!(BleUuid::parse("not-a-uuid").is_err());
    }

    #[test]
    fn roles_round_trip() {
        for role in [Role::Admin, Role::Organizer, Role::Attendee] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
        assert!(Role::Organizer.can_organize() && !Role::Attendee.can_organize());
    }

    #[test]
    fn device_identifiers_are_exact_but_trimmed() {
        assert_eq!(DeviceIdentifier::parse(" Pixel-7 ").unwrap().as_str(), "Pixel-7");
        assert!(DeviceIdentifier::parse("").is_err());
        assert!(DeviceIdentifier::parse("a\u{0}b").is_err());
    }
}
