//! Attendance rules 1–4 of DESIGN.md: which sightings count, and how the
//! counted ones become a check-in, stays and dwell.
//!
//! [`Attendance`] is a pure function of the *set* of counted sightings of one
//! user at one event: folding sightings in any order, in any grouping, with
//! any repeats, gives the same value. That is what lets scanners upload late
//! and out of order, and what lets the store derive attendance again from the
//! raw log when a policy changes.
//!
//! - A sighting counts when its RSSI is at least `minRssi` (a sighting with
//!   no RSSI, such as a manual check-in, passes) and its time lies within
//!   `[startsAt − grace, endsAt + grace]`. The event's times are never moved.
//! - The earliest counted sighting is the check-in; there is one per user and
//!   event, ever.
//! - Counted sightings less than `departureGap` apart belong to one stay; a
//!   longer gap opens a new stay. Dwell is the sum of the stays' lengths.
//! - The same sighting — (scanner, seenAt) for this user — counts once.
//!   [`Attendance::fold`] recognises repeats by a set it keeps while folding;
//!   a stored row keeps only each scanner's latest counted `seenAt` (its
//!   mark), and ingest decides whether a sighting at or before a mark is a
//!   repeat (see `domain::ingest`), so a row does not grow with its sightings.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{AttendancePolicy, EventWindow};

/// One time a scanner heard a user's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    /// The API key (scanner) that reported it; manual check-ins use the nil id.
    pub scanner: Uuid,
    pub seen_at: DateTime<Utc>,
    /// Signal strength in dBm, if the scanner measured it.
    pub rssi: Option<i32>,
}

/// Why a sighting does or does not count for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Counted,
    BelowRssi,
    OutsideEvent,
}

/// Rule 1: whether `s` counts for an event with this window and policy.
pub fn classify(policy: &AttendancePolicy, window: &EventWindow, s: &Sighting) -> Verdict {
    if s.rssi.is_some_and(|r| r < policy.min_rssi) {
        return Verdict::BelowRssi;
    }
    let (opens, closes) = window.with_grace(policy.grace);
    if s.seen_at < opens || s.seen_at > closes {
        return Verdict::OutsideEvent;
    }
    Verdict::Counted
}

/// A period of continuous presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stay {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// What the counted sightings of one user at one event add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendance {
    /// The check-in: the earliest counted sighting.
    pub first_seen: DateTime<Utc>,
    /// The scanner of the check-in sighting (the smallest id on a tie).
    pub first_scanner: Uuid,
    pub last_seen: DateTime<Utc>,
    /// Sorted, disjoint, each gap between them at least `departureGap`.
    pub stays: Vec<Stay>,
    /// How many distinct sightings counted.
    pub sightings: u64,
    /// The strongest RSSI among them, if any had one.
    pub best_rssi: Option<i32>,
    /// Per scanner, the latest `seenAt` counted: a later sighting from that
    /// scanner is certainly new. Sorted by scanner.
    pub marks: Vec<Mark>,
}

/// A scanner's latest counted sighting of one user at one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub scanner: Uuid,
    pub at: DateTime<Utc>,
}

impl Attendance {
    /// The attendance of a single counted sighting.
    pub fn first(s: &Sighting) -> Self {
        Self {
            first_seen: s.seen_at,
            first_scanner: s.scanner,
            last_seen: s.seen_at,
            stays: vec![Stay { from: s.seen_at, to: s.seen_at }],
            sightings: 1,
            best_rssi: s.rssi,
            marks: vec![Mark { scanner: s.scanner, at: s.seen_at }],
        }
    }

    /// Whether `s` comes after everything its scanner had counted here, and
    /// so is certainly not a repeat.
    pub fn above_mark(&self, s: &Sighting) -> bool {
        match self.marks.binary_search_by_key(&s.scanner, |m| m.scanner) {
            Ok(i) => s.seen_at > self.marks[i].at,
            Err(_) => true,
        }
    }

