//! Scanner API keys: `rck_` followed by 32 bytes of randomness in hex.
//!
//! The secret is shown once, when created. Only its SHA-256 is stored: the
//! key is high-entropy, so a fast hash is as safe as a slow one and keeps
//! every ingest request cheap. A lookup finds the record by hash; the stored
//! and computed hashes are then compared in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The recognisable start of every key, so that secret scanners and people
/// can spot one in a log or a repository.
pub const PREFIX: &str = "rck_";
/// Random bytes per key (256 bits).
const RANDOM_BYTES: usize = 32;
/// How many characters of a key (after the prefix) we keep to tell keys apart.
const DISPLAY_CHARS: usize = 8;

/// A key's secret. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeySecret({}…)", self.display_prefix())
    }
}

impl ApiKeySecret {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; RANDOM_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!("{PREFIX}{}", hex::encode(bytes)))
    }

    /// Accepts a presented key if it has our shape; anything else cannot be a
    /// key of ours and is refused without a database lookup.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let body = raw.strip_prefix(PREFIX)?;
        (body.len() == RANDOM_BYTES * 2 && body.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(raw.to_ascii_lowercase()))
    }

    /// The full secret, to be shown to its owner exactly once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The part that identifies the key in lists, e.g. `rck_3f9a0c12`.
    pub fn display_prefix(&self) -> String {
        self.0.chars().take(PREFIX.len() + DISPLAY_CHARS).collect()
    }

    /// Hex SHA-256 of the secret, as stored.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// Whether this secret hashes to `stored`, compared in constant time.
    pub fn matches(&self, stored: &str) -> bool {
        self.hash().as_bytes().ct_eq(stored.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_parse_back() {
        let a = ApiKeySecret::generate();
        let b = ApiKeySecret::generate();
        assert_ne!(a, b);
        assert!(a.expose().starts_with("rck_"));
        assert_eq!(a.expose().len(), 4 + 64);
        assert_eq!(ApiKeySecret::parse(a.expose()), Some(a.clone()));
        assert!(a.matches(&a.hash()));
        assert!(!b.matches(&a.hash()));
    }

    #[test]
    fn debug_does_not_leak_the_secret() {
        let a = ApiKeySecret::generate();
        let shown = format!("{a:?}");
        assert!(!shown.contains(&a.expose()[12..]));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in ["", "rck_", "rck_xyz", "sk_0123", &format!("rck_{}", "g".repeat(64))] {
            assert!(ApiKeySecret::parse(bad).is_none(), "{bad}");
        }
    }
}
