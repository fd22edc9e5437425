//! Door codes: the short-lived token the door screen shows as a QR code and
//! an attendee's app sends back with `checkInWithCode` (docs/identity.md).
//!
//! A code names its event and a 30-second time slot, and carries a MAC over
//! both made with a key only the server knows, so nobody can make one, and
//! a photo of the screen is useless a minute later:
//!
//! ```text
//! slot = floor(unix_seconds / 30)
//! mac  = HMAC-SHA256(door_key, "rollcall-door-v1" || event (16 bytes) || slot (u32 BE))[0..10]
//! code = "rc1." || base64url_nopad(event || slot (u32 BE) || mac)        (44 characters)
//! ```
//!
//! `door_key` is derived from the server's JWT secret (HMAC-SHA256 over a
//! fixed label), so every instance behind a load balancer makes and accepts
//! the same codes with no extra configuration. A code is accepted during its
//! own slot and the next (a scan, a slow network and the app's round trip
//! fit easily): between 30 and 60 seconds in all.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// How long one code is shown, in seconds.
pub const SLOT_SECS: i64 = 30;
/// What every code starts with (the format's version).
const PREFIX: &str = "rc1.";
/// Bytes of MAC kept: 80 bits, far beyond guessing within a minute.
const MAC_LEN: usize = 10;
/// Event, slot, MAC.
const RAW_LEN: usize = 16 + 4 + MAC_LEN;

/// The server's key for door codes. `Debug` is redacted.
#[derive(Clone)]
pub struct DoorKey([u8; 32]);

impl std::fmt::Debug for DoorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DoorKey(..)")
    }
}

/// Why a code is refused; each message is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DoorCodeError {
    /// Not something this server made (garbled, truncated, forged).
    #[error("this is not a valid door code")]
    Invalid,
    /// Made by this server, but its time is over (or, by a clock far off, not yet come).
    #[error("this door code has expired; scan the code on the door screen again")]
    Expired,
}

/// A verified code: the event it admits to, and its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoorPass {
    pub event: Uuid,
    pub slot: i64,
}

/// The slot `unix_secs` falls in.
pub fn slot_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(SLOT_SECS)
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length")
}

impl DoorKey {
    /// The door key derived from the server's secret.
    pub fn derive(server_secret: &[u8]) -> Self {
        let mut mac = hmac(server_secret);
        mac.update(b"rollcall-door-key-v1");
        Self(mac.finalize().into_bytes().into())
    }

    fn mac(&self, event: Uuid, slot: u32) -> [u8; MAC_LEN] {
        let mut mac = hmac(&self.0);
        mac.update(b"rollcall-door-v1");
        mac.update(event.as_bytes());
        mac.update(&slot.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The code for `event` in `slot`.
    pub fn code(&self, event: Uuid, slot: i64) -> String {
        // Slots fit in 32 bits until the year 6053.
        let slot = u32::try_from(slot).unwrap_or(u32::MAX);
        let mut raw = Vec::with_capacity(RAW_LEN);
        raw.extend_from_slice(event.as_bytes());
        raw.extend_from_slice(&slot.to_be_bytes());
        raw.extend_from_slice(&self.mac(event, slot));
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
    }

    /// Checks a code at `now_secs` (Unix seconds): made by this key, and of
    /// the current slot or the one before.
    pub fn verify(&self, code: &str, now_secs: i64) -> Result<DoorPass, DoorCodeError> {
        let body = code.trim().strip_prefix(PREFIX).ok_or(DoorCodeError::Invalid)?;
        // Longer input is refused before decoding anything.
        if body.len() > 64 {
            return Err(DoorCodeError::Invalid);
        }
        let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| DoorCodeError::Invalid)?;
        if raw.len() != RAW_LEN {
            return Err(DoorCodeError::Invalid);
        }
        let event = Uuid::from_slice(&raw[..16]).map_err(|_| DoorCodeError::Invalid)?;
        let slot = u32::from_be_bytes([raw[16], raw[17], raw[18], raw[19]]);
        let expected = self.mac(event, slot);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &raw[20..])) {
            return Err(DoorCodeError::Invalid);
        }
        let now = slot_of(now_secs);
        let slot = i64::from(slot);
        if slot != now && slot != now - 1 {
            return Err(DoorCodeError::Expired);
        }
        Ok(DoorPass { event, slot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DoorKey {
        DoorKey::derive(b"a server secret of at least thirty-two bytes")
    }

    const EVENT: Uuid = Uuid::from_u128(0x0123_4567_89ab_4def_8123_4567_89ab_cdef);

    #[test]
    fn a_code_is_accepted_in_its_slot_and_the_next_only() {
        let t = 1_800_000_000;
        let code = key().code(EVENT, slot_of(t));
        assert_eq!(code.len(), 44, "{code}");
        assert!(code.starts_with("rc1."));
        let pass = DoorPass { event: EVENT, slot: slot_of(t) };
        assert_eq!(key().verify(&code, t), Ok(pass));
        assert_eq!(key().verify(&code, t + SLOT_SECS), Ok(pass), "scan latency");
        assert_eq!(key().verify(&code, t + 2 * SLOT_SECS), Err(DoorCodeError::Expired));
        assert_eq!(key().verify(&code, t - SLOT_SECS), Err(DoorCodeError::Expired), "not yet");
    }

    #[test]
    fn codes_change_every_slot_and_per_event() {
        let k = key();
        assert_ne!(k.code(EVENT, 10), k.code(EVENT, 11));
        assert_ne!(k.code(EVENT, 10), k.code(Uuid::from_u128(7), 10));
    }

    #[test]
    fn forged_and_garbled_codes_are_invalid() {
        let t = 1_800_000_000;
        let code = key().code(EVENT, slot_of(t));
        let other = DoorKey::derive(b"another server's secret, also long enough");
        assert_eq!(other.verify(&code, t), Err(DoorCodeError::Invalid));
        // Swap the event for another: the MAC no longer matches.
        let mut raw = URL_SAFE_NO_PAD.decode(&code[4..]).unwrap();
        raw[0] ^= 1;
        let tampered = format!("rc1.{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(key().verify(&tampered, t), Err(DoorCodeError::Invalid));
        for garbage in ["", "rc1.", "rc1.!!!!", "hello", &code[..30], &format!("{code}AA"), &"rc1.A".repeat(100)] {
            assert_eq!(key().verify(garbage, t), Err(DoorCodeError::Invalid), "{garbage}");
        }
    }
}
