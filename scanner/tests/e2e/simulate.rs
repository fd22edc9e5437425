//! `simulate` with a fixed seed: the server's attendance equals the simulation's
//! ground truth, to within one coalescing window.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const WINDOW_MS: i64 = 10_000;

#[tokio::test]
async fn simulated_venue_matches_ground_truth() {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let sim_start = iso(now - 100 * 60_000);
    let event = server.active_event("Simulated", &iso(now - 120 * 60_000), &iso(now + 60 * 60_000)).await;

    // The ground truth, as `rollcall-scanner simulate` prints it.
    let out = Command::new(scanner_bin())
        .args(["simulate", "12", "--seed", "42", "--sim-start", &sim_start])
        .output()
        .unwrap();
    assert!(out.status.success());
    let truth: Value = serde_json::from_slice(&out.stdout).unwrap();
    let attendees = truth["attendees"].as_array().unwrap();
    assert_eq!(attendees.len(), 12);
    assert!(attendees.iter().any(|a| a["stays"].as_array().unwrap().len() == 2), "someone leaves and comes back");
    for (i, a) in attendees.iter().enumerate() {
        server.attendee(&format!("a{i}@example.org"), a["bleUuid"].as_str().unwrap(), &event).await;
    }
    let key = server.api_key(&event).await;

    let home = ScannerHome::new(&key);
    let mut scanner = home.spawn_run(
        &server.base,
        "simulate:12",
        &["--seed", "42", "--sim-start", &sim_start, "--speed", "0", "--batch-size", "1000"],
        "scanner.log",
    );
    let status = scanner.wait_for_exit(Duration::from_secs(120));
    assert!(status.success(), "scanner failed: {}", home.log_text("scanner.log"));

    let attendance = server.attendance(&event).await;
    assert_eq!(attendance.len(), 12, "every attendee checked in, no passer-by: {attendance:?}");
    for a in attendees {
        let uuid = a["bleUuid"].as_str().unwrap();
        let row = &attendance[uuid];
        let truth_stays = stays(&a["stays"]);
        let seen = stays(&row["stays"]);
        assert_eq!(seen.len(), truth_stays.len(), "{uuid}: stays {seen:?} vs truth {truth_stays:?}");
        let check_in = ms(row["checkedInAt"].as_str().unwrap());
        assert!(
            (truth_stays[0].0..truth_stays[0].0 + WINDOW_MS).contains(&check_in),
            "{uuid}: check-in {check_in} vs arrival {}",
            truth_stays[0].0
        );
        for ((from, to), (t_from, t_to)) in seen.iter().zip(&truth_stays) {
            assert!((*t_from..t_from + WINDOW_MS).contains(from), "{uuid}: stay starts {from}, truth {t_from}");
            assert!((t_to - WINDOW_MS + 1..=*t_to).contains(to), "{uuid}: stay ends {to}, truth {t_to}");
        }
    }

    // Everything uploaded was applied once: no duplicates, nothing replayed.
    let uploads = home.uploads("scanner.log");
    assert!(!uploads.is_empty());
    assert_eq!(sum(&uploads, "duplicates"), 0);
    assert!(uploads.iter().all(|u| u["replayed"] == false));
    assert_eq!(sum(&uploads, "rejected"), 0);
    let st = home.status();
    assert_eq!(st["stats"]["depth"], 0);
    assert_eq!(st["stats"]["sightingsAcked"], sum(&uploads, "sightings"));
    let counted: u64 = attendance.values().map(|r| r["sightings"].as_u64().unwrap()).sum();
    assert_eq!(counted, sum(&uploads, "accepted") - sum(&uploads, "unknown"), "every attendee sighting counted once");
    // The heartbeat reached the server.
    let info = server.key_info().await;
    assert_eq!(info["heartbeat"]["version"], env!("CARGO_PKG_VERSION"));
}
