//! `rollcall-scanner run`: the tasks of a running scanner and how they stop.
//!
//! ```text
//! source task ──mpsc──▶ pipeline task ──append (group commit)──▶ outbox ◀── uploader task
//!                          ▲  min RSSI                              ▲ depth
//!                 events refresher (activeEvents)             heartbeat task
//! ```
//!
//! - The **pipeline task** filters and coalesces, and every `commit_interval` appends
//!   the windows that closed to the outbox in one transaction, then wakes the uploader.
//!   When nothing is heard for a whole window it closes every window, so a quiet
//!   room still gets its last sightings out.
//! - The **events refresher** polls `activeEvents`, logs changes, and feeds the filter
//!   the events' `minRssi` unless `--min-rssi` was given.
//! - The **heartbeat task** sends `scannerHeartbeat` with the scanner's health, logs
//!   a one-line summary, and checks the clock against the server's time (see
//!   [`crate::clock`]).
//! - A **SIGHUP** task re-reads the API key file; a **watchdog** task pings
//!   systemd while the pipeline runs (see [`crate::service`]).
//!
//! The pipeline never stops on its own while the source runs: a commit the outbox
//! refuses (disk full) is held in memory and retried (see [`crate::backlog`]). If
//! it stops all the same, `run` fails saying so, rather than carrying on as if
//! the source had finished.
//!
//! On SIGTERM or Ctrl-C the source stops, the pipeline commits what it holds (what
//! the source had queued in the channel as well as the open windows), and the
//! uploader gets a moment to finish its request; a batch cut off mid-request stays
//! sealed and is resent, under the same id, on the next start. A replay or a simulation
//! (finite sources) makes the scanner exit once all it produced is delivered.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

mod events;
mod heartbeat;
mod pipeline_task;

use pipeline_task::{PipelineTask, pipeline_loop};
pub use pipeline_task::{events_min_rssi, max_window_age};

use crate::api::{ActiveEvent, ServerClient};
use crate::clock::{Clock, DEFAULT_TOLERANCE_MS, FLOOR_MS};
use crate::config::{RunSettings, ServerSettings};
use crate::health::BleHealth;
use crate::outbox::Outbox;
use crate::service::{self, Liveness};
use crate::sighting::Sighting;
use crate::source::ble::BtleplugSource;
use crate::source::replay::ReplaySource;
use crate::source::simulate::{SimConfig, SimulatedVenue};
use crate::source::{Source, SourceSpec};
use crate::uploader::{UploadError, Uploader, UploaderConfig, read_key};

/// Figures the pipeline shares with the heartbeat's summary line.
#[derive(Debug, Default)]
pub struct PipelineCounters {
    /// Advertisements taken in.
    pub seen: AtomicU64,
    /// Dropped by the RSSI filter.
    pub dropped: AtomicU64,
    /// Dropped as identifiers that may count for no active event.
    pub unregistered: AtomicU64,
    /// (identifier, window) pairs heard fewer than `min_hearings` times, not recorded.
    pub unconfirmed: AtomicU64,
    /// Coalesced sightings committed to the outbox.
    pub committed: AtomicU64,
    /// Sightings held in memory because the outbox refused a commit (disk full).
    pub held: AtomicU64,
    /// Sightings dropped, weakest first, while the outbox refused commits.
    pub dropped_storage: AtomicU64,
    /// Whether the last commit to the outbox failed.
    pub storage_failing: AtomicBool,
    /// Advertisements taken in over the last minute.
    pub adverts_per_minute: AtomicU64,
    /// Distinct identifiers heard over the last minute.
    pub devices_per_minute: AtomicU64,
    /// The pipeline's last commit tick, for systemd's watchdog.
    pub alive: Arc<Liveness>,
}

