//! Advertisement parsing against real advertisement bytes, as they are on air.

use rollcall_scanner::advert::{APPLE_COMPANY_ID, identifiers, is_apple_overflow, parse_ad_structures, uuid_from_le};
use uuid::Uuid;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// An Estimote beacon's advertising PDU payload (default proximity UUID
/// B9407F30-F5F8-466E-AFF9-25556B57FE6D, major 1, minor 2, measured power -59 dBm).
const IBEACON: &str = "02 01 06  1A FF 4C 00 02 15  B9 40 7F 30 F5 F8 46 6E AF F9 25 55 6B 57 FE 6D  00 01 00 02 C5";

#[test]
fn ibeacon_proximity_uuid_is_big_endian_with_major_and_minor() {
    let ad = parse_ad_structures(&hex(IBEACON)).unwrap();
    assert_eq!(ad.manufacturer_data.len(), 1);
    assert_eq!(ad.manufacturer_data[0].0, APPLE_COMPANY_ID, "the company id is little-endian on air (4C 00)");
    assert_eq!(identifiers(&ad), vec!["ibeacon:b9407f30-f5f8-466e-aff9-25556b57fe6d:1:2"]);
    assert!(!is_apple_overflow(&ad));
}

#[test]
fn badges_sharing_a_vendor_uuid_differ_by_major_and_minor() {
    // Two badges of one fleet: same proximity UUID, major 0x0102 = 258, minors
    // 0xABCD = 43981 and 0xFFFF = 65535 (big-endian on air).
    let a = hex("02 01 06 1A FF 4C 00 02 15 B9 40 7F 30 F5 F8 46 6E AF F9 25 55 6B 57 FE 6D 01 02 AB CD C3");
    let b = hex("02 01 06 1A FF 4C 00 02 15 B9 40 7F 30 F5 F8 46 6E AF F9 25 55 6B 57 FE 6D 01 02 FF FF C3");
    assert_eq!(
        identifiers(&parse_ad_structures(&a).unwrap()),
        vec!["ibeacon:b9407f30-f5f8-466e-aff9-25556b57fe6d:258:43981"]
    );
    assert_eq!(
        identifiers(&parse_ad_structures(&b).unwrap()),
        vec!["ibeacon:b9407f30-f5f8-466e-aff9-25556b57fe6d:258:65535"]
    );
    // An iBeacon cut short before its minor is not read.
    let short = hex("02 01 06 18 FF 4C 00 02 15 B9 40 7F 30 F5 F8 46 6E AF F9 25 55 6B 57 FE 6D 01 02 AB");
    assert!(identifiers(&parse_ad_structures(&short).unwrap()).is_empty());
}

/// An Eddystone-UID frame as the specification's example beacon sends it:
/// service list 0xFEAA, then service data 0xFEAA with frame type 0x00, ranging
/// power -25 dBm (0xE7), namespace EDD1EBEAC04E5DEFA017, instance 0BDB87539B67
/// and the two reserved bytes.
const EDDYSTONE_UID: &str =
    "02 01 06  03 03 AA FE  17 16 AA FE 00 E7 ED D1 EB EA C0 4E 5D EF A0 17 0B DB 87 53 9B 67 00 00";

#[test]
fn eddystone_uid_is_namespace_and_instance() {
    let ad = parse_ad_structures(&hex(EDDYSTONE_UID)).unwrap();
    assert_eq!(identifiers(&ad), vec!["eddystone:edd1ebeac04e5defa017:0bdb87539b67"]);
    // Without the reserved bytes (some beacons leave them out): the same.
    let short = hex("02 01 06  03 03 AA FE  15 16 AA FE 00 E7 ED D1 EB EA C0 4E 5D EF A0 17 0B DB 87 53 9B 67");
    assert_eq!(identifiers(&parse_ad_structures(&short).unwrap()), identifiers(&ad));
    // An Eddystone-URL frame (type 0x10) carries no identity.
    let url = hex("02 01 06  03 03 AA FE  0D 16 AA FE 10 EB 03 67 6F 6F 67 6C 65 07");
    assert!(identifiers(&parse_ad_structures(&url).unwrap()).is_empty());
}

/// The prototype app on Android (react-native-ble-advertiser): the 16-bit
/// service 0xFFF0, and manufacturer data under the test company id 0xFFFF whose
/// payload is the user's identifier in ASCII.
const PROTOTYPE: &str = "02 01 02  03 03 F0 FF  14 FF FF FF 41 54 54 2D 55 53 45 52 2D 31 32 33 34 35 36 37 38";

#[test]
fn the_prototype_apps_att_user_identifier() {
    let ad = parse_ad_structures(&hex(PROTOTYPE)).unwrap();
    assert_eq!(identifiers(&ad), vec!["ATT-USER-12345678"]);
    // Other devices use the test company id too: their payloads are not identifiers.
    let other = hex("02 01 02  03 03 F0 FF  06 FF FF FF 0C 17 38");
    assert!(identifiers(&parse_ad_structures(&other).unwrap()).is_empty());
    let not_text = hex("02 01 02  0F FF FF FF 41 54 54 2D 55 53 45 52 2D 00 FF 0A");
    assert!(identifiers(&parse_ad_structures(&not_text).unwrap()).is_empty());
}

/// An iPhone with an app advertising a service from the background: iOS moves the
/// service UUIDs into Apple's overflow area (type 0x01 and a 16-byte bitmask of
/// hashed UUIDs). No identity; counted as such.
const OVERFLOW: &str = "02 01 1A  14 FF 4C 00 01 00 00 00 00 00 00 00 00 00 00 00 00 80 00 00 00";

#[test]
fn apples_overflow_area_is_an_iphone_in_the_background_with_no_identity() {
    let ad = parse_ad_structures(&hex(OVERFLOW)).unwrap();
    assert!(is_apple_overflow(&ad));
    assert!(identifiers(&ad).is_empty());
    assert!(!is_apple_overflow(&parse_ad_structures(&hex(PROTOTYPE)).unwrap()));
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
    assert_eq!(identifiers(&ad), vec![nus.to_string()]);
}

#[test]
fn the_same_uuid_in_both_byte_orders() {
    // A Rollcall user's UUID, advertised by the app as an iBeacon (big-endian) from
    // one phone and as a 128-bit service (little-endian) from another: the same
    // UUID (the server matches the iBeacon form by its UUID when nobody registered
    // the major and minor).
    let user = Uuid::parse_str("3f2504e0-4f89-41d3-9a0c-0305e82c3301").unwrap();
    let be: Vec<u8> = user.as_bytes().to_vec();
    let mut le = be.clone();
    le.reverse();

    let mut beacon = hex("02 01 06 1A FF 4C 00 02 15");
    beacon.extend_from_slice(&be);
    beacon.extend_from_slice(&hex("00 01 00 02 C5"));
    let mut service = hex("02 01 06 11 06");
    service.extend_from_slice(&le);

    assert_eq!(identifiers(&parse_ad_structures(&beacon).unwrap()), vec![format!("ibeacon:{user}:1:2")]);
    assert_eq!(identifiers(&parse_ad_structures(&service).unwrap()), vec![user.to_string()]);
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
    assert_eq!(identifiers(&ad), vec![user.to_string(), custom.to_string()]);
}
