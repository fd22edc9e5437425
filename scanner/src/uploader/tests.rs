//! The uploader's own tests: waiting for a new key, and the backoff.

use super::*;

fn uploader(dir: &std::path::Path, client_key: &str) -> Uploader {
    let client = ServerClient::new("http://127.0.0.1:9", client_key.to_owned(), Duration::from_secs(1)).unwrap();
    Uploader::new(
        Outbox::open(&dir.join("data")).unwrap(),
        client,
        UploaderConfig {
            batch_size: 10,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            api_key_file: Some(dir.join("api-key")),
            give_up_after: None,
            park_after_attempts: None,
            park_after: Duration::ZERO,
            bad_key_retry: Duration::from_secs(3600),
            idle_epoch_check: None,
        },
        Arc::new(Notify::new()),
    )
}

#[tokio::test(start_paused = true)]
async fn a_key_fixed_before_the_refusal_arrived_is_taken_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // The request went out with `old`; the operator replaced the file meanwhile.
    let mut up = uploader(dir.path(), "old");
    std::fs::write(dir.path().join("api-key"), "new\n").unwrap();
    let (_stop_tx, mut stop) = watch::channel(false);
    let resumed = tokio::time::timeout(Duration::from_secs(600), up.wait_for_new_key(&mut stop, Duration::MAX)).await;
    assert!(matches!(resumed, Ok(KeyWait::NewKey)), "the new key in the file is used");
    assert_eq!(up.client.api_key(), "new");
}

#[tokio::test(start_paused = true)]
async fn a_refused_key_is_tried_again_after_the_long_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = uploader(dir.path(), "same");
    std::fs::write(dir.path().join("api-key"), "same\n").unwrap();
    let (_stop_tx, mut stop) = watch::channel(false);
    let started = tokio::time::Instant::now();
    let waited = up.wait_for_new_key(&mut stop, Duration::from_secs(300)).await;
    assert!(matches!(waited, KeyWait::RetrySame));
    assert!(started.elapsed() >= Duration::from_secs(300));
    // A key put in the client (SIGHUP) ends the wait too.
    let client = up.client.clone();
    let task =
        tokio::spawn(async move { matches!(up.wait_for_new_key(&mut stop, Duration::MAX).await, KeyWait::NewKey) });
    tokio::time::sleep(Duration::from_secs(3)).await;
    client.set_api_key("reloaded".into());
    assert!(tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap());
}

#[tokio::test(start_paused = true)]
async fn the_refused_key_is_not_taken_for_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = uploader(dir.path(), "old");
    std::fs::write(dir.path().join("api-key"), "old\n").unwrap();
    let (stop_tx, mut stop) = watch::channel(false);
    let waiting = tokio::time::timeout(Duration::from_secs(60), up.wait_for_new_key(&mut stop, Duration::MAX)).await;
    assert!(waiting.is_err(), "still waiting: the file holds the refused key");
    let task = tokio::spawn(async move {
        let resumed = up.wait_for_new_key(&mut stop, Duration::MAX).await;
        (matches!(resumed, KeyWait::NewKey), up.client.api_key())
    });
    tokio::time::sleep(Duration::from_secs(30)).await;
    std::fs::write(dir.path().join("api-key"), "rotated\n").unwrap();
    let (resumed, key) = tokio::time::timeout(Duration::from_secs(600), task).await.unwrap().unwrap();
    assert_eq!((resumed, key.as_str()), (true, "rotated"));
    drop(stop_tx);
}

#[test]
fn backoff_grows_to_the_cap_with_jitter() {
    let cfg = UploaderConfig {
        batch_size: 10,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        api_key_file: None,
        give_up_after: None,
        park_after_attempts: None,
        park_after: Duration::ZERO,
        bad_key_retry: Duration::from_secs(3600),
        idle_epoch_check: None,
    };
    for n in 1..30 {
        let d = backoff(&cfg, n);
        let cap = Duration::from_millis(100 * (1u64 << (n - 1).min(16))).min(Duration::from_secs(2));
        assert!(d >= Duration::from_millis(50) && d <= cap, "attempt {n}: {d:?}");
    }
    let many: std::collections::HashSet<_> = (0..20).map(|_| backoff(&cfg, 8)).collect();
    assert!(many.len() > 1, "jittered");
}
