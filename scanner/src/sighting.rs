//! The one record that flows through the pipeline: an identifier heard at an instant.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// One identifier heard once (from a source), or the strongest hearing of it in a
/// coalescing window (after the pipeline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// What was heard: a BLE UUID in lowercase hyphenated form, or any other
    /// identifier the server knows a device by (the old scanners sent device names).
    pub identifier: String,
    /// When it was heard, in Unix milliseconds. Plain integers keep the hot path cheap;
    /// they become RFC 3339 only on upload.
    pub seen_at_ms: i64,
    /// Signal strength in dBm, when the source knows it.
    pub rssi: Option<i16>,
    /// The event it is for. `None` lets the server pick the active events in the key's scope.
    pub event_id: Option<String>,
}

/// The RSSI a controller reports when it has none (HCI's 127, "not available").
pub const RSSI_UNAVAILABLE: i16 = 127;

/// Unix milliseconds as RFC 3339 with millisecond precision, as the GraphQL `DateTime` wants.
pub fn rfc3339_ms(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Parses an RFC 3339 instant into Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        let ms = 1_900_000_000_123;
        assert_eq!(rfc3339_ms(ms), "2030-03-17T17:46:40.123Z");
        assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Some(ms));
    }
}
