//! What the uploader gives up on, and what it must not: a wrong server path keeps
//! everything in the outbox (nothing parked) until the right one delivers it exactly
//! once; batches the server refused (dead) are visible, make `flush` fail, and go
//! out again with `flush --retry-dead`.

use std::time::Duration;

use rollcall_scanner::outbox::Outbox;
use rollcall_scanner::sighting::Sighting;

use crate::helpers::*;

fn upload_failures(home: &ScannerHome, log: &str) -> usize {
    home.log_text(log).lines().filter(|l| l.contains("upload failed, retrying")).count()
}

#[tokio::test]
async fn a_wrong_server_path_keeps_everything_until_the_right_one_delivers_it_once() {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event("Wrong path", &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let users: Vec<String> = (0..3).map(|i| format!("0a0a0a0a-0000-4000-8000-00000000000{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        server.attendee(&format!("w{i}@example.org"), u, &event).await;
    }
    let key = server.api_key(&event).await;
    let home = ScannerHome::new(&key);
    // 3 users × 10 windows of 10 s: 30 sightings after coalescing.
    let start = (now - 20 * 60_000) / 10_000 * 10_000;
    let mut lines = String::new();
    for w in 0..10i64 {
        for (i, u) in users.iter().enumerate() {
            let t = start + w * 10_000 + i as i64;
            lines.push_str(&format!("{{\"bleUuid\":\"{u}\",\"seenAt\":\"{}\",\"rssi\":-60}}\n", iso(t)));
        }
    }
    std::fs::write(home.path("log.jsonl"), lines).unwrap();
    std::fs::write(home.path("empty.jsonl"), "").unwrap();

    // A typo in the path: the server answers 404 to every request.
    let wrong = format!("{}/rolcall", server.base);
    let mut run = home.spawn_run(
        &wrong,
        &format!("replay:{}", home.path("log.jsonl").display()),
        &["--speed", "0", "--batch-size", "7", "--backoff-initial-ms", "50"],
        "wrong.log",
    );
    eventually(Duration::from_secs(60), "several failed uploads of the whole outbox", || {
        (home.status()["stats"]["depth"] == 30 && upload_failures(&home, "wrong.log") >= 4).then_some(())
    })
    .await;
    let log = home.log_text("wrong.log");
    assert!(
        log.contains(&format!("the server at {wrong}/graphql answered HTTP 404: is --server right?")),
        "the answer and a hint are logged: {log}"
    );
    assert!(!log.contains("parking"), "nothing was parked: {log}");
    let st = home.status();
    assert_eq!((st["stats"]["depth"].as_u64(), st["stats"]["deadBatches"].as_u64()), (Some(30), Some(0)));
    assert!(home.uploads("wrong.log").is_empty());
    assert!(server.key_info().await["lastBatchId"].is_null(), "nothing reached submitSightings");
    run.kill9();

    // `flush` against the wrong path gives up, loudly and non-zero, and keeps everything.
    let out = home.flush(&wrong, &[]);
    assert!(!out.status.success(), "flush cannot deliver: it fails");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("giving up after 5 failed attempts") && err.contains("answered HTTP 404"), "{err}");
    let st = home.status();
    assert_eq!((st["stats"]["depth"].as_u64(), st["stats"]["deadBatches"].as_u64()), (Some(30), Some(0)));

    // The right server: everything is delivered, once.
    let mut run = home.spawn_run(
        &server.base,
        &format!("replay:{}", home.path("empty.jsonl").display()),
        &["--speed", "0", "--batch-size", "7"],
        "right.log",
    );
    let status = run.wait_for_exit(Duration::from_secs(120));
    assert!(status.success(), "{}", home.log_text("right.log"));
    let uploads = home.uploads("right.log");
    assert_eq!(sum(&uploads, "sightings"), 30);
    assert_eq!(sum(&uploads, "accepted"), 30);
    assert_eq!(sum(&uploads, "duplicates"), 0);
    assert!(uploads.iter().all(|u| u["replayed"] == false), "no batch had reached the server before: {uploads:?}");
    let attendance = server.attendance(&event).await;
    for u in &users {
        assert_eq!(attendance[u]["sightings"], 10, "{u}: every window, once");
    }
    let st = home.status();
    assert_eq!((st["stats"]["depth"].as_u64(), st["stats"]["sightingsAcked"].as_u64()), (Some(0), Some(30)));
}

#[tokio::test]
async fn dead_batches_are_shown_fail_flush_and_go_out_again_with_retry_dead() {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event("Dead", &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let ada = "0d0d0d0d-0000-4000-8000-000000000001";
    server.attendee("dead@example.org", ada, &event).await;
    let key = server.api_key(&event).await;
    let home = ScannerHome::new(&key);

    // A batch the server once refused as a whole (the refusal itself is unit-tested in `api`).
    {
        let mut outbox = Outbox::open(&home.path("data")).unwrap();
        let sightings: Vec<Sighting> = (0..3)
            .map(|k| Sighting {
                identifier: ada.into(),
                seen_at_ms: now - 600_000 + k * 60_000,
                rssi: Some(-60),
                event_id: None,
            })
            .collect();
        outbox.append(&sightings).unwrap();
        let batch = outbox.next_batch(10).unwrap().unwrap();
        outbox.park(batch.batch_id, "VALIDATION: the server said no").unwrap();
    }

    let st = home.status();
    assert_eq!((st["stats"]["deadBatches"].as_u64(), st["stats"]["deadSightings"].as_u64()), (Some(1), Some(3)));
    assert_eq!(st["stats"]["depth"], 0, "dead batches are not waiting to be sent");
    let text = String::from_utf8(home.cli(&["status"]).stdout).unwrap();
    assert!(text.contains("dead:        1 batches (3 sightings)"), "{text}");
    assert!(text.contains("VALIDATION: the server said no") && text.contains("flush --retry-dead"), "{text}");

    // A finite run that leaves dead batches behind fails.
    std::fs::write(home.path("empty.jsonl"), "").unwrap();
    let mut run = home.spawn_run(
        &server.base,
        &format!("replay:{}", home.path("empty.jsonl").display()),
        &["--speed", "0"],
        "run.log",
    );
    assert!(!run.wait_for_exit(Duration::from_secs(60)).success(), "{}", home.log_text("run.log"));
    assert!(home.log_text("run.log").contains("refused by the server"));

    let out = home.flush(&server.base, &[]);
    assert!(!out.status.success(), "flush fails while dead batches remain");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 batches (3 sightings) were refused") && err.contains("--retry-dead"), "{err}");
    assert!(server.attendance(&event).await.is_empty());

    let out = home.flush(&server.base, &["--retry-dead"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("sending 1 refused (dead) batches again"), "{stdout}");
    assert!(stdout.contains("flushed 3 sightings in 1 batches; the outbox is empty"), "{stdout}");
    assert_eq!(server.attendance(&event).await[ada]["sightings"], 3);
    let st = home.status();
    assert_eq!((st["stats"]["deadBatches"].as_u64(), st["stats"]["depth"].as_u64()), (Some(0), Some(0)));
}
