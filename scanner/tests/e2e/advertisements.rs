//! Advertisement parsing against real advertisement bytes, as they are on air.

use rollcall_scanner::advert::{APPLE_COMPANY_ID, identifiers, parse_ad_structures, uuid_from_le};
use uuid::Uuid;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// An Estimote beacon's advertising PDU payload (default proximity UUID
/// B9407F30-F5F8-466E-AFF9-25556B57FE6D, major 1, minor 2, measured power -59 dBm).
const IBEACON: &str = "02 01 06  1A FF 4C 00 02 15  B9 40 7F 30 F5 F8 46 6E AF F9 25 55 6B 57 FE 6D  00 01 00 02 C5";

#[test]
fn ibeacon_proximity_uuid_is_big_endian() {
    let ad = parse_ad_structures(&hex(IBEACON)).unwrap();
    assert_eq!(ad.manufacturer_data.len(), 1);
    assert_eq!(ad.manufacturer_data[0].0, APPLE_COMPANY_ID, "the company id is little-endian on air (4C 00)");
    assert_eq!(identifiers(&ad), vec![Uuid::parse_str("b9407f30-f5f8-466e-aff9-25556b57fe6d").unwrap()]);
}

/// The Nordic UART service (6E400001-B5A3-F393-E0A9-E50E24DCCA9E) in a complete list
/// of 128-bit service UUIDs, as an nRF device sends it: little-endian, so the last
/// byte of the text form comes first.
const NUS: &str = "02 01 06  11 07 9E CA DC 24 0E E5 A9 E0 93 F3 A3 B5 01 00 40 6E";

#[test]
fn service_uuids_are_little_endian_on_air() {
    let ad = parse_ad_structures(&hex(NUS)).unwrap();
    let nus = Uuid::parse_str("6e400001-b5a3-f393-e0a9-e50e24dcca9e").unwrap();
    assert_eq!(ad.services, vec![nus]);
    assert_eq!(identifiers(&ad), vec![nus]);
}

#[test]
fn the_same_uuid_in_both_byte_orders() {
    // A Rollcall user's UUID, advertised by the app as an iBeacon (big-endian) from
    // one phone and as a 128-bit service (little-endian) from another: one identifier.
    let user = Uuid::parse_str("3f2504e0-4f89-41d3-9a0c-0305e82c3301").unwrap();
    let be: Vec<u8> = user.as_bytes().to_vec();
    let mut le = be.clone();
    le.reverse();

    let mut beacon = hex("02 01 06 1A FF 4C 00 02 15");
    beacon.extend_from_slice(&be);
    beacon.extend_from_slice(&hex("00 01 00 02 C5"));
    let mut service = hex("02 01 06 11 06");
    service.extend_from_slice(&le);

    assert_eq!(identifiers(&parse_ad_structures(&beacon).unwrap()), vec![user]);
    assert_eq!(identifiers(&parse_ad_structures(&service).unwrap()), vec![user]);
    // Reading the service bytes without the swap would be a different UUID.
    assert_ne!(Uuid::from_slice(&le).unwrap(), user);
    assert_eq!(uuid_from_le(&le.try_into().unwrap()), user);
}

#[test]
fn service_data_and_a_scan_response_together() {
    // Eddystone-style service data under 16-bit 0xFEAA whose 16-byte payload is the
    // user's UUID, a 128-bit service-data entry keyed by a custom UUID, and the
    // 16-bit 0xFEAA in the service list (SIG-assigned, so not an identifier).
    let user = Uuid::parse_str("3f2504e0-4f89-41d3-9a0c-0305e82c3301").unwrap();
    let custom = Uuid::parse_str("6e400001-b5a3-f393-e0a9-e50e24dcca9e").unwrap();
    let mut bytes = hex("03 03 AA FE  13 16 AA FE");
    bytes.extend_from_slice(user.as_bytes());
    bytes.extend_from_slice(&hex("12 21 9E CA DC 24 0E E5 A9 E0 93 F3 A3 B5 01 00 40 6E 01"));
    let ad = parse_ad_structures(&bytes).unwrap();
    assert_eq!(ad.service_data.len(), 2);
    assert_eq!(identifiers(&ad), vec![user, custom]);
}
