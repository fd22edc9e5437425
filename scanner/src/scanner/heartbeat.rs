//! The heartbeat task: every `heartbeat_secs` it logs a `status` line, sends
//! `scannerHeartbeat`, and takes the server's time from the answer to check the
//! scanner's clock (see [`crate::clock`]); the pipeline applies a correction.
//! It beats at once, too, when the uploader waits for the server's time.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use super::PipelineCounters;
use crate::api::{ServerClient, scanner_heartbeat};
use crate::clock::{Clock, mono_ms};
use crate::health::{BleHealth, free_disk_bytes};
use crate::outbox::Outbox;
use crate::sighting::rfc3339_ms;

/// What the heartbeat task needs.
pub(super) struct Heartbeat {
    /// The server.
    pub client: ServerClient,
    /// Its own outbox connection (stats, rebasing).
    pub outbox: Outbox,
    /// How often.
    pub every: Duration,
    /// The pipeline's figures.
    pub counters: Arc<PipelineCounters>,
    /// The scanner's clock.
    pub clock: Arc<Clock>,
    /// The BLE source's health, when scanning BLE.
    pub ble: Option<Arc<BleHealth>>,
    /// The scanner's stable identity.
    pub scanner_id: Uuid,
    /// Where the outbox lives, for its free space.
    pub data_dir: PathBuf,
}

impl Heartbeat {
    /// Sends heartbeats and logs a summary line, until stopped (then one last heartbeat).
    pub(super) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut warned = false;
        loop {
            let stopping = *stop.borrow();
            let stats = match tokio::task::block_in_place(|| self.outbox.stats()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("reading the outbox: {e}");
                    Default::default()
                }
            };
            let counters = &self.counters;
            let get = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
            let free_mb = free_disk_bytes(&self.data_dir).map(|b| b / 1_000_000);
            let (restarts, adapter, background) = match &self.ble {
                Some(b) => (Some(b.restarts()), b.adapter_state(), Some(b.background_iphones().1)),
                None => (None, None, None),
            };
            tracing::info!(
                heard = get(&counters.seen),
                below_min_rssi = get(&counters.dropped),
                unregistered = get(&counters.unregistered),
                recorded = get(&counters.committed),
                adverts_per_minute = get(&counters.adverts_per_minute),
                devices_per_minute = get(&counters.devices_per_minute),
                iphones_in_background = background,
                heard_too_rarely = get(&counters.unconfirmed),
                outbox_depth = stats.depth,
                held_in_memory = get(&counters.held),
                dropped_disk_full = get(&counters.dropped_storage),
                dead_batches = stats.dead_batches,
                free_disk_mb = free_mb,
                clock = self.clock.state().as_str(),
                ble_restarts = restarts,
                adapter = adapter.as_deref(),
                last_upload = stats.last_upload_ms.map(rfc3339_ms).as_deref().unwrap_or("never"),
                "status"
            );
            crate::service::status(&format!(
                "{} adverts/min from {} devices{}; outbox {} waiting, {} dead; clock {}{}",
                get(&counters.adverts_per_minute),
                get(&counters.devices_per_minute),
                match background {
                    Some(n) if n > 0 => format!(", {n} iPhones with an app in the background"),
                    _ => String::new(),
                },
                stats.depth,
                stats.dead_batches,
                self.clock.state().as_str(),
                if counters.storage_failing.load(Ordering::Relaxed) {
                    format!("; OUTBOX REFUSES WRITES, {} held in memory", get(&counters.held))
                } else {
                    String::new()
                }
            ));
            let int = |n: u64| Some(i64::try_from(n).unwrap_or(i64::MAX));
            let input = scanner_heartbeat::ScannerHeartbeatInput {
                version: crate::VERSION.to_owned(),
                outbox_depth: i64::try_from(stats.depth).unwrap_or(i64::MAX),
                last_upload_at: stats.last_upload_ms.map(rfc3339_ms),
                clock: rfc3339_ms(self.clock.now_ms()),
                scanner_id: Some(self.scanner_id),
                health: Some(scanner_heartbeat::ScannerHealthInput {
                    adverts_per_minute: int(get(&counters.adverts_per_minute)),
                    devices_per_minute: int(get(&counters.devices_per_minute)),
                    ble_restarts: restarts.and_then(int),
                    adapter_state: adapter,
                    dead_batches: int(stats.dead_batches),
                    dead_sightings: int(stats.dead_sightings),
                    held_in_memory: int(get(&counters.held)),
                    dropped_sightings: int(get(&counters.dropped_storage)),
                    free_disk_mb: free_mb.and_then(int),
                    clock_state: Some(self.clock.state().as_str().to_owned()),
                }),
            };
            let sent = mono_ms();
            match self.client.heartbeat(input).await {
                Ok((server_ms, _skew)) => {
                    warned = false;
                    // The server stamped it somewhere between sending and answering.
                    let mono_ref = sent + (mono_ms() - sent) / 2;
                    // A correction, if needed, is applied by the pipeline (see `clock`).
                    self.clock.observe(server_ms, mono_ref);
                }
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!("heartbeat failed: {e}");
                }
                Err(_) => {}
            }
            if stopping {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.every.max(Duration::from_millis(100))) => {}
                _ = stop.changed() => {}
                // The uploader waits for the server's time before its first upload.
                _ = self.clock.server_time_wanted() => {}
            }
        }
    }
}
