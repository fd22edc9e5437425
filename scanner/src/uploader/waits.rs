//! What the uploader waits for before it sends: a key other than the one the
//! server refused, and, before a batch first goes out, the server's time.

use std::time::Duration;

use tokio::sync::watch;

use super::{Uploader, backoff};
use crate::clock::rebase_outbox;

/// How long the uploader has waited for the server's time, and when it asks next.
#[derive(Debug, Default)]
pub(super) struct ClockWait {
    /// Since when (`None`: not waiting).
    since: Option<tokio::time::Instant>,
    /// How often it asked.
    asks: u32,
    /// When to ask again.
    next_ask: Option<tokio::time::Instant>,
}

/// How waiting for a usable key ended.
pub(super) enum KeyWait {
    /// Told to stop.
    Stopped,
    /// The key file (or a SIGHUP) brought another key.
    NewKey,
    /// The long backoff is over: try the refused key again (a proxy's 401 may pass).
    RetrySame,
}

impl Uploader {
    /// Whether a batch never sent must wait for the server's time (see
    /// [`crate::clock`]). If so, asks the heartbeat for it (at a backoff, while
    /// the server is out of reach; a new key in the key file is taken then too),
    /// says so once, and waits a moment. Once the pipeline is done (`drained`),
    /// nobody else applies a correction the heartbeat found: then the uploader
    /// rebases the outbox itself.
    pub(super) async fn held_for_clock(&mut self, stop: &mut watch::Receiver<bool>, drained: bool) -> bool {
        let Some(clock) = self.clock.clone() else { return false };
        let now = tokio::time::Instant::now();
        if clock.may_send() {
            if let Some(since) = self.clock_wait.since.take() {
                tracing::info!(
                    "the clock is checked against the server's ({}): uploading (held for {:.1} s)",
                    clock.state().as_str(),
                    now.duration_since(since).as_secs_f64()
                );
            }
            return false;
        }
        if drained && let Some(r) = clock.take_pending() {
            if rebase_outbox(&mut self.outbox, &r, true) {
                clock.corrected(&r);
            }
            return true;
        }
        if self.clock_wait.since.is_none() {
            self.clock_wait = ClockWait { since: Some(now), ..ClockWait::default() };
            tracing::info!(
                "holding the first upload until the server's time is known (clock {}), so that no batch goes out \
                 stamped by a wrong clock",
                clock.state().as_str()
            );
        }
        if self.clock_wait.next_ask.is_none_or(|at| now >= at) {
            self.clock_wait.asks = self.clock_wait.asks.saturating_add(1);
            self.clock_wait.next_ask = Some(now + backoff(&self.cfg, self.clock_wait.asks));
            clock.want_server_time();
            // The heartbeat may be refused for a bad key: take a new one from
            // the file meanwhile, as after a refused upload.
            if let Some(path) = &self.cfg.api_key_file
                && let Ok(key) = read_key(path)
                && key != self.client.api_key()
            {
                tracing::info!("the API key file holds a new key; using it");
                self.client.set_api_key(key);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => {}
        }
        true
    }

    /// Waits until the key file holds a key other than the one the server just
    /// refused, or a SIGHUP put another key in the client, or `retry` has passed.
    /// The file may have been fixed while the refused request was in flight, so it
    /// is read at once, then every few seconds.
    pub(super) async fn wait_for_new_key(&mut self, stop: &mut watch::Receiver<bool>, retry: Duration) -> KeyWait {
        let path = self.cfg.api_key_file.clone();
        let refused = self.client.api_key();
        let deadline = tokio::time::Instant::now().checked_add(retry);
        let mut tick = 0u32;
        loop {
            if self.client.api_key() != refused {
                tracing::info!("the API key was re-read; resuming uploads");
                return KeyWait::NewKey;
            }
            if tick.is_multiple_of(5)
                && let Some(path) = &path
                && let Ok(key) = read_key(path)
                && key != refused
            {
                tracing::info!("the API key file holds a new key; resuming uploads");
                self.client.set_api_key(key);
                return KeyWait::NewKey;
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                tracing::info!("trying the refused API key again");
                return KeyWait::RetrySame;
            }
            tick = tick.wrapping_add(1);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return KeyWait::Stopped,
            }
        }
    }
}

/// Reads an API key from a file (surrounding whitespace ignored).
pub fn read_key(path: &std::path::Path) -> std::io::Result<String> {
    let key = std::fs::read_to_string(path)?.trim().to_owned();
    if key.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is empty", path.display())));
    }
    Ok(key)
}
