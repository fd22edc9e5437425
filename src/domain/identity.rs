//! Rotating identifiers: what a phone advertises in each time slot, and how
//! the server tells whose it is (the scheme is written out, with test
//! vectors, in `docs/identity.md`).
//!
//! Each user has a 32-byte secret. Time is cut into slots of `slot_secs`
//! (600 by default) counted from the Unix epoch. In slot `n` the phone
//! advertises the first 16 bytes of `HMAC-SHA256(secret, "rollcall-beacon-v1"
//! || n as u64 big-endian)`, with the UUID version (4) and variant bits set,
//! as a UUID. A copied identifier is worth one slot; two identifiers of one
//! user cannot be linked without the secret.
//!
//! The server resolves them with a [`RotatingTable`]: identifier → (user,
//! slot) for every user with a secret over a range of slots, built ahead per
//! slot, so a sighting costs one hash lookup. A sighting counts when the
//! identifier's slot is within one slot of its `seenAt`'s (clock drift
//! between phone and scanner); an identifier of a slot further away is a
//! replay ([`Rotation::Replayed`]), not counted.

use std::collections::{BTreeSet, HashMap, HashSet};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use uuid::Uuid;

/// What the HMAC's message starts with (the scheme's version).
pub const SCHEME: &str = "rollcall-beacon-v1";
/// The slot length unless the server is told otherwise.
pub const DEFAULT_SLOT_SECS: i64 = 600;
/// How many slots either side of a sighting's own slot still count.
pub const DRIFT_SLOTS: i64 = 1;

/// A user's beacon secret.
pub type Secret = [u8; 32];

/// The slot an instant (Unix seconds) falls in.
pub fn slot_of(unix_secs: i64, slot_secs: i64) -> i64 {
    unix_secs.div_euclid(slot_secs.max(1))
}

