//! `--record registered` (the default): only identifiers that may count for
//! the active events reach the outbox and the server; `--record all` sends
//! everything, and the server counts the rest as unknown devices.

use std::io::Write as _;
use std::time::Duration;

use crate::helpers::*;

/// Runs the scanner on a replay FIFO, waits until it has applied the filter
/// the `record` mode leads to, then feeds it `lines` and waits for it to
/// finish; returns its uploads.
async fn run(server: &Server, key: &str, record: &str, lines: &str) -> (ScannerHome, Vec<serde_json::Value>) {
    let home = ScannerHome::new(key);
    let fifo = home.path("heard.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    let source = format!("replay:{}", fifo.display());
    let mut scanner = home.spawn_run(&server.base, &source, &["--speed", "0", "--record", record], "scanner.log");
    if record == "registered" {
        eventually(Duration::from_secs(30), "the filter to be applied", || {
            home.log_text("scanner.log").contains("recording only identifiers that may count").then_some(())
        })
        .await;
    }
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).expect("the FIFO opens");
    w.write_all(lines.as_bytes()).unwrap();
    drop(w);
    let status = scanner.wait_for_exit(Duration::from_secs(60));
    assert!(status.success(), "scanner failed: {}", home.log_text("scanner.log"));
    let uploads = home.uploads("scanner.log");
    (home, uploads)
}

#[tokio::test]
async fn only_identifiers_that_may_count_are_recorded() {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    // STATIC: no rotating identifiers, so an unregistered UUID cannot count either.
    let policy = serde_json::json!({ "identity": "STATIC" });
    let event = server.active_event_with_policy("Doors", &iso(now - 3_600_000), &iso(now + 3_600_000), policy).await;
    let ada = "6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a";
    server.attendee("ada@example.org", ada, &event).await;
    let key = server.api_key(&event).await;

    let t = now - 60_000;
    let line = |who: &str| format!("{{\"bleUuid\":\"{who}\",\"seenAt\":\"{}\",\"rssi\":-60}}\n", iso(t));
    // Ada (spelt in upper case, as some stacks report it), a stranger's phone, a badge nobody holds.
    let lines = [line(&ada.to_uppercase()), line("0b3c7c55-0000-4000-8000-000000000001"), line("badge-9")].concat();

    let (home, uploads) = run(&server, &key, "registered", &lines).await;
    assert_eq!(sum(&uploads, "accepted"), 1, "only Ada's sighting is uploaded: {uploads:?}");
    assert_eq!(sum(&uploads, "unknown"), 0);
    assert!(home.log_text("scanner.log").contains("\"unregistered\":2"), "the status line counts the two dropped");
    let attendance = server.attendance(&event).await;
    assert_eq!(attendance.len(), 1);
    assert_eq!(attendance[ada]["sightings"], 1);

    // The same with every identifier recorded: the server counts the other two as unknown.
    let (_home, uploads) = run(&server, &key, "all", &lines.replace(&iso(t), &iso(t + 20_000))).await;
    assert_eq!(sum(&uploads, "accepted"), 3, "{uploads:?}");
    assert_eq!(sum(&uploads, "unknown"), 2);
}
