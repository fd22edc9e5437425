//! Turning a BLE advertisement into the identifiers a phone or badge may be
//! advertising.
//!
//! A Rollcall phone advertises its user's BLE UUID (or its rotating identifier,
//! which has the same shape; see `docs/identity.md`) in one of three ways, and a
//! scanner accepts all of them:
//!
//! - **iBeacon**: Apple manufacturer data (company id `0x004C`) of type `0x02`,
//!   length `0x15`, whose next 16 bytes are the proximity UUID in big-endian order,
//!   then major and minor (big-endian `u16`s) and the measured power. It is
//!   reported as `ibeacon:<uuid>:<major>:<minor>` (decimal major and minor), so
//!   badges that share one vendor UUID stay apart; the server matches that full
//!   form first and falls back to the bare UUID, so a phone registered by its
//!   UUID is still recognised whatever major/minor it sends.
//! - **A 128-bit service UUID** in the advertised service list (AD types `0x06`
//!   and `0x07`). On air these are little-endian: the last byte of the UUID's
//!   text form is sent first.
//! - **Service data**: a custom 128-bit service UUID as the key, or a payload of
//!   exactly 16 bytes, read as a UUID in big-endian order (as the app writes it).
//!
//!
//! Two more formats carry identities that are not UUIDs:
//!
//! - **Eddystone-UID**: service data under `0xFEAA` whose frame type is `0x00`:
//!   transmit power, a 10-byte namespace and a 6-byte instance. Reported as
//!   `eddystone:<namespace>:<instance>` in lowercase hex.
//! - **The prototype app** (the React Native app the deployed scanners were built
//!   for): manufacturer data under the test company id `0xFFFF`, advertised with
//!   the 16-bit service `0xFFF0`, whose payload is the user's identifier in ASCII,
//!   `ATT-USER-…`. Reported as that text.
//!
//! One format carries no identity but still says something: Apple's **overflow
//! area** (Apple manufacturer data of type `0x01`), where iOS moves the service
//! UUIDs of an app advertising in the background. It means "an iPhone with an
//! advertising app in the background" — perhaps ours, but nothing says whose —
//! so it is counted in the scanner's statistics ([`is_apple_overflow`]), never
//! uploaded.
//!
//! UUIDs derived from the Bluetooth base UUID (`xxxxxxxx-0000-1000-8000-00805f9b34fb`,
//! the standard 16- and 32-bit services such as battery or Google's `0xFE9F`) are
//! never anyone's identifier and are dropped here, so they never reach the outbox.
//!
//! Everything here is pure: the BLE source feeds it what BlueZ parsed, and the tests
//! feed it raw advertisement bytes.

use uuid::Uuid;

/// Apple's Bluetooth SIG company identifier.
pub const APPLE_COMPANY_ID: u16 = 0x004C;

/// The company id reserved for tests, which the prototype app advertises under.
pub const TEST_COMPANY_ID: u16 = 0xFFFF;

/// What the prototype app's identifiers start with.
pub const PROTOTYPE_PREFIX: &str = "ATT-USER-";

/// Eddystone's 16-bit service UUID.
const EDDYSTONE_SERVICE: u16 = 0xFEAA;

/// The parts of an advertisement that can carry an identifier, as a platform
/// stack (BlueZ through btleplug) or [`parse_ad_structures`] hands them over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdvertisingData {
    /// Manufacturer-specific data by company id, without the id's two bytes.
    pub manufacturer_data: Vec<(u16, Vec<u8>)>,
    /// Advertised service UUIDs, already in their canonical (text) order.
    pub services: Vec<Uuid>,
    /// Service data by service UUID.
    pub service_data: Vec<(Uuid, Vec<u8>)>,
}

/// Why raw advertisement bytes could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdParseError {
    #[error("AD structure at byte {0} runs past the end of the advertisement")]
    Truncated(usize),
}

/// The Bluetooth base UUID's last 96 bits: UUIDs that end like this are 16- or 32-bit
/// SIG-assigned services written long.
const BASE_UUID_TAIL: [u8; 12] = [0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0x80, 0x5f, 0x9b, 0x34, 0xfb];

