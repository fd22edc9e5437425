//! `replay` of the deployed scanners' log format: `{"bleUuid","timestamp","eventId","scannerSource"}`.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn replays_the_old_scanners_log_format() {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event("Old logs", &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let ada = "6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a";
    let bob = "0b7e6b55-1c1e-4d3c-9d61-0f5f1c9a7e21";
    server.attendee("ada@example.org", ada, &event).await;
    server.attendee("bob@example.org", bob, &event).await;
    let key = server.api_key(&event).await;

    // Aligned to the 10 s coalescing windows, so which hearings share one is certain.
    let t0 = (now - 20 * 60_000) / 10_000 * 10_000;
    let line = |who: &str, t: i64| {
        format!("{{\"bleUuid\":\"{who}\",\"timestamp\":{t},\"eventId\":\"{event}\",\"scannerSource\":\"door-2\"}}\n")
    };
    let mut log = String::new();
    // Ada: 09:00:00 to 09:02:00 every 30 s, then back 10 minutes later for a minute.
    for k in 0..5 {
        log.push_str(&line(ada, t0 + k * 30_000));
    }
    for k in 0..3 {
        log.push_str(&line(ada, t0 + 12 * 60_000 + k * 30_000));
    }
    // Bob: twice in one coalescing window, then once more.
    log.push_str(&line(bob, t0 + 60_000));
    log.push_str(&line(bob, t0 + 61_000));
    log.push_str(&line(bob, t0 + 90_000));
    // A device that belongs to nobody, and a line the old scanners sometimes wrote.
    log.push_str(&line("AA:BB:CC:DD:EE:FF", t0 + 5_000));
    log.push_str("{\"bleUuid\": \"x\"}\n");

    let home = ScannerHome::new(&key);
    std::fs::write(home.path("old.jsonl"), log).unwrap();
    // Accelerated: 20 minutes of log in about a second.
    let mut scanner = home.spawn_run(
        &server.base,
        &format!("replay:{}", home.path("old.jsonl").display()),
        &["--speed", "1200"],
        "scanner.log",
    );
    let status = scanner.wait_for_exit(Duration::from_secs(60));
    assert!(status.success(), "scanner failed: {}", home.log_text("scanner.log"));
    assert!(home.log_text("scanner.log").contains(":13: skipped"), "the bad line is reported with its number");

    let attendance = server.attendance(&event).await;
    let a = &attendance[ada];
    assert_eq!(ms(a["checkedInAt"].as_str().unwrap()), t0);
    assert_eq!(stays(&a["stays"]), vec![(t0, t0 + 120_000), (t0 + 720_000, t0 + 780_000)]);
    assert_eq!(a["sightings"], 8);
    let b = &attendance[bob];
    assert_eq!(ms(b["checkedInAt"].as_str().unwrap()), t0 + 60_000);
    assert_eq!(b["sightings"], 2, "two hearings in one window were coalesced");
    // The key's count is bookkeeping, written within a second of the batch.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.key_info().await["unknownDevices"] != 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.key_info().await["unknownDevices"], 1);
}
