//! Batches that would block every batch behind them: one refused as too large is
//! split until it goes through; one that fails every time while the server answers
//! everything else is parked after N attempts over M seconds, and the rest flows.

use std::time::Duration;

use crate::helpers::*;
use crate::proxy::Proxy;

/// Three users heard in `windows` windows of 10 s each, as replay lines.
fn lines(users: &[String], start: i64, windows: i64) -> String {
    let mut out = String::new();
    for w in 0..windows {
        for (i, u) in users.iter().enumerate() {
            out.push_str(&format!(
                "{{\"bleUuid\":\"{u}\",\"seenAt\":\"{}\",\"rssi\":-60}}\n",
                iso(start + w * 10_000 + i as i64)
            ));
        }
    }
    out
}

#[tokio::test]
async fn a_batch_refused_as_too_large_is_split_until_it_goes_through() {
    // The server takes request bodies of 16 KB at most; a batch of 300 sightings is ~40 KB.
    let server = Server::start_with_env(&[("ROLLCALL_MAX_BODY_BYTES", "16384")]).await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event("Too large", &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let users: Vec<String> = (0..3).map(|i| format!("b16b0000-0000-4000-8000-00000000000{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        server.attendee(&format!("big{i}@example.org"), u, &event).await;
    }
    let home = ScannerHome::new(&server.api_key(&event).await);
    std::fs::write(home.path("log.jsonl"), lines(&users, (now - 3_000_000) / 10_000 * 10_000, 100)).unwrap();
    // Everything is in the outbox before the first batch is sealed: the server is away at first.
    let mut run = home.spawn_run(
        &server.base,
        &format!("replay:{}", home.path("log.jsonl").display()),
        &["--speed", "0", "--batch-size", "5000", "--backoff-initial-ms", "50"],
        "run.log",
    );
    let status = run.wait_for_exit(Duration::from_secs(120));
    let log = home.log_text("run.log");
    assert!(status.success(), "{log}");
    assert!(log.contains("refused the batch as too large; split it in two"), "{log}");
    let uploads = home.uploads("run.log");
    assert_eq!(sum(&uploads, "accepted"), 300);
    assert!(uploads.iter().all(|u| u["sightings"].as_u64().unwrap() < 300), "{uploads:?}");
    let st = home.status();
    assert_eq!((st["stats"]["depth"].as_u64(), st["stats"]["deadBatches"].as_u64()), (Some(0), Some(0)));
    let attendance = server.attendance(&event).await;
    assert!(users.iter().all(|u| attendance[u]["sightings"] == 100), "{attendance:?}");
}

#[tokio::test]
async fn a_batch_that_always_fails_is_parked_and_the_rest_delivered() {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event("Poison", &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let users: Vec<String> = (0..3).map(|i| format!("9015e000-0000-4000-8000-00000000000{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        server.attendee(&format!("poison{i}@example.org"), u, &event).await;
    }
    let home = ScannerHome::new(&server.api_key(&event).await);
    // A proxy (or a server bug) answers 500 to every batch holding one sighting.
    let proxy = Proxy::start(
        &server.base,
        Box::new(|req, _| {
            (req.body.contains("SubmitSightings") && req.body.contains("poison-pill"))
                .then(|| (500, "Internal Server Error".to_owned()))
        }),
    )
    .await;
    let start = (now - 3_000_000) / 10_000 * 10_000;
    let pill = format!("{{\"bleUuid\":\"poison-pill\",\"seenAt\":\"{}\",\"rssi\":-60}}\n", iso(start - 60_000));
    std::fs::write(home.path("log.jsonl"), pill + &lines(&users, start, 10)).unwrap();
    // The defaults are 10 attempts over 6 h; here 3 over 1 s.
    let mut run = home.spawn_run(
        &proxy.base,
        &format!("replay:{}", home.path("log.jsonl").display()),
        &["--speed", "0", "--batch-size", "4", "--backoff-initial-ms", "100"]
            .into_iter()
            .chain(["--park-after-attempts", "3", "--park-after-secs", "1"])
            .collect::<Vec<_>>(),
        "run.log",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while run.running() {
        assert!(std::time::Instant::now() < deadline, "still running: {}", home.log_text("run.log"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = run.wait_for_exit(Duration::from_secs(1));
    let log = home.log_text("run.log");
    // A finite run that leaves a dead batch behind says so and fails.
    assert!(!status.success(), "{log}");
    assert!(log.contains("parking a batch that keeps failing while the server answers other requests"), "{log}");
    let st = home.status();
    assert_eq!(st["stats"]["deadBatches"], 1);
    // The batch holding the pill: the pill, and what was sealed with it (at most 3).
    let dead = st["stats"]["deadSightings"].as_u64().unwrap();
    assert!((1..=4).contains(&dead), "{st}");
    let reason = st["stats"]["lastDeadReason"].as_str().unwrap();
    let times: u32 = reason.strip_prefix("failed ").and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    assert!(times >= 3 && reason.contains("answered HTTP 500"), "{st}");
    assert_eq!(st["stats"]["depth"], 0, "everything else went through");
    let attendance = server.attendance(&event).await;
    let counted: u64 = users.iter().map(|u| attendance[u]["sightings"].as_u64().unwrap_or(0)).sum();
    assert_eq!(counted, 30 - (dead - 1), "all but the parked batch");
    // The pill was sent at least 3 times, the last time after more than a second.
    assert!(proxy.requests().iter().filter(|r| r.body.contains("poison-pill")).count() >= 3);
}