/// Builds the source `spec` names.
pub fn build_source(s: &RunSettings, ble_health: Arc<BleHealth>) -> Box<dyn Source> {
    match &s.source {
        SourceSpec::Ble => Box::new(BtleplugSource {
            watchdog: s.watchdog,
            adapter: s.adapter.clone(),
            give_up_after: s.ble_give_up_after,
            health: ble_health,
        }),
        SourceSpec::Replay(path) => Box::new(ReplaySource { path: path.clone(), speed: s.speed }),
        SourceSpec::Simulate(n) => {
            let venue = SimulatedVenue::new(SimConfig {
                attendees: *n,
                seed: s.sim.seed,
                start_ms: s.sim.start_ms,
                speed: s.speed,
                ad_interval_ms: s.sim.ad_interval_ms,
                rotating: s.sim.rotating.clone(),
            });
            match serde_json::to_string(&venue.plan) {
                Ok(truth) => println!("{truth}"),
                Err(e) => tracing::warn!("cannot print the simulation's ground truth: {e}"),
            }
            Box::new(venue)
        }
    }
}

/// A client for `server`, with the key read from its file.
pub fn client_for(server: &ServerSettings) -> anyhow::Result<ServerClient> {
    let key = read_key(&server.api_key_file)
        .with_context(|| format!("cannot read the API key from {}", server.api_key_file.display()))?;
    ServerClient::new(&server.server, key, server.http_timeout).map_err(anyhow::Error::from)
}