/// The identifier `secret` advertises in `slot`.
pub fn identifier(secret: &Secret, slot: i64) -> Uuid {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(SCHEME.as_bytes());
    mac.update(&(slot as u64).to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    Uuid::from_bytes(b)
}

/// A fresh random secret.
pub fn new_secret() -> Secret {
    use rand::RngCore as _;
    let mut s = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

/// A secret from its lowercase hex form (as stored and handed to the app).
pub fn parse_secret(hex_text: &str) -> Option<Secret> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

/// What a heard identifier is, for a sighting in a given slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The identifier of this user, in a slot within the drift of the sighting's.
    Valid(Uuid),
    /// A user's identifier, but of a slot too far from the sighting's: copied.
    Replayed,
    /// Nobody's rotating identifier (in the slots the table holds).
    Unknown,
}

/// Identifier → (user, slot) for every user with a secret, over a set of slots.
#[derive(Debug, Default)]
pub struct RotatingTable {
    /// The users' secrets.
    secrets: Vec<(Uuid, Secret)>,
    /// Slot length in seconds.
    slot_secs: i64,
    /// Every identifier of the slots held.
    by_id: HashMap<Uuid, (Uuid, i64)>,
    /// The slots held.
    slots: BTreeSet<i64>,
    /// Identifiers two users (or two slots) share: resolved as nobody's.
    ambiguous: HashSet<Uuid>,
}

impl RotatingTable {
    /// A table over `secrets`, with no slot computed yet.
    pub fn new(secrets: Vec<(Uuid, Secret)>, slot_secs: i64) -> Self {
        Self { secrets, slot_secs: slot_secs.max(1), ..Default::default() }
    }

    /// The slot length.
    pub fn slot_secs(&self) -> i64 {
        self.slot_secs
    }

    /// How many users it covers.
    pub fn users(&self) -> usize {
        self.secrets.len()
    }

    /// Computes the slots in `slots` it does not hold yet.
    pub fn ensure(&mut self, slots: std::ops::RangeInclusive<i64>) {
        for slot in slots {
            if !self.slots.insert(slot) {
                continue;
            }
            for (user, secret) in &self.secrets {
                let id = identifier(secret, slot);
                if let Some(prev) = self.by_id.insert(id, (*user, slot)) {
                    // 2^-122 per pair; should it ever happen, nobody gets it.
                    if prev != (*user, slot) {
                        self.ambiguous.insert(id);
                    }
                }
            }
        }
    }

    /// Drops the slots before `slot` (memory stays bounded).
    pub fn evict_before(&mut self, slot: i64) {
        let old: Vec<i64> = self.slots.range(..slot).copied().collect();
        if old.is_empty() {
            return;
        }
        self.by_id.retain(|_, (_, s)| *s >= slot);
        for s in old {
            self.slots.remove(&s);
        }
    }

    /// Whether it holds the slots a sighting in `seen_slot` is checked against.
    pub fn covers(&self, seen_slot: i64) -> bool {
        (seen_slot - DRIFT_SLOTS..=seen_slot + DRIFT_SLOTS).all(|s| self.slots.contains(&s))
    }

    /// Whose `id` is, for a sighting in `seen_slot`: one hash lookup.
    pub fn resolve(&self, id: &Uuid, seen_slot: i64) -> Rotation {
        match self.by_id.get(id) {
            Some(_) if self.ambiguous.contains(id) => Rotation::Unknown,
            Some((user, slot)) if (slot - seen_slot).abs() <= DRIFT_SLOTS => Rotation::Valid(*user),
            Some(_) => Rotation::Replayed,
            None => Rotation::Unknown,
        }
    }
}

/// Published test vectors: (secret in hex, slot, identifier). `docs/identity.md`
/// lists the same; a unit test checks both against [`identifier`].
pub const TEST_VECTORS: &[(&str, i64, &str)] = &[
    ("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 0, "ab712af6-edd3-43b0-9e62-ff0cf18d9e7b"),
    ("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 1, "812c38e2-a9ae-44f4-bcbc-5d5a81c9a8c8"),
    (
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        2_966_400,
        "e4638377-4253-42f2-b048-fe793115a04a",
    ),
    (
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        2_966_400,
        "673ff711-e173-4ca3-87b6-57cab0531541",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_test_vectors_hold() {
        for (secret, slot, want) in TEST_VECTORS {
            let got = identifier(&parse_secret(secret).unwrap(), *slot);
            assert_eq!(got.to_string(), *want, "secret {secret}, slot {slot}");
        }
        let doc = include_str!("../../docs/identity.md");
        for (secret, slot, want) in TEST_VECTORS {
            assert!(doc.contains(secret) && doc.contains(&slot.to_string()) && doc.contains(want), "docs lack {want}");
        }
    }

    #[test]
    fn identifiers_look_like_v4_uuids_and_change_every_slot() {
        let s = new_secret();
        let (a, b) = (identifier(&s, 100), identifier(&s, 101));
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 4);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(identifier(&s, 100), a, "a function of secret and slot");
        assert_eq!(slot_of(1_779_840_000, 600), 2_966_400);
        assert_eq!(slot_of(-1, 600), -1);
    }

    #[test]
    fn a_copied_identifier_counts_only_near_its_slot() {
        let (ada, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let (sa, sb) = (new_secret(), new_secret());
        let mut t = RotatingTable::new(vec![(ada, sa), (bob, sb)], 600);
        t.ensure(95..=106);
        let id = identifier(&sa, 100);
        assert_eq!(t.resolve(&id, 100), Rotation::Valid(ada));
        assert_eq!(t.resolve(&id, 99), Rotation::Valid(ada), "the phone's clock a little ahead");
        assert_eq!(t.resolve(&id, 101), Rotation::Valid(ada), "or behind");
        assert_eq!(t.resolve(&id, 102), Rotation::Replayed, "copied and played two slots later");
        assert_eq!(t.resolve(&identifier(&sb, 105), 105), Rotation::Valid(bob));
        assert_eq!(t.resolve(&Uuid::from_u128(3), 100), Rotation::Unknown);
        assert!(t.covers(100) && !t.covers(106));
        t.evict_before(102);
        assert_eq!(t.resolve(&id, 102), Rotation::Unknown, "evicted slots are forgotten");
        assert!(!t.covers(102) && t.covers(103));
    }

    #[test]
    fn many_users_over_many_slots_never_collide() {
        // 2,000 users over 432 slots (3 days of 10 min): 864,000 identifiers.
        // For 100,000 users over 30 days (432 million identifiers) the chance
        // of any collision is about n^2 / 2^123 = 1.8e-20; see docs/identity.md.
        let users: Vec<(Uuid, Secret)> = (0..2_000u128).map(|i| (Uuid::from_u128(i), new_secret())).collect();
        let mut t = RotatingTable::new(users, 600);
        t.ensure(0..=431);
        assert_eq!(t.by_id.len(), 2_000 * 432);
        assert!(t.ambiguous.is_empty());
    }
}
