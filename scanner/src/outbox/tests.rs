//! The outbox's own tests: batches, splitting, migration, rebasing, parking.

use super::*;

fn s(i: i64) -> Sighting {
    Sighting { identifier: format!("id-{i}"), seen_at_ms: i, rssi: Some(-60), event_id: None }
}

#[test]
fn sealed_batch_is_fixed_until_acked_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path()).unwrap();
    ob.append(&(0..5).map(s).collect::<Vec<_>>()).unwrap();
    let first = ob.next_batch(3).unwrap().unwrap();
    assert_eq!(first.sightings, (0..3).map(s).collect::<Vec<_>>());
    ob.append(&[s(9)]).unwrap();
    drop(ob);

    let mut ob = Outbox::open(dir.path()).unwrap();
    let again = ob.next_batch(3).unwrap().unwrap();
    assert_eq!(again.batch_id, first.batch_id, "same id after a restart");
    assert_eq!(again.sightings, first.sightings);
    assert_eq!(ob.depth().unwrap(), 6);
    assert!(ob.ack(first.batch_id, 1, false, None).unwrap());
    assert!(!ob.ack(first.batch_id, 1, false, None).unwrap(), "a second ack is a no-op");
    let second = ob.next_batch(3).unwrap().unwrap();
    assert_ne!(second.batch_id, first.batch_id);
    assert_eq!(second.sightings, vec![s(3), s(4), s(9)]);
    ob.ack(second.batch_id, 0, true, None).unwrap();
    assert!(ob.next_batch(3).unwrap().is_none());
    let st = ob.stats().unwrap();
    assert_eq!(
        (st.depth, st.batches_acked, st.sightings_acked, st.sightings_rejected, st.batches_replayed),
        (0, 2, 6, 1, 1)
    );
    assert_eq!(st.last_batch_id, Some(second.batch_id.to_string()));
}

#[test]
fn a_split_batch_goes_out_as_two_under_new_ids_first_half_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path()).unwrap();
    ob.append(&(0..5).map(s).collect::<Vec<_>>()).unwrap();
    let big = ob.next_batch(5).unwrap().unwrap();
    assert_eq!(ob.note_attempt(big.batch_id).unwrap().0, 1);
    ob.append(&[s(9)]).unwrap();
    let (a, b) = ob.split(big.batch_id).unwrap().unwrap();
    let first = ob.next_batch(5).unwrap().unwrap();
    assert_eq!((first.batch_id, &first.sightings[..], first.attempts), (a, &(0..2).map(s).collect::<Vec<_>>()[..], 0));
    ob.ack(a, 0, false, None).unwrap();
    let second = ob.next_batch(5).unwrap().unwrap();
    assert_eq!((second.batch_id, second.sightings), (b, (2..5).map(s).collect::<Vec<_>>()));
    ob.ack(b, 0, false, None).unwrap();
    let last = ob.next_batch(5).unwrap().unwrap();
    assert_eq!(last.sightings, vec![s(9)]);
    assert_eq!(ob.split(last.batch_id).unwrap(), None, "one sighting cannot be split");
}

#[test]
fn an_older_outbox_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = Connection::open(dir.path().join(OUTBOX_FILE)).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute("INSERT INTO sighting (identifier, seen_at_ms) VALUES ('old', 1)", []).unwrap();
    }
    let mut ob = Outbox::open(dir.path()).unwrap();
    let b = ob.next_batch(10).unwrap().unwrap();
    assert_eq!(b.sightings[0].identifier, "old");
    assert_eq!(ob.note_attempt(b.batch_id).unwrap().0, 1);
    drop(ob);

    // A batch an older scanner sealed may have been sent: it is never rebased.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut conn = Connection::open(dir.path().join(OUTBOX_FILE)).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(
            "ALTER TABLE batch ADD COLUMN first_failed_ms INTEGER; ALTER TABLE sighting ADD COLUMN boot_id TEXT;
             ALTER TABLE sighting ADD COLUMN mono_ms INTEGER; PRAGMA user_version = 2;
             INSERT INTO batch (batch_id, sealed_at_ms) VALUES ('00000000-0000-4000-8000-000000000001', 5);
             INSERT INTO sighting (identifier, seen_at_ms, batch, boot_id, mono_ms) VALUES ('v2', 1, 1, 'b1', 1);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
    }
    let mut ob = Outbox::open(dir.path()).unwrap();
    assert!(ob.next_batch(10).unwrap().unwrap().sent);
    assert_eq!(ob.rebase("b1", 1_000_000, 1, 10).unwrap().kept_sent, 1);
}

