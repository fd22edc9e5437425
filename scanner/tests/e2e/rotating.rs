//! `simulate` advertising rotating identifiers (docs/identity.md): phones whose
//! identifier changes every slot are resolved by the server to their users,
//! and the attendance matches the simulation's ground truth.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const WINDOW_MS: i64 = 10_000;

#[tokio::test]
async fn simulated_phones_advertising_rotating_identifiers_are_checked_in() {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    // Long enough ago that every attendee is heard over several 10-minute slots.
    let sim_start = iso(now - 100 * 60_000);
    let event = server.active_event("Rotating", &iso(now - 120 * 60_000), &iso(now + 60 * 60_000)).await;
    let n = 4;
    let mut secrets = String::new();
    let mut users = Vec::new();
    for i in 0..n {
        let data = server
            .gql(
                None,
                "mutation($e: String!) { signUp(email: $e, name: \"Phone\", password: \"correct horse battery 42\") {
                    user { id bleUuid beacon { secret slotSeconds } } } }",
                json!({ "e": format!("r{i}@example.org") }),
            )
            .await;
        let user = data["signUp"]["user"].clone();
        assert_eq!(user["beacon"]["slotSeconds"], 600, "{data}");
        secrets.push_str(user["beacon"]["secret"].as_str().unwrap());
        secrets.push('\n');
        server
            .admin_gql(
                "mutation($e: ID!, $u: ID) { registerForEvent(eventId: $e, userId: $u) { status } }",
                json!({ "e": event, "u": user["id"] }),
            )
            .await;
        users.push(user);
    }
    let key = server.api_key(&event).await;
    let home = ScannerHome::new(&key);
    std::fs::write(home.path("secrets.txt"), secrets).unwrap();
    let secrets_path = home.path("secrets.txt").to_string_lossy().into_owned();

    let out = Command::new(scanner_bin())
        .args(["simulate", &n.to_string(), "--seed", "7", "--sim-start", &sim_start])
        .output()
        .unwrap();
    let truth: Value = serde_json::from_slice(&out.stdout).unwrap();
    let attendees = truth["attendees"].as_array().unwrap();

    let mut scanner = home.spawn_run(
        &server.base,
        &format!("simulate:{n}"),
        &["--seed", "7", "--sim-start", &sim_start, "--speed", "0", "--sim-beacon-secrets", &secrets_path],
        "scanner.log",
    );
    let status = scanner.wait_for_exit(Duration::from_secs(120));
    assert!(status.success(), "scanner failed: {}", home.log_text("scanner.log"));

    let attendance = server.attendance(&event).await;
    assert_eq!(attendance.len(), n, "every phone resolved to its user: {attendance:?}");
    for (a, user) in attendees.iter().zip(&users) {
        let row = &attendance[user["bleUuid"].as_str().unwrap()];
        let truth_stays = stays(&a["stays"]);
        assert_eq!(stays(&row["stays"]).len(), truth_stays.len(), "{row}");
        let check_in = ms(row["checkedInAt"].as_str().unwrap());
        assert!((truth_stays[0].0..truth_stays[0].0 + WINDOW_MS).contains(&check_in), "{row} vs {a}");
    }
    // What was uploaded were rotating identifiers, not the plan's BLE UUIDs:
    // those belong to nobody here, so nothing would have been checked in.
    let uploads = home.uploads("scanner.log");
    assert_eq!(sum(&uploads, "rejected"), 0);
    let counted: u64 = attendance.values().map(|r| r["sightings"].as_u64().unwrap()).sum();
    assert_eq!(counted, sum(&uploads, "accepted") - sum(&uploads, "unknown"), "every phone sighting counted once");
}
