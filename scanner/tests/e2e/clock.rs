//! A scanner with no time sync: its clock reads 2020 (no real-time clock, NTP
//! blocked). It starts at once and scans; it seals nothing while the clock is known
//! to be wrong; once the server's time is known it rebases what it heard on it, so
//! the server counts the sightings at the right time. The wrong clock is
//! libfaketime's (preloaded; Debian package `faketime`) in the real binary, which
//! hears phones through the fake BlueZ; the monotonic clock is left alone. A
//! second test runs it half an hour fast (past the build-time floor, so nothing
//! says it is wrong until the server's time is known), with a batch sealed
//! before then; a third steps the clock back an hour while the scanner runs.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::ble::{DbusDaemon, start_fake_bluez};
use crate::helpers::*;

#[tokio::test]
async fn a_clock_stuck_in_2020_is_rebased_on_the_servers_time() {
    let ada = "7e1e0000-0000-4000-8000-000000000001";
    let Door { mut server, event, home, bus, _fake } = door("No NTP", ada, "5C:F3:70:11:22:07", 1).await;
    // The server is out of reach at first: nothing tells the scanner the time.
    server.down();

    let heard_from = rollcall_scanner::sighting::now_ms();
    let mut run = run_ble(&home, &bus, &server, &[("FAKETIME", "@2020-01-01 00:00:00")], &[]);
    let st = eventually(Duration::from_secs(30), "sightings in the outbox", || {
        let st = home.status();
        (st["stats"]["depth"].as_u64().unwrap_or(0) >= 3).then_some(st)
    })
    .await;
    let log = home.log_text("run.log");
    assert!(log.contains("before this build") && log.contains("2020-01-01"), "{log}");
    assert_eq!(st["stats"]["sealedBatches"], 0, "nothing is sealed with a wrong time: {st}");
    assert!(run.running());

    server.up().await;
    let attendance = attendance_until(&server, &event, Duration::from_secs(30), |a| a.contains_key(ada)).await;
    let log = home.log_text("run.log");
    assert!(attendance.contains_key(ada), "{log}");
    assert!(log.contains("s behind the server's (no NTP?): rebased"), "{log}");
    let checked_in = ms(attendance[ada]["checkedInAt"].as_str().unwrap());
    assert!(
        checked_in >= heard_from - 2_000 && checked_in <= rollcall_scanner::sighting::now_ms(),
        "counted at the real time it was heard: {} (scanner started at {})",
        iso(checked_in),
        iso(heard_from)
    );
    // New sightings are stamped with the corrected time as well.
    let before = attendance[ada]["sightings"].as_u64().unwrap();
    let later = attendance_until(&server, &event, Duration::from_secs(20), |a| {
        a[ada]["sightings"].as_u64().unwrap() > before + 2
    })
    .await;
    let last_seen = ms(later[ada]["lastSeen"].as_str().unwrap());
    assert!((rollcall_scanner::sighting::now_ms() - last_seen).abs() < 15_000, "{}", iso(last_seen));
    assert!(Command::new("kill").args(["-TERM", &run.pid().to_string()]).status().unwrap().success());
    assert!(run.wait_for_exit(Duration::from_secs(20)).success(), "{}", home.log_text("run.log"));
}

#[tokio::test]
async fn a_batch_sealed_before_the_servers_time_was_known_is_rebased_before_it_is_sent() {
    let ada = "fa57c10c-0000-4000-8000-000000000001";
    let Door { mut server, event, home, bus, _fake } = door("Fast clock", ada, "5C:F3:70:11:22:09", 2).await;
    // Out of reach at first, so nothing tells the scanner the time.
    server.down();

    // Half an hour fast: after the build-time floor, so nothing says it is wrong
    // until the server's time is known.
    let heard_from = rollcall_scanner::sighting::now_ms();
    let mut run = run_ble(&home, &bus, &server, &[("FAKETIME", "+30m")], &["--batch-size", "2"]);
    // A batch is sealed (with the fast time) while the server's time is unknown,
    // and more sightings wait behind it.
    eventually(Duration::from_secs(30), "a sealed batch and pending sightings", || {
        let st = home.status();
        (st["stats"]["sealedBatches"].as_u64().unwrap_or(0) >= 1 && st["stats"]["pending"].as_u64().unwrap_or(0) >= 1)
            .then_some(())
    })
    .await;
    assert!(run.running());

    server.up().await;
    let up_at = rollcall_scanner::sighting::now_ms();
    let attendance = attendance_until(&server, &event, Duration::from_secs(30), |a| {
        a.get(ada).is_some_and(|r| ms(r["lastSeen"].as_str().unwrap()) >= up_at)
    })
    .await;
    let log = home.log_text("run.log");
    let row = attendance.get(ada).unwrap_or_else(|| panic!("{log}"));
    let (first, last) = (ms(row["firstSeen"].as_str().unwrap()), ms(row["lastSeen"].as_str().unwrap()));
    // What was sealed before the server's time was known was heard first: it is
    // counted at the real time, not half an hour ahead.
    assert!(first >= heard_from - 2_000 && first < up_at, "first seen {} (started {})", iso(first), iso(heard_from));
    assert!(last <= rollcall_scanner::sighting::now_ms() + 2_000, "nothing half an hour ahead: {row}\n{log}");
    assert_eq!(stays(&row["stays"]).len(), 1, "one stay: {row}");
    assert!(log.contains("ahead of the server's"), "{log}");
    let rebased_sealed = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|l| l["fields"]["rebased_sealed"].as_u64());
    assert!(rebased_sealed >= Some(1), "the sealed batch's rebase is logged: {log}");
    assert!(log.contains("holding the first upload until the server's time is known"), "{log}");
    let uploads = home.uploads("run.log");
    assert_eq!(sum(&uploads, "rejected"), 0, "{log}");
    assert!(Command::new("kill").args(["-TERM", &run.pid().to_string()]).status().unwrap().success());
    assert!(run.wait_for_exit(Duration::from_secs(20)).success(), "{}", home.log_text("run.log"));
}

