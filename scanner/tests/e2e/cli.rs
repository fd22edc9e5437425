//! `status`, `flush`, SIGTERM and a refused key, through the real binary.

use std::process::Command;
use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn sigterm_keeps_what_was_heard_and_flush_delivers_it() {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event("Flush", &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let ada = "7d444840-9dc0-11d1-b245-5ffdce74fad2";
    server.attendee("ada@example.org", ada, &event).await;
    let key = server.api_key(&event).await;
    let home = ScannerHome::new(&key);
    // Twelve hearings in one 60 s window, fed through a pipe that stays open, so the
    // source is still running and the window still open when SIGTERM comes.
    let t = (now - 120_000) / 60_000 * 60_000;
    let lines: String = (0..12)
        .map(|k| format!("{{\"bleUuid\":\"{ada}\",\"seenAt\":\"{}\",\"rssi\":{}}}\n", iso(t + k * 500), -80 + k))
        .collect();
    let fifo = home.path("live.jsonl");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());

    // No server reachable.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut run = home.spawn_run(
        &dead,
        &format!("replay:{}", fifo.display()),
        &["--speed", "0", "--window-secs", "60"],
        "run.log",
    );
    let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    std::io::Write::write_all(&mut pipe, lines.as_bytes()).unwrap();
    std::io::Write::flush(&mut pipe).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(home.status()["stats"]["depth"], 0, "the window is still open, in memory");
    let pid = run.0.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(run.wait_for_exit(Duration::from_secs(20)).success(), "{}", home.log_text("run.log"));
    drop(pipe);
    assert_eq!(home.status()["stats"]["depth"], 1, "the open window was committed on SIGTERM, coalesced to one");

    let text = home.cli(&["status"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("waiting:     1 sightings"), "{text}");
    assert!(text.contains("last upload: never"), "{text}");

    let out = home.flush(&server.base, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("flushed 1 sightings in 1 batches"));
    let row = &server.attendance(&event).await[ada];
    assert_eq!(row["bestRssi"], -69, "the strongest of the window");
    assert_eq!(ms(row["checkedInAt"].as_str().unwrap()), t + 11 * 500);
    let st = home.status();
    assert_eq!((st["stats"]["depth"].as_u64(), st["stats"]["sightingsAcked"].as_u64()), (Some(0), Some(1)));
    assert!(st["stats"]["lastUploadMs"].as_i64().is_some());
}

#[tokio::test]
async fn a_refused_key_keeps_the_sightings_and_is_not_retried_forever() {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event("Bad key", &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let home = ScannerHome::new("rck_not_a_real_key");
    std::fs::write(
        home.path("log.jsonl"),
        format!("{{\"bleUuid\":\"x\",\"seenAt\":\"{}\",\"eventId\":\"{event}\"}}\n", iso(now - 60_000)),
    )
    .unwrap();
    let mut run = home.spawn_run(
        &server.base,
        &format!("replay:{}", home.path("log.jsonl").display()),
        &["--speed", "0"],
        "run.log",
    );
    let status = run.wait_for_exit(Duration::from_secs(60));
    assert!(!status.success(), "a replay that cannot be delivered fails");
    assert!(home.log_text("run.log").contains("the server refuses this scanner's API key"));
    assert_eq!(home.status()["stats"]["depth"], 1, "nothing dropped");

    let out = home.flush(&server.base, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refuses the API key"));
}
