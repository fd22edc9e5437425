//! A full disk: the outbox refuses commits for a while. The scanner keeps what it
//! could not commit in memory, keeps running, and writes it all once there is room
//! again; nothing is lost and the process never dies of it.
//!
//! The "disk" is the scanner's own file-size limit (`prlimit --fsize`, util-linux),
//! set on the running process and lifted again: every write that would grow a file
//! past it fails, as on a full SD card. No root is needed. The scanner runs under
//! `sh -c 'trap "" XFSZ; exec …'` so that the kernel's SIGXFSZ is ignored and the
//! write fails with an error instead of killing it, and its log goes through a pipe.

use std::process::Command;
use std::time::Duration;

use crate::helpers::*;

fn prlimit_fsize(pid: u32, limit: &str) {
    let out = Command::new("prlimit")
        // The soft limit only: raising it again needs no privilege.
        .args(["--pid", &pid.to_string(), &format!("--fsize={limit}:")])
        .output()
        .expect("prlimit runs (util-linux)");
    assert!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test]
async fn a_full_disk_holds_sightings_in_memory_and_loses_none() {
    let mut server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event("Full disk", &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let users: Vec<String> = (0..3).map(|i| format!("d15cf011-0000-4000-8000-00000000000{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        server.attendee(&format!("disk{i}@example.org"), u, &event).await;
    }
    let key = server.api_key(&event).await;
    let home = ScannerHome::new(&key);
    let fifo = home.path("live.jsonl");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // Uploads would free room by themselves: the server is away while the disk is full.
    server.down();

    let start = (now - 20 * 60_000) / 10_000 * 10_000;
    let window = |w: i64| -> String {
        users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                format!("{{\"bleUuid\":\"{u}\",\"seenAt\":\"{}\",\"rssi\":-60}}\n", iso(start + w * 10_000 + i as i64))
            })
            .collect()
    };
    let mut run = home.spawn_run_piped(
        &["sh", "-c", "trap '' XFSZ; exec \"$0\" \"$@\""],
        &[],
        &server.base,
        &format!("replay:{}", fifo.display()),
        &["--speed", "0", "--backoff-initial-ms", "100"],
        "run.log",
    );
    let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let mut feed = |text: String| {
        std::io::Write::write_all(&mut pipe, text.as_bytes()).unwrap();
        std::io::Write::flush(&mut pipe).unwrap();
    };
    // The first window, then the next, which closes it: three sightings committed.
    feed(window(0) + &window(1));
    eventually(Duration::from_secs(30), "the first window in the outbox", || {
        (home.status()["stats"]["depth"] == 3).then_some(())
    })
    .await;

    // The disk is full: no file of the scanner's may grow any more.
    let wal = home.path("data/outbox.sqlite3-wal");
    let db = home.path("data/outbox.sqlite3");
    prlimit_fsize(run.pid(), &file_len(&wal).max(file_len(&db)).to_string());
    for w in 2..8 {
        feed(window(w));
    }
    eventually(Duration::from_secs(30), "the scanner to say the outbox refuses writes", || {
        home.log_text("run.log").contains("cannot write to the outbox").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(run.running(), "the scanner is still running: {}", home.log_text("run.log"));
    assert_eq!(home.status()["stats"]["depth"], 3, "nothing more reached the disk");
    let log = home.log_text("run.log");
    assert!(!log.contains("source finished"), "{log}");

    // Room again: what was held is committed, then delivered once the server is back.
    prlimit_fsize(run.pid(), "unlimited");
    eventually(Duration::from_secs(30), "the held sightings in the outbox", || {
        (home.status()["stats"]["depth"] == 3 * 7).then_some(())
    })
    .await;
    assert!(home.log_text("run.log").contains("the outbox takes writes again"));
    server.up().await;
    feed(window(8));
    drop(pipe);
    let status = run.wait_for_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", home.log_text("run.log"));
    let uploads = home.uploads("run.log");
    assert_eq!(sum(&uploads, "sightings"), 3 * 9);
    let attendance = server.attendance(&event).await;
    for u in &users {
        assert_eq!(attendance[u]["sightings"], 9, "{u}: every window, none lost");
    }
}
