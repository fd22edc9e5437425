//! Key trouble under a long-running scanner: a bare 401 (from a proxy, say) is
//! retried with the same key after a backoff instead of stopping uploads for good;
//! SIGHUP re-reads the key file without a restart; and every request carries the
//! scanner's stable identity, which does not change with the key.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::helpers::*;
use crate::proxy::Proxy;

/// A server with an active event around now and `ada` registered for it, and a
/// scanner home with a key for the event and `log.jsonl`, a replay log of one
/// sighting of her a minute ago.
async fn door(name: &str, ada: &str) -> (Server, String, ScannerHome) {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms() / 1000 * 1000;
    let event = server.active_event(name, &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    server.attendee(&format!("{name}@example.org"), ada, &event).await;
    let home = ScannerHome::new(&server.api_key(&event).await);
    let line = format!("{{\"bleUuid\":\"{ada}\",\"seenAt\":\"{}\",\"rssi\":-60}}\n", iso(now - 60_000));
    std::fs::write(home.path("log.jsonl"), line).unwrap();
    (server, event, home)
}

#[tokio::test]
async fn a_refused_key_is_retried_sighup_rereads_it_and_the_identity_stays() {
    let ada = "4b3e0000-0000-4000-8000-000000000001";
    let (server, event, home) = door("keys", ada).await;
    // The first three uploads meet a bare 401, as from a proxy having a bad minute.
    let refusals = Arc::new(AtomicUsize::new(0));
    let counter = refusals.clone();
    let proxy = Proxy::start(
        &server.base,
        Box::new(move |req, _| {
            (req.body.contains("SubmitSightings") && counter.fetch_add(1, Ordering::SeqCst) < 3)
                .then(|| (401, "Unauthorized".to_owned()))
        }),
    )
    .await;
    let mut run = home.spawn_run(
        &proxy.base,
        &format!("replay:{}", home.path("log.jsonl").display()),
        &["--speed", "0", "--keep-running", "--bad-key-retry-secs", "1"],
        "run.log",
    );
    let attendance = attendance_until(&server, &event, Duration::from_secs(60), |a| a.contains_key(ada)).await;
    let log = home.log_text("run.log");
    assert!(attendance.contains_key(ada), "delivered with the same key after the 401s: {log}");
    assert!(
        log.contains("the server refuses this scanner's API key") && log.contains("trying the refused API key again")
    );
    assert!(refusals.load(Ordering::SeqCst) >= 4);

    // Every request carried the scanner's identity, the one `status` shows.
    let id = home.status()["scannerId"].as_str().unwrap().to_owned();
    let requests = proxy.requests();
    assert!(requests.iter().all(|r| r.header("x-rollcall-scanner-id") == Some(id.as_str())), "{requests:?}");

    // Rotation: a new key in the file and SIGHUP; the process carries on with it.
    let rotated = server.api_key(&event).await;
    std::fs::write(home.path("api-key"), format!("{rotated}\n")).unwrap();
    let seen_before = proxy.requests().len();
    assert!(Command::new("kill").args(["-HUP", &run.pid().to_string()]).status().unwrap().success());
    eventually(Duration::from_secs(20), "a request with the rotated key", || {
        proxy.requests()[seen_before..]
            .iter()
            .any(|r| r.header("authorization") == Some(format!("ApiKey {rotated}").as_str()))
            .then_some(())
    })
    .await;
    assert!(run.running(), "SIGHUP does not stop the scanner");
    assert!(home.log_text("run.log").contains("SIGHUP: re-read the API key"));
    assert!(Command::new("kill").args(["-TERM", &run.pid().to_string()]).status().unwrap().success());
    assert!(run.wait_for_exit(Duration::from_secs(20)).success());
    assert_eq!(home.status()["scannerId"].as_str(), Some(id.as_str()), "the identity survives the rotation");
}

#[tokio::test]
async fn a_batch_whose_answer_was_lost_is_counted_once_after_a_key_rotation() {
    let ada = "4b3e0000-0000-4000-8000-000000000002";
    let (server, event, home) = door("rotation", ada).await;
    let old = std::fs::read_to_string(home.path("api-key")).unwrap().trim().to_owned();
    // The server applies every batch sent with the old key, but its answers never
    // come back: the batch stays sealed in the outbox, sent and unacknowledged.
    let old_auth = format!("ApiKey {old}");
    let proxy = Proxy::start_losing(
        &server.base,
        Box::new(|_, _| None),
        Box::new(move |req| req.body.contains("SubmitSightings") && req.header("authorization") == Some(&old_auth)),
    )
    .await;
    let mut run = home.spawn_run(
        &proxy.base,
        &format!("replay:{}", home.path("log.jsonl").display()),
        &["--speed", "0", "--keep-running"],
        "run.log",
    );
    let applied = attendance_until(&server, &event, Duration::from_secs(60), |a| a.contains_key(ada)).await;
    assert_eq!(applied.get(ada).map(|a| a["sightings"].clone()), Some(1.into()), "{}", home.log_text("run.log"));
    assert!(home.uploads("run.log").is_empty(), "no answer reached the scanner");

    // Rotation with the batch still in the outbox: the new key, and SIGHUP.
    let rotated = server.api_key(&event).await;
    std::fs::write(home.path("api-key"), format!("{rotated}\n")).unwrap();
    assert!(Command::new("kill").args(["-HUP", &run.pid().to_string()]).status().unwrap().success());
    let uploads = eventually(Duration::from_secs(60), "the batch acknowledged under the new key", || {
        Some(home.uploads("run.log")).filter(|u| !u.is_empty())
    })
    .await;
    assert_eq!(uploads[0]["replayed"], true, "answered as the batch already applied: {uploads:?}");
    let attendance = server.attendance(&event).await;
    assert_eq!(attendance[ada]["sightings"], 1, "counted once: {attendance:?}");
    assert!(Command::new("kill").args(["-TERM", &run.pid().to_string()]).status().unwrap().success());
    assert!(run.wait_for_exit(Duration::from_secs(20)).success());
}
