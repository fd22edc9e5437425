//! The raw sighting log's codec: one batch's sightings
//! ([`RawSighting`]: identifier heard, user, `seenAt`, RSSI, assignment to
//! events), as heard, in one value.
//!
//! **Format.** A version byte, then MessagePack (`rmp-serde`, tuples as
//! arrays) of [`Packed`]: the batch's distinct identifiers and events once
//! each, and per sighting indices into them. There is no limit on the number
//! of events (indices are `u32`).
//!
//! A batch row says which version its bytes are in (`log_format`; absent on
//! version-1 rows). Version 1 (rows written before this module) packed, per sighting: user
//! UUID (16 bytes), `seenAt` in Unix ms (i64 BE), RSSI (i16 BE, `i16::MIN`
//! for none), a count byte and that many one-byte indices into the row's
//! `events` list: the events it was offered to then. It did not keep the
//! identifier; such sightings decode with an empty identifier and
//! [`Assignment::Offered`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StoreError;
pub use crate::domain::ingest::{Assignment, RawSighting};

/// The current format's version byte.
const VERSION: u8 = 2;

/// The encoded form: each identifier and event once, then the sightings.
#[derive(Serialize, Deserialize)]
struct Packed {
    /// (identifier, user) pairs.
    identifiers: Vec<(String, Uuid)>,
    events: Vec<Uuid>,
    sightings: Vec<PackedSighting>,
    /// The indices of the identifiers that were rotating ones (absent in
    /// rows written before rotating identifiers: none).
    #[serde(default)]
    rotating: Vec<u32>,
}

/// (identifier index, `seenAt` in Unix ms, RSSI, assignment).
type PackedSighting = (u32, i64, Option<i16>, PackedAssignment);

#[derive(Serialize, Deserialize)]
enum PackedAssignment {
    Explicit(u32),
    Implicit,
    Offered(Vec<u32>),
}

/// Interns values, handing out their index.
struct Interner<T> {
    values: Vec<T>,
    index: std::collections::HashMap<T, u32>,
}

impl<T: Clone + Eq + std::hash::Hash> Interner<T> {
    fn new() -> Self {
        Self { values: Vec::new(), index: std::collections::HashMap::new() }
    }

    fn intern(&mut self, v: &T) -> Result<u32, StoreError> {
        if let Some(i) = self.index.get(v) {
            return Ok(*i);
        }
        let i = u32::try_from(self.values.len()).map_err(|_| StoreError::Corrupt("a batch too large to log".into()))?;
        self.values.push(v.clone());
        self.index.insert(v.clone(), i);
        Ok(i)
    }
}

/// Encodes sightings in the current format.
pub fn encode(sightings: &[RawSighting]) -> Result<Vec<u8>, StoreError> {
    let mut identifiers = Interner::new();
    let mut events = Interner::new();
    let mut packed = Vec::with_capacity(sightings.len());
    let mut rotating = std::collections::BTreeSet::new();
    for s in sightings {
        let ident = identifiers.intern(&(s.identifier.clone(), s.user))?;
        if s.rotating {
            rotating.insert(ident);
        }
        let rssi = s.rssi.map(|r| r.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16);
        let assignment = match &s.assignment {
            Assignment::Explicit(e) => PackedAssignment::Explicit(events.intern(e)?),
            Assignment::Implicit => PackedAssignment::Implicit,
            Assignment::Offered(es) => {
                PackedAssignment::Offered(es.iter().map(|e| events.intern(e)).collect::<Result<_, _>>()?)
            }
        };
        packed.push((ident, s.seen_at.timestamp_millis(), rssi, assignment));
    }
    let value = Packed {
        identifiers: identifiers.values,
        events: events.values,
        sightings: packed,
        rotating: rotating.into_iter().collect(),
    };
    let mut out = vec![VERSION];
    rmp_serde::encode::write(&mut out, &value).map_err(|e| StoreError::Corrupt(format!("raw log: {e}")))?;
    Ok(out)
}

/// Decodes what [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Result<Vec<RawSighting>, StoreError> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => decode_v2(rest),
        Some((v, _)) => Err(StoreError::Corrupt(format!("raw log: unknown format version {v}"))),
        None => Err(StoreError::Corrupt("raw log: empty".into())),
    }
}

fn decode_v2(bytes: &[u8]) -> Result<Vec<RawSighting>, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("raw log: {what}"));
    let p: Packed = rmp_serde::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
    let event = |i: u32| p.events.get(i as usize).copied().ok_or_else(|| bad("an event index is out of range"));
    p.sightings
        .iter()
        .map(|(ident, ms, rssi, assignment)| {
            let (identifier, user) = p
                .identifiers
                .get(*ident as usize)
                .cloned()
                .ok_or_else(|| bad("an identifier index is out of range"))?;
            Ok(RawSighting {
                identifier,
                user,
                seen_at: DateTime::<Utc>::from_timestamp_millis(*ms).ok_or_else(|| bad("a time is out of range"))?,
                rssi: rssi.map(i32::from),
                rotating: p.rotating.contains(ident),
                assignment: match assignment {
                    PackedAssignment::Explicit(i) => Assignment::Explicit(event(i.to_owned())?),
                    PackedAssignment::Implicit => Assignment::Implicit,
                    PackedAssignment::Offered(is) => {
                        Assignment::Offered(is.iter().map(|i| event(*i)).collect::<Result<_, _>>()?)
                    }
                },
            })
        })
        .collect()
}