/// Whether `uuid` is a SIG-assigned 16/32-bit UUID in long form (so, nobody's identifier).
pub fn is_sig_assigned(uuid: &Uuid) -> bool {
    uuid.as_bytes()[4..] == BASE_UUID_TAIL
}

/// A 16-bit SIG UUID in long form.
fn uuid16(short: u16) -> Uuid {
    let mut b = [0u8; 16];
    b[2..4].copy_from_slice(&short.to_be_bytes());
    b[4..].copy_from_slice(&BASE_UUID_TAIL);
    Uuid::from_bytes(b)
}

/// A 128-bit UUID as sent on air (little-endian) in canonical order.
pub fn uuid_from_le(bytes: &[u8; 16]) -> Uuid {
    let mut b = *bytes;
    b.reverse();
    Uuid::from_bytes(b)
}

/// An iBeacon's proximity UUID, major and minor, from Apple manufacturer data
/// (company id removed).
pub fn ibeacon(apple_data: &[u8]) -> Option<(Uuid, u16, u16)> {
    match apple_data {
        [0x02, 0x15, rest @ ..] if rest.len() >= 20 => {
            let bytes: [u8; 16] = rest[..16].try_into().ok()?;
            let major = u16::from_be_bytes([rest[16], rest[17]]);
            let minor = u16::from_be_bytes([rest[18], rest[19]]);
            Some((Uuid::from_bytes(bytes), major, minor))
        }
        _ => None,
    }
}

/// The identifier an iBeacon is reported as: `ibeacon:<uuid>:<major>:<minor>`.
pub fn ibeacon_identifier(uuid: &Uuid, major: u16, minor: u16) -> String {
    format!("ibeacon:{}:{major}:{minor}", uuid.hyphenated())
}

/// An Eddystone-UID frame's namespace and instance, from `0xFEAA` service data.
pub fn eddystone_uid(service_data: &[u8]) -> Option<([u8; 10], [u8; 6])> {
    // Frame type 0x00, ranging power, namespace (10), instance (6), and two
    // reserved bytes that some beacons leave out.
    match service_data {
        [0x00, _power, rest @ ..] if rest.len() >= 16 => {
            Some((rest[..10].try_into().ok()?, rest[10..16].try_into().ok()?))
        }
        _ => None,
    }
}

/// The prototype app's identifier from manufacturer data under
/// [`TEST_COMPANY_ID`]: printable ASCII starting with [`PROTOTYPE_PREFIX`].
pub fn prototype_identifier(data: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(data).ok()?;
    let ok = text.starts_with(PROTOTYPE_PREFIX)
        && text.len() > PROTOTYPE_PREFIX.len()
        && text.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| text.to_owned())
}

/// Whether the advertisement holds Apple's overflow area: an iPhone with an app
/// advertising in the background (no identity; see the module doc).
pub fn is_apple_overflow(ad: &AdvertisingData) -> bool {
    ad.manufacturer_data.iter().any(|(company, data)| *company == APPLE_COMPANY_ID && data.first() == Some(&0x01))
}

