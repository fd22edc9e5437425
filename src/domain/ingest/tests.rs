//! [`plan`] and [`Fold`] without a database: rules 4 and 5 of DESIGN.md.

use chrono::Duration;
use proptest::prelude::*;

use super::*;

fn t(min: i64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + Duration::days(20_000) + Duration::minutes(min)
}

fn now() -> DateTime<Utc> {
    t(10_000)
}

/// Two overlapping events, both in scope, one needing registration.
fn events() -> HashMap<Uuid, EventRules> {
    let mk = |id: u128, from: i64, to: i64, require_registration: bool| EventRules {
        id: Uuid::from_u128(id),
        state: EventState::Active,
        window: EventWindow::new(t(from), t(to)).unwrap(),
        policy: AttendancePolicy { require_registration, ..Default::default() },
        in_scope: true,
    };
    [mk(1, 0, 120, true), mk(2, 60, 240, false)].into_iter().map(|e| (e.id, e)).collect()
}

fn users() -> HashMap<String, Uuid> {
    (0..6u128).map(|i| (format!("id-{i}"), Uuid::from_u128(100 + i))).collect()
}

fn registered() -> HashSet<(Uuid, Uuid)> {
    (0..4u128).map(|i| (Uuid::from_u128(100 + i), Uuid::from_u128(1))).collect()
}

/// A store in memory: rows, and the raw log's counted sightings.
#[derive(Default)]
struct Store {
    rows: HashMap<(Uuid, Uuid), Attendance>,
    logged: HashSet<(Uuid, Uuid, Uuid, i64)>,
    check_ins: u64,
    duplicates: u64,
}

impl Store {
    /// Applies batches the way the writer does: plan each, then fold them
    /// together in order, then write.
    fn apply(&mut self, scanner: Uuid, batches: &[Vec<SightingIn>]) {
        let (evs, us, regs) = (events(), users(), registered());
        let plans: Vec<Plan> = batches
            .iter()
            .map(|b| {
                let none = HashMap::new();
                let inputs =
                    PlanInputs { sightings: b, scanner, users: &us, rotating: &none, events: &evs, registered: &regs };
                plan(&inputs, now())
            })
            .collect();
        let below: Vec<_> = plans.iter().flat_map(|p| below_marks(&self.rows, &p.counted)).collect();
        let known = below
            .into_iter()
            .map(|((e, u), s)| (e, u, s.scanner, s.seen_at.timestamp_millis()))
            .filter(|k| self.logged.contains(k))
            .collect();
        let mut fold = Fold::new(self.rows.clone(), known);
        for mut p in plans {
            fold.apply(&p.counted, |e| evs[&e].policy.departure_gap, &mut p.outcome);
            self.check_ins += p.outcome.check_ins;
            self.duplicates += p.outcome.duplicates;
            for (&(e, u), items) in &p.counted {
                self.logged.extend(items.iter().map(|(_, s)| (e, u, s.scanner, s.seen_at.timestamp_millis())));
            }
        }
        let (created, updated) = fold.finish();
        for (pair, row) in created.into_iter().chain(updated) {
            self.rows.insert(pair, row);
        }
    }
}

fn arb_sighting() -> impl Strategy<Value = SightingIn> {
    (0u8..8, -30i64..280, -100i32..-30, 0u8..4).prop_map(|(who, min, rssi, ev)| SightingIn {
        identifier: format!("id-{who}"),
        seen_at: t(0) + Duration::seconds(min * 53),
        rssi: Some(rssi),
        event_id: match ev {
            0 => Some(Uuid::from_u128(1)),
            1 => Some(Uuid::from_u128(2)),
            _ => None,
        },
    })
}

fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut state = seed | 1;
    for i in (1..v.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

proptest! {
    /// Any order, any split into batches, any batches folded together, any
    /// repeats: the same rows, the same number of check-ins, and every
    /// repeated sighting reported as a duplicate.
    #[test]
    fn order_split_grouping_and_repeats_do_not_matter(
        sightings in proptest::collection::vec(arb_sighting(), 1..80),
        seed in any::<u64>(),
        batch_len in 1usize..25,
        group in 1usize..4,
        repeats in proptest::collection::vec(0usize..80, 0..10),
    ) {
        let scanner = Uuid::from_u128(7);
        let mut reference = Store::default();
        reference.apply(scanner, std::slice::from_ref(&sightings));

        let mut shuffled = sightings.clone();
        let extra: Vec<SightingIn> = repeats.iter().map(|i| sightings[i % sightings.len()].clone()).collect();
        shuffled.extend(extra.iter().cloned());
        shuffle(&mut shuffled, seed);
        let batches: Vec<Vec<SightingIn>> = shuffled.chunks(batch_len).map(<[_]>::to_vec).collect();
        let mut split = Store::default();
        for commit in batches.chunks(group) {
            split.apply(scanner, commit);
        }
        prop_assert_eq!(&split.rows, &reference.rows);
        prop_assert_eq!(split.check_ins, reference.check_ins);
        prop_assert_eq!(split.check_ins as usize, split.rows.len());
        // Each extra copy of a sighting that counted is a duplicate, once per
        // event it counted for.
        prop_assert!(split.duplicates >= reference.duplicates);
    }
}

#[test]
fn unassigned_sightings_go_to_every_event_that_covers_them() {
    let (evs, us, regs) = (events(), users(), registered());
    let s = |min: i64| SightingIn { identifier: "id-0".into(), seen_at: t(min), rssi: Some(-60), event_id: None };
    let batch = [s(30), s(90), s(200), s(400)];
    let p = plan(
        &PlanInputs {
            sightings: &batch,
            scanner: Uuid::nil(),
            users: &us,
            rotating: &HashMap::new(),
            events: &evs,
            registered: &regs,
        },
        now(),
    );
    let user = Uuid::from_u128(100);
    let events_of = |i: usize| -> Vec<u128> {
        p.counted.iter().filter(|(_, v)| v.iter().any(|(j, _)| *j == i)).map(|((e, _), _)| e.as_u128()).collect()
    };
    assert_eq!(events_of(0), vec![1]);
    assert_eq!(events_of(1), vec![1, 2], "both events cover minute 90");
    assert_eq!(events_of(2), vec![2]);
    assert!(events_of(3).is_empty());
    assert_eq!(p.outcome.outside_event, 1);
    assert_eq!(p.walk_ins, vec![(user, Uuid::from_u128(2))], "event 2 takes walk-ins");
    assert_eq!(p.raw.len(), 4, "the raw log keeps every resolved sighting");
    assert!(p.raw.iter().all(|r| r.assignment == Assignment::Implicit && r.identifier == "id-0"));
}

#[test]
fn a_repeat_below_the_mark_is_a_duplicate_only_if_logged() {
    let scanner = Uuid::from_u128(7);
    let s = |min: i64| SightingIn { identifier: "id-0".into(), seen_at: t(min), rssi: Some(-60), event_id: None };
    let mut store = Store::default();
    store.apply(scanner, &[vec![s(10), s(20)]]);
    // Late and out of order: below the mark, not logged: new.
    store.apply(scanner, &[vec![s(15)]]);
    assert_eq!(store.duplicates, 0);
    // The same again: a duplicate.
    store.apply(scanner, &[vec![s(15)], vec![s(20)]]);
    assert_eq!(store.duplicates, 2);
    let row = &store.rows[&(Uuid::from_u128(1), Uuid::from_u128(100))];
    assert_eq!(row.sightings, 3);
    assert_eq!(store.check_ins, 1);
}
