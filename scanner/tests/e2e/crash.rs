//! `kill -9` the scanner in the middle of an upload, after the server applied the
//! batch but before the answer reached the scanner; restart it: nothing is lost and
//! nothing is doubled.
//!
//! A TCP proxy between scanner and server holds the server's answers back, which
//! pins the crash to the worst moment deterministically.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

/// Forwards to `upstream`; while `hold` is set, answers are read but not passed on.
async fn holding_proxy(upstream: u16, hold: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let hold = hold.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    while hold.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_loses_nothing_and_doubles_nothing() {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event("Crash", &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let users: Vec<String> = (0..4).map(|i| format!("11111111-2222-4333-8444-55555555555{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        server.attendee(&format!("c{i}@example.org"), u, &event).await;
    }
    let key = server.api_key(&event).await;

    let home = ScannerHome::new(&key);
    let start = (now - 30 * 60_000) / 10_000 * 10_000;
    let mut lines = String::new();
    for w in 0..50i64 {
        for (i, u) in users.iter().enumerate() {
            lines.push_str(&format!(
                "{{\"bleUuid\":\"{u}\",\"seenAt\":\"{}\",\"rssi\":-60}}\n",
                iso(start + w * 10_000 + i as i64)
            ));
        }
    }
    std::fs::write(home.path("log.jsonl"), lines).unwrap();
    std::fs::write(home.path("empty.jsonl"), "").unwrap();

    let hold = Arc::new(AtomicBool::new(true));
    let proxy = holding_proxy(server.port, hold.clone()).await;
    let mut scanner = home.spawn_run(
        &format!("http://127.0.0.1:{proxy}"),
        &format!("replay:{}", home.path("log.jsonl").display()),
        &["--speed", "0", "--batch-size", "25", "--http-timeout-secs", "120"],
        "first.log",
    );

    // The server has applied the first batch; its answer is stuck in the proxy.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let applied = loop {
        if let Some(id) = server.key_info().await["lastBatchId"].as_str() {
            break id.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never applied a batch: {}",
            home.log_text("first.log")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eventually(Duration::from_secs(60), "all 200 sightings in the outbox", || {
        (home.status()["stats"]["depth"] == 200).then_some(())
    })
    .await;
    scanner.kill9();
    assert!(home.uploads("first.log").is_empty(), "no answer ever reached the scanner");
    let st = home.status();
    assert_eq!(st["stats"]["depth"], 200, "nothing was acked");
    assert_eq!(st["stats"]["nextBatchId"], applied.as_str(), "the batch in flight is still sealed, under the same id");

    // Restart, straight to the server this time, with nothing new to hear.
    let mut scanner = home.spawn_run(
        &server.base,
        &format!("replay:{}", home.path("empty.jsonl").display()),
        &["--speed", "0", "--batch-size", "25"],
        "second.log",
    );
    let status = scanner.wait_for_exit(Duration::from_secs(120));
    assert!(status.success(), "scanner failed: {}", home.log_text("second.log"));

    let uploads = home.uploads("second.log");
    assert!(uploads.len() >= 8 && uploads.iter().all(|u| u["sightings"].as_u64().unwrap() <= 25), "{uploads:?}");
    assert_eq!(uploads[0]["batch"], applied.as_str());
    assert_eq!(uploads[0]["replayed"], true, "the resent batch was answered from the server's record");
    assert!(uploads[1..].iter().all(|u| u["replayed"] == false));
    assert_eq!(sum(&uploads, "sightings"), 200);
    assert_eq!(sum(&uploads, "accepted"), 200);
    assert_eq!(sum(&uploads, "duplicates"), 0, "nothing doubled");
    let attendance = server.attendance(&event).await;
    assert_eq!(attendance.len(), 4);
    for u in &users {
        assert_eq!(attendance[u]["sightings"], 50, "{u}: nothing lost, nothing counted twice");
    }
    let st = home.status();
    assert_eq!(st["stats"]["depth"], 0);
    assert_eq!(st["stats"]["batchesReplayed"], 1);
    assert_eq!(st["stats"]["sightingsAcked"], 200);
    hold.store(false, Ordering::SeqCst);
}

/// The server is killed after it acknowledged a scanner's batches: its store
/// starts a new epoch, and the scanner's next answer brings it. The scanner
/// then sends again, flagged `resent`, every batch it kept since, the server
/// answers each from its record (this store lost nothing), and nothing is
/// counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_acknowledged_before_the_server_was_killed_are_sent_again_once() {
    let mut server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event("Killed", &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let users: Vec<String> = (0..4).map(|i| format!("21111111-2222-4333-8444-55555555555{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        server.attendee(&format!("k{i}@example.org"), u, &event).await;
    }
    let key = server.api_key(&event).await;
    let home = ScannerHome::new(&key);
    let start = (now - 30 * 60_000) / 10_000 * 10_000;
    let log = |windows: std::ops::Range<i64>| -> String {
        let mut lines = String::new();
        for w in windows {
            for (i, u) in users.iter().enumerate() {
                let at = iso(start + w * 10_000 + i as i64);
                lines.push_str(&format!("{{\"bleUuid\":\"{u}\",\"seenAt\":\"{at}\",\"rssi\":-60}}\n"));
            }
        }
        lines
    };
    std::fs::write(home.path("before.jsonl"), log(0..25)).unwrap();
    std::fs::write(home.path("after.jsonl"), log(25..30)).unwrap();
    let base = server.base.clone();
    let run = |source: &str, log: &str| {
        let source = format!("replay:{}", home.path(source).display());
        home.spawn_run(&base, &source, &["--speed", "0", "--batch-size", "25"], log)
    };

    let status = run("before.jsonl", "first.log").wait_for_exit(Duration::from_secs(120));
    assert!(status.success(), "scanner failed: {}", home.log_text("first.log"));
    let first = home.uploads("first.log");
    assert_eq!(first.len(), 4);
    let st = home.status();
    assert_eq!((st["stats"]["depth"].clone(), st["stats"]["keptBatches"].clone()), (0.into(), 4.into()));

    server.down();
    server.up().await;
    let status = run("after.jsonl", "second.log").wait_for_exit(Duration::from_secs(120));
    assert!(status.success(), "scanner failed: {}", home.log_text("second.log"));
    let second = home.uploads("second.log");
    assert_eq!(second.len(), 5, "the new batch, then the four kept ones: {second:?}");
    assert_eq!((second[0]["resent"].clone(), second[0]["replayed"].clone()), (false.into(), false.into()));
    let mut again: Vec<&str> = second[1..].iter().map(|u| u["batch"].as_str().unwrap()).collect();
    let mut before: Vec<&str> = first.iter().map(|u| u["batch"].as_str().unwrap()).collect();
    again.sort_unstable();
    before.sort_unstable();
    assert_eq!(again, before, "the kept batches went out again under their own ids");
    assert!(second[1..].iter().all(|u| u["resent"] == true && u["replayed"] == true), "{second:?}");
    assert!(home.log_text("second.log").contains("sending the batches kept since then again"));

    let attendance = server.attendance(&event).await;
    for u in &users {
        assert_eq!(attendance[u]["sightings"], 30, "{u}: nothing counted twice");
    }
    let st = home.status();
    assert_eq!(st["stats"]["batchesAcked"], 5);
    assert_eq!((st["stats"]["batchesResent"].clone(), st["stats"]["batchesRestored"].clone()), (4.into(), 0.into()));
    assert_eq!(st["stats"]["keptBatches"], 5);
}