#[test]
fn processes_opening_a_new_outbox_at_once_all_succeed() {
    // `rollcall-scanner status` next to a starting `run`: both create and
    // migrate the same new file. Neither may see the other's half-done migration.
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let opened: Vec<_> = (0..4)
            .map(|_| {
                let path = dir.path().to_owned();
                std::thread::spawn(move || Outbox::open(&path).map(drop).map_err(|e| e.to_string()))
            })
            .collect();
        for t in opened {
            t.join().unwrap().unwrap();
        }
    }
}

#[test]
fn rebase_mends_pending_sightings_of_this_boot_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path()).unwrap();
    // Heard in 2020 by a wrong clock, at monotonic 10 s and 11 s after boot.
    let wrong = 1_577_836_800_000;
    let stamp = Stamp { boot_id: "b1".into(), mono_ms: 11_000, wall_ms: wrong + 1_000 };
    ob.append_stamped(
        &[s(0), s(0)].map(|mut x| {
            x.seen_at_ms = wrong;
            x
        }),
        Some(&stamp),
    )
    .unwrap();
    ob.append_stamped(&[s(5)], Some(&Stamp { boot_id: "b0".into(), mono_ms: 1, wall_ms: 5 })).unwrap();
    ob.append(&[s(7)]).unwrap();
    // The server says that at monotonic 20 s it was 2030-01-01.
    let truth = 1_893_456_000_000;
    let done = ob.rebase("b1", truth, 20_000, 1_000).unwrap();
    assert_eq!((done.pending, done.sealed, done.other_boots), (2, 0, 1));
    let again = ob.rebase("b1", truth, 20_000, 1_000).unwrap();
    assert_eq!((again.pending, again.other_boots), (0, 1), "once is enough");
    let b = ob.next_batch(10).unwrap().unwrap();
    let times: Vec<i64> = b.sightings.iter().map(|s| s.seen_at_ms).collect();
    assert_eq!(times, vec![truth - 10_000, truth - 10_000, 5, 7]);
}

/// Sightings heard an hour fast in boot `b1`, at monotonic `mono` ms.
fn fast(mono: i64) -> (Sighting, Stamp) {
    let wall = TRUTH + 3_600_000 + mono;
    let heard = Sighting { identifier: format!("m{mono}"), seen_at_ms: wall, rssi: None, event_id: None };
    (heard, Stamp { boot_id: "b1".into(), mono_ms: mono, wall_ms: wall })
}

/// The server's time at monotonic 0 in `fast`'s boot.
const TRUTH: i64 = 1_893_456_000_000;

fn times(b: &Batch) -> Vec<i64> {
    b.sightings.iter().map(|s| s.seen_at_ms - TRUTH).collect()
}

#[test]
fn batches_never_sent_are_rebased_and_batches_sent_are_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path()).unwrap();
    for mono in [10_000, 11_000, 12_000, 13_000] {
        let (heard, stamp) = fast(mono);
        ob.append_stamped(&[heard], Some(&stamp)).unwrap();
    }
    // The first batch went to the network and was refused (parked); the second
    // was sealed and never sent; the rest is pending.
    let sent = ob.next_batch(1).unwrap().unwrap();
    assert!(!sent.sent);
    let sent = ob.begin_send(sent.batch_id).unwrap().unwrap();
    assert!(sent.sent);
    ob.park(sent.batch_id, "VALIDATION: no").unwrap();
    let unsent = ob.next_batch(1).unwrap().unwrap();
    assert!(!unsent.sent);
    assert_eq!(times(&unsent), vec![3_600_000 + 11_000]);

    // The server's time is known: at monotonic 20 s it was TRUTH + 20 s.
    let done = ob.rebase("b1", TRUTH + 20_000, 20_000, 1_000).unwrap();
    let got = (done.pending, done.sealed, done.batches, done.kept_sent, done.other_boots);
    assert_eq!(got, (2, 1, 1, 1, 0));
    assert_eq!(ob.rebase("b1", TRUTH + 20_000, 20_000, 1_000).unwrap(), Rebased { kept_sent: 1, ..Rebased::default() });

    // The batch sent is as it was sent, under its id.
    ob.unpark_all().unwrap();
    let again = ob.next_batch(10).unwrap().unwrap();
    assert_eq!((again.batch_id, &again.sightings, again.sent), (sent.batch_id, &sent.sightings, true));
    ob.ack(sent.batch_id, 0, false, None).unwrap();
    // The one never sent goes out under its id, with the right time: what was
    // read before the rebase is read afresh when it is sent.
    let fixed = ob.begin_send(unsent.batch_id).unwrap().unwrap();
    assert_eq!((fixed.batch_id, times(&fixed)), (unsent.batch_id, vec![11_000]));
    ob.ack(fixed.batch_id, 0, false, None).unwrap();
    assert_eq!(times(&ob.next_batch(10).unwrap().unwrap()), vec![12_000, 13_000]);
}