/// Runs the scanner until `shutdown` resolves, or, for a finite source without
/// `keep_running`, until everything it produced is delivered.
pub async fn run(settings: RunSettings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Checked before anything else opens it: a damaged file is moved aside and salvaged.
    let (pipeline_outbox, _recovery) = Outbox::open_or_recover(&settings.data_dir)?;
    let scanner_id = crate::identity::load_or_create(&settings.data_dir)?;
    let client = client_for(&settings.server)?.with_scanner_id(scanner_id.to_string());
    let uploader_outbox = Outbox::open(&settings.data_dir)?.keeping_acked(settings.server.keep_acked);
    let heartbeat_outbox = Outbox::open(&settings.data_dir)?;
    let depth = heartbeat_outbox.depth()?;
    let ble_health = Arc::new(BleHealth::default());
    let source = build_source(&settings, ble_health.clone());
    let finite = source.is_finite() && !settings.keep_running;
    tracing::info!(
        server = %client.endpoint(), data_dir = %settings.data_dir.display(), event = settings.event.as_deref().unwrap_or("(key's scope)"),
        "scanner {} ({scanner_id}) starting: {}; {depth} sightings waiting in the outbox", crate::VERSION, source.describe()
    );
    let reload_task = tokio::spawn(reload_key_on_sighup(client.clone(), settings.server.api_key_file.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(false);
    let (events_tx, events_rx) = watch::channel::<Option<Vec<ActiveEvent>>>(None);
    let (allowed_tx, allowed_rx) = watch::channel(None);
    let wake = Arc::new(Notify::new());
    let counters = Arc::new(PipelineCounters::default());
    let (tx, rx) = mpsc::channel::<Sighting>(8192);

    let mut source_task: JoinHandle<anyhow::Result<()>> = tokio::spawn(source.run(tx));
    let clock = Arc::new(Clock::new(FLOOR_MS, DEFAULT_TOLERANCE_MS));
    let pipeline_task = tokio::spawn(pipeline_loop(
        PipelineTask {
            outbox: pipeline_outbox,
            live_clock: settings.live_clock().then(|| clock.clone()),
            settings: settings.clone(),
            events: events_rx,
            allowed: allowed_rx,
            wake: wake.clone(),
            counters: counters.clone(),
        },
        rx,
        stop_rx.clone(),
    ));
    let events_task =
        tokio::spawn(events::refresh_events(client.clone(), settings.clone(), events_tx, allowed_tx, stop_rx.clone()));
    let heartbeat_task = tokio::spawn(
        heartbeat::Heartbeat {
            client: client.clone(),
            outbox: heartbeat_outbox,
            every: settings.heartbeat,
            counters: counters.clone(),
            clock: clock.clone(),
            ble: matches!(settings.source, SourceSpec::Ble).then(|| ble_health.clone()),
            scanner_id,
            data_dir: settings.data_dir.clone(),
        }
        .run(stop_rx.clone()),
    );
    let mut uploader = Uploader::new(
        uploader_outbox,
        client,
        UploaderConfig {
            batch_size: settings.server.batch_size,
            backoff_initial: settings.backoff_initial,
            backoff_max: settings.backoff_max,
            api_key_file: Some(settings.server.api_key_file.clone()),
            give_up_after: None,
            park_after_attempts: Some(settings.park_after_attempts),
            park_after: settings.park_after,
            bad_key_retry: settings.bad_key_retry,
            idle_epoch_check: Some(settings.heartbeat),
        },
        wake.clone(),
    );
    if settings.live_clock() {
        uploader = uploader.with_clock(clock.clone());
    }
    let mut uploader_task: JoinHandle<Result<u64, UploadError>> = {
        let stop = stop_rx.clone();
        let drain = drain_rx.clone();
        tokio::spawn(async move { uploader.run(stop, drain).await })
    };

    let watchdog_task = tokio::spawn(service::watchdog(counters.alive.clone()));
    service::ready();
    tokio::pin!(shutdown);
    let mut source_done = false;
    let mut pipeline_task = pipeline_task;
    let mut pipeline_done = false;
    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("stopping: committing what is held in memory");
                break Ok(());
            }
            res = &mut source_task, if !source_done => {
                source_done = true;
                match res {
                    // The channel is closed now; the pipeline commits everything and exits.
                    Ok(Ok(())) => tracing::info!("source finished"),
                    Ok(Err(e)) => break Err(e.context("source failed")),
                    Err(e) => break Err(anyhow::anyhow!("source task: {e}")),
                }
                if finite && pipeline_done {
                    let _ = drain_tx.send(true);
                }
            }
            // The pipeline ends well only once the source is done and the channel
            // drained (whichever of the two is seen first). A failure ends the run
            // and is said to be one, not taken for the end of the input.
            res = &mut pipeline_task, if !pipeline_done => {
                pipeline_done = true;
                match res {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(e.context("the pipeline failed")),
                    Err(e) => break Err(anyhow::anyhow!("pipeline task: {e}")),
                }
                if finite && source_done {
                    let _ = drain_tx.send(true);
                }
            }
            res = &mut uploader_task => {
                break match res {
                    Ok(Ok(n)) => match Outbox::open(&settings.data_dir).and_then(|o| o.stats()) {
                        Ok(st) if st.dead_batches > 0 => Err(anyhow::anyhow!(
                            "{n} batches delivered, but {} batches ({} sightings) were refused by the server and are \
                             kept in the outbox as dead (last reason: {}); `rollcall-scanner flush --retry-dead` \
                             sends them again",
                            st.dead_batches, st.dead_sightings, st.last_dead_reason.as_deref().unwrap_or("?")
                        )),
                        Ok(_) => { tracing::info!("all delivered ({n} batches in this run)"); Ok(()) }
                        Err(e) => Err(e.into()),
                    },
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(anyhow::anyhow!("uploader task: {e}")),
                };
            }
        }
    };

    // Stop everything: the source first, so the pipeline sees no more input.
    service::stopping();
    watchdog_task.abort();
    source_task.abort();
    let _ = stop_tx.send(true);
    if !pipeline_done {
        match pipeline_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("pipeline: {e:#}"),
            Err(e) => tracing::error!("pipeline task: {e}"),
        }
    }
    if !uploader_task.is_finished() && tokio::time::timeout(Duration::from_secs(3), &mut uploader_task).await.is_err() {
        tracing::info!("an upload was still in flight; its batch stays sealed and is resent on the next start");
        uploader_task.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), heartbeat_task).await;
    events_task.abort();
    reload_task.abort();
    outcome
}

