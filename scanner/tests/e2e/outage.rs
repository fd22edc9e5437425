//! The server is down for a while: the outbox grows; the server comes back; every
//! sighting is delivered exactly once.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn outbox_holds_everything_through_an_outage_and_delivers_once() {
    let mut server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event("Outage", &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let users: Vec<String> = (0..5).map(|i| format!("00000000-0000-4000-8000-00000000000{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        server.attendee(&format!("u{i}@example.org"), u, &event).await;
    }
    let key = server.api_key(&event).await;

    // 5 users × 60 windows of 10 s, three advertisements per window: 300 sightings after coalescing.
    let home = ScannerHome::new(&key);
    let start = (now - 30 * 60_000) / 10_000 * 10_000;
    let mut lines = String::new();
    for w in 0..60i64 {
        for (i, u) in users.iter().enumerate() {
            for (k, rssi) in [(0i64, -70), (3, -55), (6, -65)] {
                let t = start + w * 10_000 + k * 1000 + i as i64;
                lines.push_str(&format!("{{\"bleUuid\":\"{u}\",\"seenAt\":\"{}\",\"rssi\":{rssi}}}\n", iso(t)));
            }
        }
    }
    std::fs::write(home.path("log.jsonl"), lines).unwrap();

    server.down();
    let mut scanner = home.spawn_run(
        &server.base,
        &format!("replay:{}", home.path("log.jsonl").display()),
        &["--speed", "0", "--batch-size", "40", "--backoff-initial-ms", "100"],
        "scanner.log",
    );
    // While the server is away, everything lands in the outbox and stays there.
    let depth = eventually(Duration::from_secs(60), "the outbox to hold all 300 sightings", || {
        let st = home.status();
        (st["stats"]["depth"] == 300).then_some(st)
    })
    .await;
    assert_eq!(depth["stats"]["sightingsAcked"], 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(home.log_text("scanner.log").contains("upload failed, retrying"), "it kept trying");
    assert_eq!(home.status()["stats"]["depth"], 300, "nothing is dropped while retrying");

    server.up().await;
    let status = scanner.wait_for_exit(Duration::from_secs(120));
    assert!(status.success(), "scanner failed: {}", home.log_text("scanner.log"));

    let uploads = home.uploads("scanner.log");
    // A batch sealed while the replay was still being committed may be smaller; none is larger.
    assert!(uploads.len() >= 8 && uploads.iter().all(|u| u["sightings"].as_u64().unwrap() <= 40), "{uploads:?}");
    assert_eq!(sum(&uploads, "sightings"), 300);
    assert_eq!(sum(&uploads, "accepted"), 300);
    assert_eq!(sum(&uploads, "duplicates"), 0, "nothing delivered twice");
    assert!(uploads.iter().all(|u| u["replayed"] == false));
    let attendance = server.attendance(&event).await;
    assert_eq!(attendance.len(), 5);
    for u in &users {
        let row = &attendance[u];
        assert_eq!(row["sightings"], 60, "{u}: one per window");
        assert_eq!(row["bestRssi"], -55, "{u}: the strongest of each window was kept");
    }
    let st = home.status();
    assert_eq!((st["stats"]["depth"].as_u64(), st["stats"]["sightingsAcked"].as_u64()), (Some(0), Some(300)));
}