#[test]
fn a_batch_sent_is_never_rebased() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path()).unwrap();
    for mono in [1_000, 2_000] {
        let (heard, stamp) = fast(mono);
        ob.append_stamped(&[heard], Some(&stamp)).unwrap();
    }
    let attempted = ob.next_batch(1).unwrap().unwrap();
    let attempted = ob.begin_send(attempted.batch_id).unwrap().unwrap();
    // The send failed without an answer: the server may have applied it.
    ob.note_attempt(attempted.batch_id).unwrap();
    let done = ob.rebase("b1", TRUTH + 5_000, 5_000, 1_000).unwrap();
    assert_eq!((done.pending, done.sealed, done.kept_sent), (1, 0, 1));
    let again = ob.next_batch(10).unwrap().unwrap();
    assert_eq!((again.batch_id, &again.sightings, again.sent), (attempted.batch_id, &attempted.sightings, true));
    assert_eq!(times(&again), vec![3_600_000 + 1_000], "untouched");
    // Split after a refusal as too large, the halves were never sent.
    ob.append_stamped(&[fast(3_000).0], Some(&fast(3_000).1)).unwrap();
    ob.ack(attempted.batch_id, 0, false, None).unwrap();
    let two = ob.next_batch(10).unwrap().unwrap();
    let two = ob.begin_send(two.batch_id).unwrap().unwrap();
    let (first, _) = ob.split(two.batch_id).unwrap().unwrap();
    let half = ob.next_batch(10).unwrap().unwrap();
    assert_eq!((half.batch_id, half.sent), (first, false));
}

#[test]
fn parked_batches_are_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path()).unwrap();
    ob.append(&[s(1), s(2)]).unwrap();
    let b = ob.next_batch(10).unwrap().unwrap();
    ob.park(b.batch_id, "VALIDATION: too many").unwrap();
    assert!(ob.next_batch(10).unwrap().is_none());
    let st = ob.stats().unwrap();
    assert_eq!((st.depth, st.dead_batches, st.dead_sightings), (0, 1, 2));
    assert_eq!(st.last_dead_reason.as_deref(), Some("VALIDATION: too many"));
}

#[test]
fn unparked_batches_go_out_again_first_under_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path()).unwrap();
    ob.append(&[s(1), s(2)]).unwrap();
    let dead = ob.next_batch(10).unwrap().unwrap();
    ob.note_attempt(dead.batch_id).unwrap();
    ob.park(dead.batch_id, "VALIDATION: no").unwrap();
    ob.append(&[s(3)]).unwrap();
    let live = ob.next_batch(10).unwrap().unwrap();
    assert_eq!(live.sightings, vec![s(3)]);
    assert_eq!(ob.unpark_all().unwrap(), 1);
    assert_eq!(ob.unpark_all().unwrap(), 0);
    let st = ob.stats().unwrap();
    assert_eq!((st.depth, st.dead_batches, st.sealed_batches), (3, 0, 2));
    assert_eq!(st.last_dead_reason, None);
    let again = ob.next_batch(10).unwrap().unwrap();
    assert_eq!((again.batch_id, &again.sightings, again.attempts), (dead.batch_id, &dead.sightings, 0));
}

