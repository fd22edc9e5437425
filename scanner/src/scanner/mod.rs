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
//! - The **heartbeat task** sends `scannerHeartbeat` and logs a one-line summary.
//!
//! On SIGTERM or Ctrl-C the source stops, the pipeline commits what it holds (what
//! the source had queued in the channel as well as the open windows), and the
//! uploader gets a moment to finish its request; a batch cut off mid-request stays
//! sealed and is resent, under the same id, on the next start. A replay or a simulation
//! (finite sources) makes the scanner exit once all it produced is delivered.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::{ActiveEvent, ServerClient, scanner_heartbeat};
use crate::config::{RunSettings, ServerSettings};
use crate::outbox::Outbox;
use crate::pipeline::{Coalescer, DEFAULT_GRACE, Filter, Pipeline};
use crate::sighting::{Sighting, now_ms, rfc3339_ms};
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
    /// Coalesced sightings committed to the outbox.
    pub committed: AtomicU64,
}

/// Builds the source `spec` names.
pub fn build_source(s: &RunSettings) -> Box<dyn Source> {
    match &s.source {
        SourceSpec::Ble => Box::new(BtleplugSource {
            watchdog: s.watchdog,
            adapter: s.adapter.clone(),
            give_up_after: s.ble_give_up_after,
        }),
        SourceSpec::Replay(path) => Box::new(ReplaySource { path: path.clone(), speed: s.speed }),
        SourceSpec::Simulate(n) => {
            let venue = SimulatedVenue::new(SimConfig {
                attendees: *n,
                seed: s.sim.seed,
                start_ms: s.sim.start_ms,
                speed: s.speed,
                ad_interval_ms: s.sim.ad_interval_ms,
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
    let client = client_for(&settings.server)?;
    let pipeline_outbox = Outbox::open(&settings.data_dir)?;
    let uploader_outbox = Outbox::open(&settings.data_dir)?;
    let heartbeat_outbox = Outbox::open(&settings.data_dir)?;
    let depth = heartbeat_outbox.depth()?;
    let source = build_source(&settings);
    let finite = source.is_finite() && !settings.keep_running;
    tracing::info!(
        server = %client.endpoint(), data_dir = %settings.data_dir.display(), event = settings.event.as_deref().unwrap_or("(key's scope)"),
        "scanner {} starting: {}; {depth} sightings waiting in the outbox", crate::VERSION, source.describe()
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(false);
    let (events_tx, events_rx) = watch::channel::<Option<Vec<ActiveEvent>>>(None);
    let wake = Arc::new(Notify::new());
    let counters = Arc::new(PipelineCounters::default());
    let (tx, rx) = mpsc::channel::<Sighting>(8192);

    let mut source_task: JoinHandle<anyhow::Result<()>> = tokio::spawn(source.run(tx));
    let pipeline_task = tokio::spawn(pipeline_loop(
        rx,
        pipeline_outbox,
        settings.clone(),
        events_rx,
        stop_rx.clone(),
        wake.clone(),
        counters.clone(),
    ));
    let events_task = tokio::spawn(refresh_events(client.clone(), settings.clone(), events_tx, stop_rx.clone()));
    let heartbeat_task = tokio::spawn(heartbeat_loop(
        client.clone(),
        heartbeat_outbox,
        settings.heartbeat,
        counters.clone(),
        stop_rx.clone(),
    ));
    let mut uploader = Uploader::new(
        uploader_outbox,
        client,
        UploaderConfig {
            batch_size: settings.server.batch_size,
            backoff_initial: settings.backoff_initial,
            backoff_max: settings.backoff_max,
            api_key_file: Some(settings.server.api_key_file.clone()),
            give_up_after: None,
        },
        wake.clone(),
    );
    let mut uploader_task: JoinHandle<Result<u64, UploadError>> = {
        let stop = stop_rx.clone();
        let drain = drain_rx.clone();
        tokio::spawn(async move { uploader.run(stop, drain).await })
    };

    tokio::pin!(shutdown);
    let mut source_done = false;
    let mut pipeline_task = Some(pipeline_task);
    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("stopping: committing what is held in memory");
                break Ok(());
            }
            res = &mut source_task, if !source_done => {
                source_done = true;
                match res {
                    Ok(Ok(())) => tracing::info!("source finished"),
                    Ok(Err(e)) => break Err(e.context("source failed")),
                    Err(e) => break Err(anyhow::anyhow!("source task: {e}")),
                }
                // The channel is closed now; the pipeline commits everything and exits.
                if let Some(p) = pipeline_task.take() {
                    p.await.context("pipeline task")??;
                }
                if finite {
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
    source_task.abort();
    let _ = stop_tx.send(true);
    if let Some(p) = pipeline_task.take() {
        match p.await {
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
    outcome
}

/// Filter, coalesce, group-commit.
async fn pipeline_loop(
    mut rx: mpsc::Receiver<Sighting>,
    mut outbox: Outbox,
    settings: RunSettings,
    events: watch::Receiver<Option<Vec<ActiveEvent>>>,
    mut stop: watch::Receiver<bool>,
    wake: Arc<Notify>,
    counters: Arc<PipelineCounters>,
) -> anyhow::Result<()> {
    let window_ms = i64::try_from(settings.window.as_millis()).unwrap_or(i64::MAX);
    let mut pipeline = Pipeline::new(Filter { min_rssi: settings.min_rssi }, window_ms, settings.event.clone());
    pipeline.coalescer = Coalescer::with_max_age(window_ms, max_window_age(&settings));
    let mut rewinds = 0;
    let mut tick = tokio::time::interval(settings.commit_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = tokio::time::Instant::now();
    let mut commit = |pipeline: &mut Pipeline, out: Vec<Sighting>| -> anyhow::Result<()> {
        counters.seen.store(pipeline.seen, Ordering::Relaxed);
        counters.dropped.store(pipeline.dropped, Ordering::Relaxed);
        if out.is_empty() {
            return Ok(());
        }
        tokio::task::block_in_place(|| outbox.append(&out))?;
        counters.committed.fetch_add(out.len() as u64, Ordering::Relaxed);
        wake.notify_one();
        Ok(())
    };
    loop {
        tokio::select! {
            s = rx.recv() => match s {
                Some(s) => {
                    pipeline.push(s);
                    last_heard = tokio::time::Instant::now();
                }
                None => {
                    let out = pipeline.coalescer.drain_all();
                    return commit(&mut pipeline, out);
                }
            },
            _ = tick.tick() => {
                if settings.min_rssi.is_none() {
                    pipeline.filter.min_rssi = events_min_rssi(events.borrow().as_deref(), settings.event.as_deref());
                }
                if pipeline.coalescer.rewinds != rewinds {
                    rewinds = pipeline.coalescer.rewinds;
                    tracing::warn!(
                        "sightings arrived far behind earlier ones: the clock went back (NTP?) or the input is out \
                         of order; windows are closed by their age until the time catches up"
                    );
                }
                let out = if last_heard.elapsed() >= settings.window {
                    pipeline.coalescer.drain_all()
                } else {
                    pipeline.coalescer.drain_closed()
                };
                commit(&mut pipeline, out)?;
            }
            _ = stop.changed() => {
                // The source is stopped: take what it had queued in the channel too.
                rx.close();
                while let Some(s) = rx.recv().await {
                    pipeline.push(s);
                }
                let out = pipeline.coalescer.drain_all();
                return commit(&mut pipeline, out);
            }
        }
    }
}

/// How long a coalescing window may stay open on the monotonic clock: its length
/// plus a grace, stretched when a replay or simulation runs slower than real time.
pub fn max_window_age(settings: &RunSettings) -> Duration {
    let finite = !matches!(settings.source, SourceSpec::Ble);
    let window = if finite && settings.speed > 0.0 && settings.speed < 1.0 {
        settings.window.div_f64(settings.speed)
    } else {
        settings.window
    };
    window.saturating_add(DEFAULT_GRACE)
}

/// The filter's threshold from the active events: the pinned event's `minRssi`, or
/// the weakest among those in scope (a sighting may count for any of them).
pub fn events_min_rssi(events: Option<&[ActiveEvent]>, pinned: Option<&str>) -> Option<i16> {
    let events = events?;
    let relevant = events.iter().filter(|e| pinned.is_none_or(|p| e.id == p));
    relevant.map(|e| e.policy.min_rssi).min().and_then(|v| i16::try_from(v).ok())
}

/// Polls `activeEvents` and publishes changes.
async fn refresh_events(
    client: ServerClient,
    settings: RunSettings,
    tx: watch::Sender<Option<Vec<ActiveEvent>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        match client.active_events().await {
            Ok(events) => {
                if failing {
                    tracing::info!("the server answers again");
                    failing = false;
                }
                let changed = tx.borrow().as_ref() != Some(&events);
                if changed {
                    let names: Vec<String> = events.iter().map(|e| format!("{} ({})", e.name, e.id)).collect();
                    tracing::info!(
                        "active events in this key's scope: {}",
                        if names.is_empty() { "none".into() } else { names.join(", ") }
                    );
                    if let Some(pinned) = &settings.event
                        && !events.iter().any(|e| &e.id == pinned)
                    {
                        tracing::warn!(
                            "the pinned event {pinned} is not active in this key's scope: the server will not count its sightings until it is"
                        );
                    }
                    let _ = tx.send(Some(events));
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot refresh active events (sightings are still recorded): {e}");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.events_refresh.max(Duration::from_millis(100))) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Sends heartbeats and logs a summary line, until stopped (then one last heartbeat).
async fn heartbeat_loop(
    client: ServerClient,
    outbox: Outbox,
    every: Duration,
    counters: Arc<PipelineCounters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut warned = false;
    loop {
        let stopping = *stop.borrow();
        let stats = match tokio::task::block_in_place(|| outbox.stats()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("reading the outbox: {e}");
                Default::default()
            }
        };
        tracing::info!(
            heard = counters.seen.load(Ordering::Relaxed),
            below_min_rssi = counters.dropped.load(Ordering::Relaxed),
            recorded = counters.committed.load(Ordering::Relaxed),
            outbox_depth = stats.depth,
            dead_batches = stats.dead_batches,
            last_upload = stats.last_upload_ms.map(rfc3339_ms).as_deref().unwrap_or("never"),
            "status"
        );
        let input = scanner_heartbeat::ScannerHeartbeatInput {
            version: crate::VERSION.to_owned(),
            outbox_depth: i64::try_from(stats.depth).unwrap_or(i64::MAX),
            last_upload_at: stats.last_upload_ms.map(rfc3339_ms),
            clock: rfc3339_ms(now_ms()),
        };
        match client.heartbeat(input).await {
            Ok(skew) => {
                warned = false;
                if skew.abs() > 5_000 {
                    tracing::warn!("this scanner's clock is {:.1} s off the server's: check NTP", skew as f64 / 1000.0);
                }
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
            _ = tokio::time::sleep(every.max(Duration::from_millis(100))) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::config::{Cli, Command, FileConfig};

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
        for i in 0..1000 {
            let s = Sighting { identifier: format!("id-{i}"), seen_at_ms: 1_000 + i, rssi: Some(-50), event_id: None };
            tx.send(s).await.unwrap();
        }
        // Stopped before the pipeline took anything from the channel; the source's
        // sender is still alive, as when SIGTERM comes mid-scan.
        let (stop_tx, stop) = watch::channel(false);
        stop_tx.send(true).unwrap();
        let (_events_tx, events) = watch::channel(None);
        let counters = Arc::new(PipelineCounters::default());
        let outbox = Outbox::open(&settings.data_dir).unwrap();
        pipeline_loop(rx, outbox, settings.clone(), events, stop, Arc::new(Notify::new()), counters.clone())
            .await
            .unwrap();
        assert_eq!(Outbox::open(&settings.data_dir).unwrap().depth().unwrap(), 1000, "every queued sighting");
        assert_eq!(counters.seen.load(Ordering::Relaxed), 1000);
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