/// Reads raw advertising data (a sequence of `length, type, value` AD structures,
/// as in an advertising or scan-response PDU).
pub fn parse_ad_structures(mut bytes: &[u8]) -> Result<AdvertisingData, AdParseError> {
    let mut out = AdvertisingData::default();
    let total = bytes.len();
    while let Some((&len, rest)) = bytes.split_first() {
        let at = total - bytes.len();
        let len = usize::from(len);
        if len == 0 {
            // Zero padding after the last structure.
            break;
        }
        if rest.len() < len {
            return Err(AdParseError::Truncated(at));
        }
        let (ad_type, value) = (rest[0], &rest[1..len]);
        match ad_type {
            // Incomplete / complete list of 128-bit service UUIDs.
            0x06 | 0x07 => {
                for chunk in value.chunks_exact(16) {
                    if let Ok(arr) = <[u8; 16]>::try_from(chunk) {
                        out.services.push(uuid_from_le(&arr));
                    }
                }
            }
            // Incomplete / complete list of 16-bit service UUIDs.
            0x02 | 0x03 => {
                for chunk in value.chunks_exact(2) {
                    out.services.push(uuid16(u16::from_le_bytes([chunk[0], chunk[1]])));
                }
            }
            // Service data, 16-bit UUID.
            0x16 if value.len() >= 2 => {
                out.service_data.push((uuid16(u16::from_le_bytes([value[0], value[1]])), value[2..].to_vec()));
            }
            // Service data, 128-bit UUID.
            0x21 if value.len() >= 16 => {
                if let Ok(arr) = <[u8; 16]>::try_from(&value[..16]) {
                    out.service_data.push((uuid_from_le(&arr), value[16..].to_vec()));
                }
            }
            // Manufacturer specific data: company id (little-endian), then the payload.
            0xFF if value.len() >= 2 => {
                out.manufacturer_data.push((u16::from_le_bytes([value[0], value[1]]), value[2..].to_vec()));
            }
            _ => {}
        }
        bytes = &rest[len..];
    }
    Ok(out)
}

/// Every identifier an advertisement carries, deduplicated, in the order found:
/// UUIDs in lowercase hyphenated form, the other formats as the module doc says.
pub fn identifiers(ad: &AdvertisingData) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |id: String| {
        if !out.contains(&id) {
            out.push(id);
        }
    };
    let usable = |u: &Uuid| !u.is_nil() && !is_sig_assigned(u);
    for (company, data) in &ad.manufacturer_data {
        match *company {
            APPLE_COMPANY_ID => {
                if let Some((u, major, minor)) = ibeacon(data).filter(|(u, ..)| usable(u)) {
                    push(ibeacon_identifier(&u, major, minor));
                }
            }
            TEST_COMPANY_ID => {
                if let Some(id) = prototype_identifier(data) {
                    push(id);
                }
            }
            _ => {}
        }
    }
    for u in ad.services.iter().filter(|u| usable(u)) {
        push(u.hyphenated().to_string());
    }
    for (key, data) in &ad.service_data {
        if *key == uuid16(EDDYSTONE_SERVICE)
            && let Some((namespace, instance)) = eddystone_uid(data)
        {
            push(format!("eddystone:{}:{}", hex(&namespace), hex(&instance)));
            continue;
        }
        if usable(key) {
            push(key.hyphenated().to_string());
        }
        if let Ok(arr) = <[u8; 16]>::try_from(data.as_slice())
            && usable(&Uuid::from_bytes(arr))
        {
            push(Uuid::from_bytes(arr).hyphenated().to_string());
        }
    }
    out
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn sig_assigned_uuids_are_not_identifiers() {
        assert!(is_sig_assigned(&uuid16(0x180F)));
        assert_eq!(uuid16(0xFE9F).to_string(), "0000fe9f-0000-1000-8000-00805f9b34fb");
        let ad = AdvertisingData { services: vec![uuid16(0x180F)], ..Default::default() };
        assert!(identifiers(&ad).is_empty());
    }

    #[test]
    fn truncated_structures_are_an_error() {
        assert_eq!(parse_ad_structures(&hex("02 01 06 1A FF 4C 00")), Err(AdParseError::Truncated(3)));
    }

    #[test]
    fn zero_padding_ends_the_data() {
        let ad = parse_ad_structures(&hex("02 01 06 00 00 00")).unwrap();
        assert_eq!(ad, AdvertisingData::default());
    }

    #[test]
    fn non_ibeacon_apple_data_is_ignored() {
        // An Apple "Nearby" (type 0x10) frame, not an iBeacon.
        let ad = parse_ad_structures(&hex("0B FF 4C 00 10 06 0B 1D 4A 2F 3A 61")).unwrap();
        assert_eq!(ad.manufacturer_data[0].0, APPLE_COMPANY_ID);
        assert!(identifiers(&ad).is_empty());
    }
}