    /// Folds one counted sighting in; `new` says whether it was counted
    /// before (see the module doc). A repeat keeps only a stronger RSSI
    /// reported for it (so the best RSSI, too, does not depend on arrival
    /// order).
    pub fn absorb(&mut self, s: &Sighting, departure_gap: Duration, new: bool) {
        self.best_rssi = match (self.best_rssi, s.rssi) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if !new {
            return;
        }
        match self.marks.binary_search_by_key(&s.scanner, |m| m.scanner) {
            Ok(i) => self.marks[i].at = self.marks[i].at.max(s.seen_at),
            Err(i) => self.marks.insert(i, Mark { scanner: s.scanner, at: s.seen_at }),
        }
        self.sightings += 1;
        if s.seen_at < self.first_seen || (s.seen_at == self.first_seen && s.scanner < self.first_scanner) {
            self.first_seen = s.seen_at;
            self.first_scanner = s.scanner;
        }
        self.last_seen = self.last_seen.max(s.seen_at);
        self.stays = insert_point(std::mem::take(&mut self.stays), s.seen_at, departure_gap);
    }

    /// Total time present: the sum of the stays' lengths.
    pub fn dwell(&self) -> Duration {
        self.stays.iter().map(|s| s.to - s.from).fold(Duration::zero(), |a, b| a + b)
    }

    /// Whether the user counts as present at `now`: last seen less than
    /// `departureGap` ago.
    pub fn present_at(&self, now: DateTime<Utc>, departure_gap: Duration) -> bool {
        self.last_seen <= now && now - self.last_seen < departure_gap
    }

    /// Folds a set of sightings from nothing; `None` if none counted.
    pub fn fold<'a>(
        policy: &AttendancePolicy,
        window: &EventWindow,
        sightings: impl IntoIterator<Item = &'a Sighting>,
    ) -> Option<Self> {
        let mut acc: Option<Self> = None;
        let mut seen = std::collections::HashSet::new();
        for s in sightings {
            if classify(policy, window, s) != Verdict::Counted {
                continue;
            }
            let new = seen.insert((s.scanner, s.seen_at.timestamp_millis()));
            match &mut acc {
                None => acc = Some(Self::first(s)),
                Some(a) => a.absorb(s, policy.departure_gap, new),
            }
        }
        acc
    }
}