#[test]
fn acked_batches_are_kept_and_those_the_store_lost_go_back_out_when_its_epoch_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path()).unwrap().keeping_acked(Duration::from_secs(3600));
    ob.append(&(0..8).map(s).collect::<Vec<_>>()).unwrap();
    let mut acked = Vec::new();
    for _ in 0..3 {
        let b = ob.next_batch(3).unwrap().unwrap();
        ob.ack(b.batch_id, 0, false, Some("e1")).unwrap();
        acked.push(b);
    }
    let st = ob.stats().unwrap();
    assert_eq!((st.depth, st.kept_batches), (0, 3), "kept batches are not waiting");
    assert!(ob.next_batch(3).unwrap().is_none());
    assert_eq!(ob.kept_under_other_epochs("e1", 10).unwrap(), Vec::<Uuid>::new(), "the same epoch: nothing to ask");

    // A new epoch: all three are asked about, oldest first, in pages.
    let ids: Vec<Uuid> = acked.iter().map(|b| b.batch_id).collect();
    assert!(!ob.epoch_settled("e2").unwrap());
    assert_eq!(ob.kept_under_other_epochs("e2", 2).unwrap(), ids[..2]);
    // The store lost the second.
    assert_eq!(ob.settle("e2", &ids[..2], &[ids[1]]).unwrap(), 1);
    assert!(!ob.epoch_settled("e2").unwrap(), "one is still to be asked about");
    assert_eq!(ob.kept_under_other_epochs("e2", 2).unwrap(), ids[2..]);
    assert_eq!(ob.settle("e2", &ids[2..], &[]).unwrap(), 0);
    assert!(ob.epoch_settled("e2").unwrap());
    assert_eq!(ob.kept_under_other_epochs("e2", 10).unwrap(), Vec::<Uuid>::new());

    // Back as it was, flagged, never rebased; the others stay kept.
    let lost = ob.next_batch(3).unwrap().unwrap();
    assert_eq!(
        (lost.batch_id, &lost.sightings, lost.sent, lost.resend),
        (acked[1].batch_id, &acked[1].sightings, true, true)
    );
    assert_eq!(ob.stats().unwrap().kept_batches, 2);
    // Taken again.
    ob.ack(lost.batch_id, 0, false, Some("e2")).unwrap();
    assert!(ob.next_batch(3).unwrap().is_none());
    let st = ob.stats().unwrap();
    assert_eq!(
        (st.batches_acked, st.sightings_acked, st.batches_replayed, st.batches_resent, st.batches_restored),
        (3, 8, 0, 1, 1),
        "sent again, it is not counted as acknowledged twice"
    );
    assert_eq!(st.kept_batches, 3, "kept again, under the new epoch");
    assert!(ob.epoch_settled("e2").unwrap());
}

#[test]
fn kept_batches_go_once_kept_long_enough_and_none_are_kept_unasked_or_without_an_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(dir.path()).unwrap();
    ob.append(&[s(1)]).unwrap();
    let b = ob.next_batch(3).unwrap().unwrap();
    ob.ack(b.batch_id, 0, false, Some("e1")).unwrap();
    assert_eq!(ob.stats().unwrap().kept_batches, 0, "keeping is asked for");

    let mut ob = ob.keeping_acked(Duration::from_secs(60));
    ob.append(&[s(0)]).unwrap();
    let b = ob.next_batch(3).unwrap().unwrap();
    ob.ack(b.batch_id, 0, false, None).unwrap();
    assert_eq!(ob.stats().unwrap().kept_batches, 0, "a server without an epoch never asks for anything again");
    for i in 2..4 {
        ob.append(&[s(i)]).unwrap();
        let b = ob.next_batch(3).unwrap().unwrap();
        ob.ack(b.batch_id, 0, false, Some("e1")).unwrap();
    }
    assert_eq!(ob.stats().unwrap().kept_batches, 2);
    // One of them was acknowledged two minutes ago: the next ack lets it go.
    ob.conn
        .execute(
            "UPDATE kept_batch SET acked_at_ms = acked_at_ms - 120000 WHERE seq = (SELECT min(seq) FROM kept_batch)",
            [],
        )
        .unwrap();
    ob.append(&[s(9)]).unwrap();
    let b = ob.next_batch(3).unwrap().unwrap();
    ob.ack(b.batch_id, 0, false, Some("e1")).unwrap();
    assert_eq!(ob.stats().unwrap().kept_batches, 2);
    let orphans: i64 = ob
        .conn
        .query_row("SELECT COUNT(*) FROM kept_sighting WHERE kept NOT IN (SELECT seq FROM kept_batch)", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(orphans, 0, "their sightings went with them");
    let ids = ob.kept_under_other_epochs("e2", 10).unwrap();
    assert_eq!(ob.settle("e2", &ids, &ids).unwrap(), 2);
    let mut sightings = Vec::new();
    while let Some(b) = ob.next_batch(3).unwrap() {
        ob.ack(b.batch_id, 0, true, Some("e2")).unwrap();
        sightings.extend(b.sightings);
    }
    assert_eq!(sightings, vec![s(3), s(9)]);
}