/// Re-reads the API key file on every SIGHUP (`systemctl reload`) and hands the
/// key to every task's client; a rotated key takes effect without a restart, and
/// without waiting for the server to refuse the old one.
async fn reload_key_on_sighup(client: ServerClient, path: std::path::PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP, the key is re-read only when refused: {e}");
                return;
            }
        };
        while hup.recv().await.is_some() {
            match read_key(&path) {
                Ok(key) if key == client.api_key() => {
                    tracing::info!("SIGHUP: the API key in {} is unchanged", path.display())
                }
                Ok(key) => {
                    client.set_api_key(key);
                    tracing::info!("SIGHUP: re-read the API key from {}; using the new key", path.display());
                }
                Err(e) => {
                    tracing::error!("SIGHUP: cannot read the API key from {}: {e}; keeping the old one", path.display())
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (client, path);
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::config::{Cli, Command, FileConfig};
    use crate::pipeline::DEFAULT_GRACE;
    use std::sync::atomic::Ordering;

    fn settings(data_dir: &std::path::Path, source: &str, extra: &[&str]) -> RunSettings {
        let mut args = vec!["rollcall-scanner", "--data-dir", data_dir.to_str().unwrap(), "run"];
        args.extend(["--server", "http://127.0.0.1:9", "--api-key-file", "/dev/null", "--source", source]);
        args.extend(extra);
        let cli = Cli::parse_from(args);
        let Command::Run(run) = &cli.command else { unreachable!() };
        RunSettings::resolve(&cli, run, &FileConfig::default()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_stop_what_the_source_had_queued_is_committed_too() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path(), "ble", &["--window-secs", "60"]);
        let (tx, rx) = mpsc::channel(8192);
        // Each device twice (the radio needs two hearings in a window), and one heard once.
        for i in 0..2000 {
            let identifier = format!("id-{}", i % 1000);
            let s = Sighting { identifier, seen_at_ms: 1_000 + i, rssi: Some(-50), event_id: None };
            tx.send(s).await.unwrap();
        }
        {
            let s = Sighting { identifier: "once".into(), seen_at_ms: 5_000, rssi: Some(-50), event_id: None };
            tx.send(s).await.unwrap();
        }
        // Stopped before the pipeline took anything from the channel; the source's
        // sender is still alive, as when SIGTERM comes mid-scan.
        let (stop_tx, stop) = watch::channel(false);
        stop_tx.send(true).unwrap();
        let (_events_tx, events) = watch::channel(None);
        let (_allowed_tx, allowed) = watch::channel(None);
        let counters = Arc::new(PipelineCounters::default());
        let task = PipelineTask {
            outbox: Outbox::open(&settings.data_dir).unwrap(),
            settings: settings.clone(),
            events,
            allowed,
            wake: Arc::new(Notify::new()),
            counters: counters.clone(),
            live_clock: None,
        };
        pipeline_loop(task, rx, stop).await.unwrap();
        assert_eq!(Outbox::open(&settings.data_dir).unwrap().depth().unwrap(), 1000, "every queued sighting");
        assert_eq!(counters.seen.load(Ordering::Relaxed), 2001);
        assert_eq!(counters.unconfirmed.load(Ordering::Relaxed), 1, "the device heard once");
        assert!(tx.is_closed(), "the source is told to stop sending");
    }

    #[test]
    fn a_window_lives_at_most_its_length_plus_grace_stretched_for_slow_replays() {
        let dir = tempfile::tempdir().unwrap();
        let ble = settings(dir.path(), "ble", &["--window-secs", "10", "--speed", "0.5"]);
        assert_eq!(max_window_age(&ble), Duration::from_secs(10) + DEFAULT_GRACE);
        let slow = settings(dir.path(), "simulate:2", &["--window-secs", "10", "--speed", "0.5"]);
        assert_eq!(max_window_age(&slow), Duration::from_secs(20) + DEFAULT_GRACE);
        let fast = settings(dir.path(), "simulate:2", &["--window-secs", "10", "--speed", "0"]);
        assert_eq!(max_window_age(&fast), Duration::from_secs(10) + DEFAULT_GRACE);
    }
}
