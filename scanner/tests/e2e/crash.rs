//! `kill -9` the scanner in the middle of an upload, after the server applied the
//! batch but before the answer reached the scanner; restart it: nothing is lost and
//! nothing is doubled.
//!
//! A TCP proxy between scanner and server holds the server's answers back, which
//! pins the crash to the worst moment deterministically.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
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

/// Copies a directory tree (a stopped server's store).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// An event around now, four people registered for it, and a scanner key.
struct Crowd {
    event: String,
    key: String,
    /// Their BLE UUIDs.
    users: Vec<String>,
    /// Half an hour ago, on a 10 s boundary: where replays start.
    start: i64,
}

/// A [`Crowd`] named `name`, its people's UUIDs beginning with `prefix`.
async fn crowd(server: &Server, name: &str, prefix: char) -> Crowd {
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event(name, &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let users: Vec<String> = (0..4).map(|i| format!("{prefix}1111111-2222-4333-8444-55555555555{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        server.attendee(&format!("{name}{i}@example.org"), u, &event).await;
    }
    let key = server.api_key(&event).await;
    Crowd { event, key, users, start: (now - 30 * 60_000) / 10_000 * 10_000 }
}

/// A replay log: in each 10 s window of `windows` from `start`, each of
/// `users` heard once.
fn heard(users: &[String], start: i64, windows: std::ops::Range<i64>) -> String {
    let mut lines = String::new();
    for w in windows {
        for (i, u) in users.iter().enumerate() {
            let at = iso(start + w * 10_000 + i as i64);
            lines.push_str(&format!("{{\"bleUuid\":\"{u}\",\"seenAt\":\"{at}\",\"rssi\":-60}}\n"));
        }
    }
    lines
}

/// The server's store loses a batch it acknowledged: here it is put back as
/// it was before that batch (a copy taken while the server was down), which
/// is what the engine's fault does to the last commits before a kill. It
/// starts under a new epoch; the scanner's next answer brings it, the scanner
/// asks which of the batches it kept the store still has, and sends again,
/// flagged `resent`, only the one it lost. Nothing is lost, nothing doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_servers_store_lost_is_sent_again_and_only_that_one() {
    let mut server = Server::start().await;
    let Crowd { event, key, users, start } = crowd(&server, "lost", '2').await;
    let home = ScannerHome::new(&key);
    for (name, windows) in [("a.jsonl", 0..25), ("b.jsonl", 25..50), ("c.jsonl", 50..55)] {
        std::fs::write(home.path(name), heard(&users, start, windows)).unwrap();
    }
    let base = server.base.clone();
    let run = |source: &str, log: &str| {
        let source = format!("replay:{}", home.path(source).display());
        let mut scanner = home.spawn_run(&base, &source, &["--speed", "0", "--batch-size", "100"], log);
        let status = scanner.wait_for_exit(Duration::from_secs(120));
        assert!(status.success(), "scanner failed: {}", home.log_text(log));
        home.uploads(log)
    };
    let store = std::path::PathBuf::from(server.db.strip_prefix("surrealkv://").unwrap());
    let backup = store.with_file_name("backup");

    let ids = |uploads: &[Value], resent: bool| -> Vec<String> {
        let mut ids: Vec<String> =
            uploads.iter().filter(|u| u["resent"] == resent).map(|u| u["batch"].as_str().unwrap().to_owned()).collect();
        ids.sort_unstable();
        ids
    };
    let first = run("a.jsonl", "a.log");
    assert_eq!(sum(&first, "sightings"), 100);
    server.down();
    copy_tree(&store, &backup);
    server.up().await;
    let second = run("b.jsonl", "b.log");
    assert_eq!(sum(&second, "sightings"), 100);
    assert!(ids(&second, true).is_empty(), "the kept batches were in the store: none sent again ({second:?})");
    let st = home.status();
    let kept = first.len() + second.len();
    assert_eq!((st["stats"]["keptBatches"].clone(), st["stats"]["batchesResent"].clone()), (kept.into(), 0.into()));

    server.down();
    std::fs::remove_dir_all(&store).unwrap();
    copy_tree(&backup, &store);
    server.up().await;
    let third = run("c.jsonl", "c.log");
    assert_eq!(ids(&third, true), ids(&second, false), "the lost batches, and only they, went again: {third:?}");
    assert!(third.iter().all(|u| u["replayed"] == false), "{third:?}");
    assert!(home.log_text("c.log").contains("lost batches it had acknowledged"));

    let attendance = server.attendance(&event).await;
    for u in &users {
        assert_eq!(attendance[u]["sightings"], 55, "{u}: nothing lost, nothing counted twice");
    }
    let st = home.status();
    let (new, lost) = (first.len() + second.len() + ids(&third, false).len(), second.len());
    assert_eq!(st["stats"]["batchesAcked"], new);
    assert_eq!(
        (st["stats"]["batchesResent"].clone(), st["stats"]["batchesRestored"].clone()),
        (lost.into(), lost.into())
    );
    assert_eq!(st["stats"]["keptBatches"], new);
}

/// A scanner with nothing more to send still hears of a restart: idle, it
/// asks for the store's epoch every heartbeat interval, and sends again what
/// the store lost (here the server's store is put back to a copy taken
/// before the scanner uploaded anything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_scanner_sends_again_what_the_store_lost() {
    let mut server = Server::start().await;
    let Crowd { event, key, users, start } = crowd(&server, "idle", '3').await;
    let store = std::path::PathBuf::from(server.db.strip_prefix("surrealkv://").unwrap());
    let backup = store.with_file_name("backup");
    server.down();
    copy_tree(&store, &backup);
    server.up().await;

    let home = ScannerHome::new(&key);
    std::fs::write(home.path("log.jsonl"), heard(&users, start, 0..10)).unwrap();
    let source = format!("replay:{}", home.path("log.jsonl").display());
    let extra = ["--speed", "0", "--keep-running"]; // and a heartbeat every second
    let _scanner = home.spawn_run(&server.base, &source, &extra, "run.log");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let acked = loop {
        let st = home.status();
        if st["stats"]["sightingsAcked"] == 40 {
            break st["stats"]["batchesAcked"].as_u64().unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "{st}\n{}", home.log_text("run.log"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    server.down();
    std::fs::remove_dir_all(&store).unwrap();
    copy_tree(&backup, &store);
    server.up().await;
    // Taken again, not answered as replays: the store had lost them.
    eventually(Duration::from_secs(60), "the lost batches taken again", || {
        (home.status()["stats"]["batchesRestored"] == acked).then_some(())
    })
    .await;
    let attendance = server.attendance(&event).await;
    for u in &users {
        assert_eq!(attendance[u]["sightings"], 10, "{u}: {attendance:?}");
    }
}

/// The server takes a batch, its answer never reaches the scanner, and the
/// store then loses the batch in an unclean stop (here: put back to a copy
/// taken before). The scanner sends the batch again after the restart as any
/// unanswered batch, and since the store's epoch moved meanwhile, flagged
/// `resent`, so the server derives the event again rather than trusting rows
/// that may already hold it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_batch_the_store_lost_goes_again_flagged_resent() {
    let mut server = Server::start().await;
    let Crowd { event, key, users, start } = crowd(&server, "unanswered", '4').await;
    let home = ScannerHome::new(&key);
    std::fs::write(home.path("first.jsonl"), heard(&users, start, 0..5)).unwrap();
    std::fs::write(home.path("held.jsonl"), heard(&users, start, 5..10)).unwrap();
    std::fs::write(home.path("empty.jsonl"), "").unwrap();
    let replay = |name: &str| format!("replay:{}", home.path(name).display());
    let args = ["--speed", "0"];

    // One batch answered: the scanner knows the store's epoch.
    let status =
        home.spawn_run(&server.base, &replay("first.jsonl"), &args, "first.log").wait_for_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", home.log_text("first.log"));
    let store = std::path::PathBuf::from(server.db.strip_prefix("surrealkv://").unwrap());
    let backup = store.with_file_name("backup");
    server.down();
    copy_tree(&store, &backup);
    server.up().await;

    // The next batch is taken, but its answer is held back; the scanner dies.
    let hold = Arc::new(AtomicBool::new(true));
    let proxy = holding_proxy(server.port, hold.clone()).await;
    let mut scanner = home.spawn_run(&format!("http://127.0.0.1:{proxy}"), &replay("held.jsonl"), &args, "held.log");
    // Taken: the server counts its sightings (a read shows every batch at once).
    let counted = |rows: std::collections::BTreeMap<String, Value>| -> u64 {
        rows.values().map(|row| row["sightings"].as_u64().unwrap_or(0)).sum()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while counted(server.attendance(&event).await) <= 20 {
        assert!(tokio::time::Instant::now() < deadline, "the server never took the second batch");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scanner.kill9();
    let held = home.status()["stats"]["nextBatchId"].clone();
    assert!(held.is_string(), "unanswered, it is still in the outbox");

    // The store loses it.
    server.down();
    std::fs::remove_dir_all(&store).unwrap();
    copy_tree(&backup, &store);
    server.up().await;
    let status =
        home.spawn_run(&server.base, &replay("empty.jsonl"), &args, "after.log").wait_for_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", home.log_text("after.log"));
    let after = home.uploads("after.log");
    assert_eq!(after[0]["batch"], held, "{after:?}");
    assert_eq!((after[0]["resent"].clone(), after[0]["replayed"].clone()), (true.into(), false.into()), "{after:?}");
    let attendance = server.attendance(&event).await;
    for u in &users {
        assert_eq!(attendance[u]["sightings"], 10, "{u}: {attendance:?}");
    }
    hold.store(false, Ordering::SeqCst);
}
