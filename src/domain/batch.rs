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
    let raw = raw.trim();
    if let Ok(u) = uuid::Uuid::parse_str(raw) {
        return u.hyphenated().to_string();
    }
    if let Some((uuid, major, minor)) = ibeacon_parts(raw) {
        return format!("ibeacon:{uuid}:{major}:{minor}");
    }
    raw.to_owned()
}

/// An iBeacon as the scanner reports it, `ibeacon:<uuid>:<major>:<minor>`
/// (decimal major and minor), split up.
fn ibeacon_parts(raw: &str) -> Option<(uuid::Uuid, u16, u16)> {
    let rest = raw.strip_prefix("ibeacon:")?;
    let mut parts = rest.split(':');
    let (uuid, major, minor) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((uuid::Uuid::parse_str(uuid).ok()?, major.parse().ok()?, minor.parse().ok()?))
}

/// What a canonical identifier also matches when nobody holds it exactly: an
/// iBeacon's bare proximity UUID, so that a phone registered by its UUID is
/// recognised whatever major and minor it advertises, while badges registered
/// with their major and minor stay apart.
pub fn fallback_identifier(canonical: &str) -> Option<String> {
    ibeacon_parts(canonical).map(|(uuid, ..)| uuid.hyphenated().to_string())
}

/// The user a canonical identifier belongs to: exactly, or by its fallback.
pub fn lookup<V: Copy>(found: &std::collections::HashMap<String, V>, canonical: &str) -> Option<V> {
    found.get(canonical).copied().or_else(|| fallback_identifier(canonical).and_then(|f| found.get(&f).copied()))
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

    #[test]
    fn an_ibeacon_falls_back_to_its_uuid() {
        let heard = canonical_identifier("ibeacon:B9407F30-F5F8-466E-AFF9-25556B57FE6D:1:2");
        assert_eq!(heard, "ibeacon:b9407f30-f5f8-466e-aff9-25556b57fe6d:1:2");
        assert_eq!(fallback_identifier(&heard).as_deref(), Some("b9407f30-f5f8-466e-aff9-25556b57fe6d"));
        for not in [
            "ibeacon:x:1:2",
            "ibeacon:b9407f30-f5f8-466e-aff9-25556b57fe6d:1:70000",
            "ibeacon:b9407f30-f5f8-466e-aff9-25556b57fe6d:1:2:3",
            "ATT-USER-1",
        ] {
            assert_eq!(fallback_identifier(not), None, "{not}");
        }
        let mut found = std::collections::HashMap::new();
        found.insert("b9407f30-f5f8-466e-aff9-25556b57fe6d".to_owned(), 1);
        assert_eq!(lookup(&found, &heard), Some(1), "a phone registered by its UUID");
        found.insert(heard.clone(), 2);
        assert_eq!(lookup(&found, &heard), Some(2), "a badge registered with its major and minor");
        assert_eq!(lookup(&found, "ibeacon:b9407f30-f5f8-466e-aff9-25556b57fe6d:1:3"), Some(1));
    }
}