/// Decodes a version-1 row's bytes, given the row's `events` list. (A row
/// tells its version by a field, not by sniffing: a version-1 row starts with
/// a random UUID byte.)
pub fn decode_v1(bytes: &[u8], events: &[Uuid]) -> Result<Vec<RawSighting>, StoreError> {
    let bad = || StoreError::Corrupt("a batch's packed sightings are truncated".into());
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at_checked(27).ok_or_else(bad)?;
        let user = Uuid::from_slice(&head[..16]).map_err(|_| bad())?;
        let ms = i64::from_be_bytes(head[16..24].try_into().map_err(|_| bad())?);
        let rssi = i16::from_be_bytes(head[24..26].try_into().map_err(|_| bad())?);
        let n = usize::from(head[26]);
        let (idx, tail) = tail.split_at_checked(n).ok_or_else(bad)?;
        let offered =
            idx.iter().map(|i| events.get(usize::from(*i)).copied().ok_or_else(bad)).collect::<Result<_, _>>()?;
        out.push(RawSighting {
            identifier: String::new(),
            user,
            seen_at: DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(bad)?,
            rssi: (rssi != i16::MIN).then_some(i32::from(rssi)),
            assignment: Assignment::Offered(offered),
            rotating: false,
        });
        rest = tail;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn assignment(events: Vec<Uuid>) -> impl Strategy<Value = Assignment> {
        let pick = events.clone();
        prop_oneof![
            Just(Assignment::Implicit),
            (0..pick.len()).prop_map(move |i| Assignment::Explicit(pick[i])),
            proptest::sample::subsequence(events.clone(), 0..events.len()).prop_map(Assignment::Offered),
        ]
    }

    fn sightings() -> impl Strategy<Value = Vec<RawSighting>> {
        // A pool of up to 300 events: more than the 255 version 1 could index.
        (1usize..300, 1usize..20).prop_flat_map(|(n_events, n_users)| {
            let events: Vec<Uuid> = (0..n_events).map(|i| Uuid::from_u128(i as u128 + 1)).collect();
            let users: Vec<(String, Uuid)> =
                (0..n_users).map(|i| (format!("id-{i}"), Uuid::from_u128(1000 + i as u128))).collect();
            proptest::collection::vec(
                (
                    proptest::sample::select(users),
                    0i64..4_000_000_000_000,
                    proptest::option::of(-127i32..=20),
                    assignment(events.clone()),
                ),
                0..200,
            )
            .prop_map(|v| {
                v.into_iter()
                    .map(|((identifier, user), ms, rssi, assignment)| RawSighting {
                        rotating: identifier.ends_with('1'),
                        identifier,
                        user,
                        seen_at: DateTime::<Utc>::from_timestamp_millis(ms).unwrap(),
                        rssi,
                        assignment,
                    })
                    .collect()
            })
        })
    }

    proptest! {
        #[test]
        fn encoding_round_trips(s in sightings()) {
            let bytes = encode(&s).unwrap();
            prop_assert_eq!(decode(&bytes).unwrap(), s);
        }

        #[test]
        fn truncation_is_an_error_not_a_panic(s in sightings(), cut in 0usize..64) {
            let bytes = encode(&s).unwrap();
            if cut > 0 && cut < bytes.len() {
                prop_assert!(decode(&bytes[..bytes.len() - cut]).is_err());
            }
        }
    }

    #[test]
    fn version_1_rows_still_decode() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let user = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let t = DateTime::<Utc>::from_timestamp_millis(1_795_000_000_123).unwrap();
        let mut v1 = Vec::new();
        for (rssi, idx) in [(-67i16, vec![0u8]), (i16::MIN, vec![]), (-127, vec![1, 0])] {
            v1.extend_from_slice(user.as_bytes());
            v1.extend_from_slice(&t.timestamp_millis().to_be_bytes());
            v1.extend_from_slice(&rssi.to_be_bytes());
            v1.push(idx.len() as u8);
            v1.extend_from_slice(&idx);
        }
        let got = decode_v1(&v1, &[a, b]).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].assignment, Assignment::Offered(vec![a]));
        assert_eq!(got[1].rssi, None);
        assert_eq!(got[2].assignment, Assignment::Offered(vec![b, a]));
        assert!(got.iter().all(|s| s.user == user && s.seen_at == t && s.identifier.is_empty()));
        assert!(decode_v1(&v1[..v1.len() - 1], &[a, b]).is_err(), "truncation is detected");
    }

    #[test]
    fn rows_written_before_rotating_identifiers_decode_as_static() {
        // Version 2 as written before the `rotating` list existed.
        #[derive(Serialize)]
        struct Before {
            identifiers: Vec<(String, Uuid)>,
            events: Vec<Uuid>,
            sightings: Vec<PackedSighting>,
        }
        let user = Uuid::from_u128(7);
        let before = Before {
            identifiers: vec![("id".into(), user)],
            events: vec![],
            sightings: vec![(0, 1_900_000_000_000, Some(-60), PackedAssignment::Implicit)],
        };
        let mut bytes = vec![VERSION];
        rmp_serde::encode::write(&mut bytes, &before).unwrap();
        let got = decode(&bytes).unwrap();
        assert_eq!(got.len(), 1);
        assert!(!got[0].rotating && got[0].user == user && got[0].identifier == "id");
        // And a rotating sighting round-trips.
        let mut s = got[0].clone();
        s.rotating = true;
        assert_eq!(decode(&encode(std::slice::from_ref(&s)).unwrap()).unwrap(), vec![s]);
    }
}