/// Adds a point to sorted, gap-separated stays, merging every stay that lies
/// less than `gap` from it.
fn insert_point(stays: Vec<Stay>, t: DateTime<Utc>, gap: Duration) -> Vec<Stay> {
    let mut merged = Stay { from: t, to: t };
    let mut out = Vec::with_capacity(stays.len() + 1);
    let mut placed = false;
    for stay in stays {
        let joins = merged.from - stay.to < gap && stay.from - merged.to < gap;
        if joins {
            merged = Stay { from: merged.from.min(stay.from), to: merged.to.max(stay.to) };
        } else if stay.to < merged.from {
            out.push(stay);
        } else {
            if !placed {
                out.push(merged);
                placed = true;
            }
            out.push(stay);
        }
    }
    if !placed {
        out.push(merged);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::days(20_000) + Duration::minutes(min)
    }

    fn window() -> EventWindow {
        EventWindow::new(t(0), t(120)).unwrap()
    }

    fn s(min: i64, rssi: i32) -> Sighting {
        Sighting { scanner: Uuid::from_u128(1), seen_at: t(min), rssi: Some(rssi) }
    }

    #[test]
    fn rssi_and_window_with_grace() {
        let p = AttendancePolicy::default();
        let w = window();
        assert_eq!(classify(&p, &w, &s(10, -60)), Verdict::Counted);
        assert_eq!(classify(&p, &w, &s(10, -91)), Verdict::BelowRssi);
        assert_eq!(classify(&p, &w, &s(10, -90)), Verdict::Counted, "minRssi itself counts");
        assert_eq!(classify(&p, &w, &s(-15, -60)), Verdict::Counted, "within grace before");
        assert_eq!(classify(&p, &w, &s(-16, -60)), Verdict::OutsideEvent);
        assert_eq!(classify(&p, &w, &s(135, -60)), Verdict::Counted, "within grace after");
        assert_eq!(classify(&p, &w, &s(136, -60)), Verdict::OutsideEvent);
        let manual = Sighting { rssi: None, ..s(10, 0) };
        assert_eq!(classify(&p, &w, &manual), Verdict::Counted, "no RSSI passes the filter");
    }

    #[test]
    fn stays_split_on_the_departure_gap_and_dwell_adds_up() {
        let p = AttendancePolicy::default(); // gap 5 min
        let all = [s(0, -60), s(4, -70), s(8, -50), s(13, -60), s(30, -60), s(31, -60)];
        let a = Attendance::fold(&p, &window(), &all).unwrap();
        assert_eq!(
            a.stays,
            vec![Stay { from: t(0), to: t(8) }, Stay { from: t(13), to: t(13) }, Stay { from: t(30), to: t(31) }]
        );
        assert_eq!(a.dwell(), Duration::minutes(9));
        assert_eq!(a.first_seen, t(0));
        assert_eq!(a.last_seen, t(31));
        assert_eq!(a.sightings, 6);
        assert_eq!(a.best_rssi, Some(-50));
    }

    #[test]
    fn a_late_sighting_bridges_two_stays() {
        let p = AttendancePolicy::default();
        let mut a = Attendance::fold(&p, &window(), &[s(0, -60), s(8, -60)]).unwrap();
        assert_eq!(a.stays.len(), 2);
        a.absorb(&s(4, -60), p.departure_gap, true);
        assert_eq!(a.stays, vec![Stay { from: t(0), to: t(8) }]);
    }

    #[test]
    fn the_same_sighting_counts_once_but_another_scanner_counts_again() {
        let p = AttendancePolicy::default();
        let other = Sighting { scanner: Uuid::from_u128(2), ..s(10, -60) };
        let a = Attendance::fold(&p, &window(), &[s(10, -60), s(10, -50), other]).unwrap();
        assert_eq!(a.sightings, 2);
        assert_eq!(a.best_rssi, Some(-50), "a repeat still reports its RSSI");
    }

    #[test]
    fn marks_tell_what_is_certainly_new() {
        let p = AttendancePolicy::default();
        let a = Attendance::fold(&p, &window(), &[s(10, -60), s(5, -60)]).unwrap();
        assert_eq!(a.marks, vec![Mark { scanner: Uuid::from_u128(1), at: t(10) }]);
        assert!(a.above_mark(&s(11, -60)));
        assert!(!a.above_mark(&s(10, -60)) && !a.above_mark(&s(7, -60)));
        assert!(a.above_mark(&Sighting { scanner: Uuid::from_u128(9), ..s(1, -60) }), "another scanner");
    }

    /// A row keeps no list that grows with its sightings (issue 9's row
    /// growth): absorbed one at a time, as batches arrive, 10 or 5,000
    /// sightings of one four-minute stay from two scanners leave one stay
    /// and two marks.
    #[test]
    fn a_rows_size_does_not_grow_with_its_sightings() {
        let p = AttendancePolicy::default();
        let shape = |n: i64| {
            let nth = |i: i64| Sighting {
                scanner: Uuid::from_u128(1 + (i % 2) as u128),
                seen_at: t(0) + Duration::milliseconds(i * 240_000 / n),
                rssi: Some(-60),
            };
            let mut a = Attendance::first(&nth(0));
            for i in 1..n {
                a.absorb(&nth(i), p.departure_gap, true);
            }
            (a.sightings, a.stays.len(), a.marks.len())
        };
        assert_eq!(shape(10), (10, 1, 2));
        assert_eq!(shape(5_000), (5_000, 1, 2));
    }

    #[test]
    fn nothing_counted_means_no_attendance() {
        let p = AttendancePolicy::default();
        assert!(Attendance::fold(&p, &window(), &[s(10, -100), s(500, -40)]).is_none());
    }

    #[test]
    fn presence_lasts_one_departure_gap() {
        let a = Attendance::first(&s(10, -60));
        let gap = Duration::minutes(5);
        assert!(a.present_at(t(14), gap));
        assert!(!a.present_at(t(15), gap));
    }

    fn arb_sighting() -> impl Strategy<Value = Sighting> {
        (0u128..3, -30i64..160, -100i32..-30).prop_map(|(scanner, min, rssi)| Sighting {
            scanner: Uuid::from_u128(scanner),
            seen_at: t(0) + Duration::seconds(min * 37),
            rssi: Some(rssi),
        })
    }

    proptest! {
        /// Rule 4: any order, any split into batches, any repeats: the same result.
        #[test]
        fn order_grouping_and_repeats_do_not_matter(
            sightings in proptest::collection::vec(arb_sighting(), 1..60),
            seed in any::<u64>(),
            cuts in proptest::collection::vec(0usize..60, 0..6),
            repeat in 0usize..60,
        ) {
            let p = AttendancePolicy { departure_gap: Duration::minutes(3), ..Default::default() };
            let w = window();
            let reference = Attendance::fold(&p, &w, &sightings);

            // A permutation, split into batches at `cuts`, one batch sent twice.
            let mut shuffled = sightings.clone();
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c % (shuffled.len() + 1)).collect();
            bounds.push(0);
            bounds.push(shuffled.len());
            bounds.sort_unstable();
            let batches: Vec<&[Sighting]> = bounds.windows(2).map(|b| &shuffled[b[0]..b[1]]).collect();
            let again = batches[repeat % batches.len()];

            let mut acc: Option<Attendance> = None;
            let mut seen = std::collections::HashSet::new();
            for batch in batches.iter().copied().chain(std::iter::once(again)) {
                for s in batch {
                    if classify(&p, &w, s) != Verdict::Counted { continue; }
                    let new = seen.insert((s.scanner, s.seen_at));
                    match &mut acc {
                        None => acc = Some(Attendance::first(s)),
                        Some(a) => a.absorb(s, p.departure_gap, new),
                    }
                }
            }
            prop_assert_eq!(acc, reference);
        }

        /// Many users: any order and batching, with a batch repeated, gives the
        /// same attendance per user and the same number of check-ins.
        #[test]
        fn many_users_same_attendance_and_check_ins(
            sightings in proptest::collection::vec((0u8..6, arb_sighting()), 1..80),
            seed in any::<u64>(),
            batch_len in 1usize..20,
        ) {
            use std::collections::BTreeMap;
            let p = AttendancePolicy::default();
            let w = window();
            let fold_batches = |batches: &[Vec<(u8, Sighting)>]| {
                let mut per_user: BTreeMap<u8, Attendance> = BTreeMap::new();
                let mut check_ins = 0;
                let mut seen = std::collections::HashSet::new();
                for batch in batches {
                    for (user, s) in batch {
                        if classify(&p, &w, s) != Verdict::Counted { continue; }
                        let new = seen.insert((*user, s.scanner, s.seen_at));
                        match per_user.get_mut(user) {
                            Some(a) => a.absorb(s, p.departure_gap, new),
                            None => { per_user.insert(*user, Attendance::first(s)); check_ins += 1; }
                        }
                    }
                }
                (per_user, check_ins)
            };
            let in_order = fold_batches(std::slice::from_ref(&sightings));
            let mut shuffled = sightings.clone();
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut batches: Vec<Vec<(u8, Sighting)>> = shuffled.chunks(batch_len).map(<[_]>::to_vec).collect();
            let again = batches[(seed as usize) % batches.len()].clone();
            batches.push(again);
            prop_assert_eq!(fold_batches(&batches), in_order);
        }

        /// Stays stay sorted, disjoint and separated by at least the gap.
        #[test]
        fn stays_are_well_formed(sightings in proptest::collection::vec(arb_sighting(), 1..60)) {
            let p = AttendancePolicy { departure_gap: Duration::minutes(3), ..Default::default() };
            if let Some(a) = Attendance::fold(&p, &window(), &sightings) {
                for pair in a.stays.windows(2) {
                    prop_assert!(pair[1].from - pair[0].to >= p.departure_gap);
                }
                prop_assert_eq!(a.stays[0].from, a.first_seen);
                prop_assert_eq!(a.stays[a.stays.len() - 1].to, a.last_seen);
                prop_assert!(a.marks.windows(2).all(|m| m[0].scanner < m[1].scanner));
            }
        }
    }
}