/// A door with one phone (Ada's, at `address`) heard through a fake BlueZ, and
/// an event from three hours ago to `hours_ahead` from now.
struct Door {
    server: Server,
    event: String,
    home: ScannerHome,
    bus: DbusDaemon,
    _fake: ChildGuard,
}

async fn door(name: &str, ada: &str, address: &str, hours_ahead: i64) -> Door {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms();
    let event = server.active_event(name, &iso(now - 3 * 3_600_000), &iso(now + hours_ahead * 3_600_000)).await;
    server.attendee(&format!("{}@example.org", name.replace(' ', "-")), ada, &event).await;
    let home = ScannerHome::new(&server.api_key(&event).await);
    std::fs::write(
        home.path("phones.json"),
        json!([{ "address": address, "rssi": [-60, -62], "uuids": [ada] }]).to_string(),
    )
    .unwrap();
    let bus = DbusDaemon::start();
    let _fake = start_fake_bluez(&home, &bus, 3_000).await;
    Door { server, event, home, bus, _fake }
}

/// `run --source ble` with 1 s windows, its wall clock set by libfaketime's
/// `clock` variables (the monotonic clock left alone), logging to `run.log`.
fn run_ble(
    home: &ScannerHome,
    bus: &DbusDaemon,
    server: &Server,
    clock: &[(&str, &str)],
    extra: &[&str],
) -> ChildGuard {
    let lib = libfaketime();
    let mut env = vec![
        ("LD_PRELOAD", lib.as_str()),
        ("DONT_FAKE_MONOTONIC", "1"),
        ("DBUS_SYSTEM_BUS_ADDRESS", bus.address.as_str()),
    ];
    env.extend_from_slice(clock);
    let args = [&["--window-secs", "1", "--watchdog-secs", "10"][..], extra].concat();
    home.spawn_run_piped(&[], &env, &server.base, "ble", &args, "run.log")
}

/// libfaketime's library (multi-threaded variant), for a clock a test can step.
fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|d| d.ok())
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists());
    found.expect("libfaketime is installed (Debian package `faketime`)").display().to_string()
}

#[tokio::test]
async fn the_clock_stepping_back_while_running_neither_moves_nor_loses_sightings() {
    let ada = "57e9bac0-0000-4000-8000-000000000001";
    let Door { server, event, home, bus, _fake } = door("Step back", ada, "5C:F3:70:11:22:08", 1).await;
    // The scanner's wall clock comes from this file (an offset), read at most once a second.
    let offset_file = home.path("faketime");
    std::fs::write(&offset_file, "+0\n").unwrap();
    let started = rollcall_scanner::sighting::now_ms();
    let clock = [("FAKETIME_TIMESTAMP_FILE", offset_file.to_str().unwrap()), ("FAKETIME_CACHE_DURATION", "1")];
    let mut run = run_ble(&home, &bus, &server, &clock, &[]);
    // Running, heard, and the clock checked against the server's.
    eventually(Duration::from_secs(30), "a heartbeat that finds the clock right", || {
        home.log_text("run.log").contains("\"clock\":\"SYNCED\"").then_some(())
    })
    .await;
    let before = attendance_until(&server, &event, Duration::from_secs(30), |a| {
        a.get(ada).is_some_and(|r| r["sightings"].as_u64().unwrap() >= 3)
    })
    .await;
    let checked_in = before[ada]["checkedInAt"].as_str().unwrap().to_owned();

    // NTP (or an operator) steps the clock back an hour.
    std::fs::write(&offset_file, "-3600\n").unwrap();
    let stepped = rollcall_scanner::sighting::now_ms();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = attendance_until(&server, &event, Duration::from_secs(20), |a| {
        ms(a[ada]["lastSeen"].as_str().unwrap()) >= stepped + 4_000
    })
    .await;
    let log = home.log_text("run.log");
    assert!(log.contains("the wall clock stepped by -3600"), "{log}");
    let row = &after[ada];
    assert_eq!(row["checkedInAt"].as_str(), Some(checked_in.as_str()), "nothing moved an hour back: {row}");
    assert!(ms(row["firstSeen"].as_str().unwrap()) >= started - 2_000, "{row}");
    let stays = stays(&row["stays"]);
    assert_eq!(stays.len(), 1, "one stay, no gap, no sighting an hour off: {row}");
    let last = ms(row["lastSeen"].as_str().unwrap());
    assert!(last <= rollcall_scanner::sighting::now_ms() + 2_000, "{row}");
    // About one sighting per 1 s window since the first: none lost at the step.
    let span_secs = (last - ms(row["firstSeen"].as_str().unwrap())) / 1000;
    assert!(row["sightings"].as_i64().unwrap() >= span_secs - 2, "{row}");
    assert!(Command::new("kill").args(["-TERM", &run.pid().to_string()]).status().unwrap().success());
    assert!(run.wait_for_exit(Duration::from_secs(20)).success(), "{}", home.log_text("run.log"));
}
