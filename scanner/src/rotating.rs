//! Rotating beacon identifiers, as a phone computes them (scheme
//! `rollcall-beacon-v1`, `docs/identity.md`), so that `simulate` can advertise
//! them. The scanner never needs this to scan: a rotating identifier is heard
//! like any UUID and resolved by the server. (The server's own copy is
//! `rollcall::domain::identity`; the scanner does not depend on the server
//! crate, and both are checked against the same test vectors.)

use std::path::Path;

use anyhow::Context as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use uuid::Uuid;

/// What phones advertise rotating identifiers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotating {
    /// One secret per simulated attendee, in order.
    pub secrets: Vec<[u8; 32]>,
    /// The slot length, in seconds.
    pub slot_secs: i64,
}

impl Rotating {
    /// Reads a file of secrets, one per line in hex (as `me { beacon { secret } }` gives them).
    pub fn from_file(path: &Path, slot_secs: i64) -> anyhow::Result<Self> {
        anyhow::ensure!(slot_secs > 0, "the beacon slot must be at least 1 second, not {slot_secs}");
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let secrets = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
            .map(|(i, l)| {
                hex_secret(l).with_context(|| format!("{} line {}: not a 64-hex-digit secret", path.display(), i + 1))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { secrets, slot_secs })
    }

    /// What attendee `index` advertises at `at_ms`, if they have a secret.
    pub fn identifier_at(&self, index: usize, at_ms: i64) -> Option<Uuid> {
        let secret = self.secrets.get(index)?;
        Some(identifier(secret, at_ms.div_euclid(1000).div_euclid(self.slot_secs)))
    }
}

fn hex_secret(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The identifier `secret` advertises in `slot`.
pub fn identifier(secret: &[u8; 32], slot: i64) -> Uuid {
    let Ok(mut mac) = <Hmac<Sha256>>::new_from_slice(secret) else { return Uuid::nil() };
    mac.update(b"rollcall-beacon-v1");
    mac.update(&(slot as u64).to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    Uuid::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_test_vectors_hold() {
        // docs/identity.md
        let k = hex_secret("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f").unwrap();
        assert_eq!(identifier(&k, 0).to_string(), "ab712af6-edd3-43b0-9e62-ff0cf18d9e7b");
        assert_eq!(identifier(&k, 2_966_400).to_string(), "e4638377-4253-42f2-b048-fe793115a04a");
        let r = Rotating { secrets: vec![k], slot_secs: 600 };
        assert_eq!(r.identifier_at(0, 2_966_400 * 600_000 + 599_999), Some(identifier(&k, 2_966_400)));
        assert_eq!(r.identifier_at(1, 0), None);
        assert!(hex_secret("zz").is_none());
    }
}
