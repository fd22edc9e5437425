//! What a sighting batch must look like before any of it is applied.

use chrono::{DateTime, Duration, TimeZone, Utc};

/// Most sightings one batch may carry; a larger batch is refused whole.
pub const MAX_BATCH_SIZE: usize = 5000;
/// How far ahead of the server's clock a sighting may be (scanner clock skew).
pub const MAX_CLOCK_AHEAD: Duration = Duration::hours(24);
/// The physical range of a BLE RSSI reading, in dBm.
pub const RSSI_RANGE: std::ops::RangeInclusive<i32> = -127..=20;

/// The earliest `seenAt` we accept: before it, a scanner's clock was unset.
pub fn earliest_sane() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Checks one sighting; the error is the reason shown to the scanner.
pub fn check_sighting(
    identifier: &str,
    seen_at: DateTime<Utc>,
    rssi: Option<i32>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    if identifier.trim().is_empty() || identifier.len() > 128 {
        return Err("bleUuid must be 1 to 128 characters".into());
    }
    if seen_at > now + MAX_CLOCK_AHEAD {
        return Err("seenAt is more than 24 hours ahead of the server's clock".into());
    }
    if seen_at < earliest_sane() {
        return Err("seenAt is before 2020: is the scanner's clock set?".into());
    }
    if let Some(r) = rssi
        && !RSSI_RANGE.contains(&r)
    {
        return Err(format!("rssi {r} is outside {}..={} dBm", RSSI_RANGE.start(), RSSI_RANGE.end()));
    }
    Ok(())
}

/// The identifier as it is stored: a UUID in lower-case hyphenated form (so
/// any spelling matches a user's bleUuid), anything else trimmed, as is.
pub fn canonical_identifier(raw: &str) -> String {
    match uuid::Uuid::parse_str(raw.trim()) {
        Ok(u) => u.hyphenated().to_string(),
        Err(_) => raw.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sightings_are_checked() {
        let now = Utc::now();
        assert!(check_sighting("x", now, Some(-60), now).is_ok());
        assert!(check_sighting("x", now, None, now).is_ok());
        assert!(check_sighting("", now, Some(-60), now).is_err());
        assert!(check_sighting("x", now + Duration::hours(25), Some(-60), now).is_err());
        assert!(check_sighting("x", now + Duration::hours(23), Some(-60), now).is_ok());
        assert!(check_sighting("x", earliest_sane() - Duration::seconds(1), None, now).is_err());
        assert!(check_sighting("x", now, Some(-128), now).is_err());
        assert!(check_sighting("x", now, Some(21), now).is_err());
    }

    #[test]
    fn identifiers_are_canonical() {
        assert_eq!(
            canonical_identifier(" 6F1C2A3E-8D4B-4C55-9A0E-2B7F4D9E1C3A "),
            "6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a"
        );
        assert_eq!(canonical_identifier(" Ada's Pixel "), "Ada's Pixel");
    }
}
