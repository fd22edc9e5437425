//! A damaged outbox file (an SD card that lost power mid-write): the scanner moves
//! it aside, salvages the rows it can read into a fresh outbox, says so, and
//! delivers them, instead of failing at every start.

use std::time::Duration;

use rollcall_scanner::outbox::Outbox;
use rollcall_scanner::sighting::Sighting;

use crate::helpers::*;

#[tokio::test]
async fn a_damaged_outbox_is_moved_aside_and_what_can_be_read_is_delivered() {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event("Damaged", &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let users: Vec<String> = (0..4).map(|i| format!("c0bbed00-0000-4000-8000-00000000000{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        server.attendee(&format!("bad{i}@example.org"), u, &event).await;
    }
    let key = server.api_key(&event).await;
    let home = ScannerHome::new(&key);

    // 2,000 sightings (500 per user, a second apart), all on disk in the main file.
    let total = 2_000i64;
    {
        let mut outbox = Outbox::open(&home.path("data")).unwrap();
        let sightings: Vec<Sighting> = (0..total)
            .map(|k| Sighting {
                identifier: users[(k % 4) as usize].clone(),
                seen_at_ms: now - 1_800_000 + k * 1000,
                rssi: Some(-60),
                event_id: None,
            })
            .collect();
        outbox.append(&sightings).unwrap();
    }
    // The last connection's close checkpointed the WAL into the main file. Two pages
    // in the middle of it now hold garbage.
    let path = home.path("data/outbox.sqlite3");
    let mut bytes = std::fs::read(&path).unwrap();
    let pages = bytes.len() / 4096;
    assert!(pages > 10, "{pages} pages");
    bytes[(pages / 2) * 4096..(pages / 2 + 2) * 4096].fill(0x5a);
    std::fs::write(&path, &bytes).unwrap();

    std::fs::write(home.path("empty.jsonl"), "").unwrap();
    let mut run = home.spawn_run(
        &server.base,
        &format!("replay:{}", home.path("empty.jsonl").display()),
        &["--speed", "0", "--batch-size", "500"],
        "run.log",
    );
    let status = run.wait_for_exit(Duration::from_secs(120));
    let log = home.log_text("run.log");
    assert!(status.success(), "{log}");
    assert!(log.contains("the outbox was damaged"), "{log}");

    let st = home.status();
    let recovery = &st["stats"]["lastRecovery"];
    let salvaged = recovery["salvaged"].as_u64().unwrap();
    assert!(salvaged > 1_000 && salvaged < total as u64, "most rows, not all: {salvaged}");
    assert_eq!(recovery["rowsLost"], true);
    let moved = std::path::PathBuf::from(recovery["movedTo"].as_str().unwrap());
    assert!(moved.exists() && moved.file_name().unwrap().to_str().unwrap().starts_with("outbox-corrupt-"));
    assert_eq!(st["stats"]["depth"], 0);
    assert_eq!(st["stats"]["sightingsAcked"].as_u64(), Some(salvaged), "every salvaged row was delivered");
    let uploads = home.uploads("run.log");
    assert_eq!(sum(&uploads, "accepted"), salvaged);
    let attendance = server.attendance(&event).await;
    let counted: u64 = users.iter().map(|u| attendance[u]["sightings"].as_u64().unwrap()).sum();
    assert_eq!(counted, salvaged);
    let text = String::from_utf8(home.cli(&["status"]).stdout).unwrap();
    assert!(text.contains("recovered:   a damaged outbox") && text.contains("sightings salvaged"), "{text}");

    // The next start finds a sound outbox.
    let mut run = home.spawn_run(
        &server.base,
        &format!("replay:{}", home.path("empty.jsonl").display()),
        &["--speed", "0"],
        "again.log",
    );
    assert!(run.wait_for_exit(Duration::from_secs(60)).success());
    assert!(!home.log_text("again.log").contains("damaged"));
}
