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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

mod events;
mod heartbeat;

use crate::api::{ActiveEvent, ServerClient};
use crate::backlog::Backlog;
use crate::clock::{Clock, DEFAULT_TOLERANCE_MS, FLOOR_MS, boot_id, mono_ms};
use crate::config::{RunSettings, ServerSettings};
use crate::health::{BleHealth, RateMeter};
use crate::outbox::{Outbox, Stamp};
use crate::pipeline::{Coalescer, DEFAULT_GRACE, Filter, Pipeline};
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
    let uploader_outbox = Outbox::open(&settings.data_dir)?;
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
            wake: wake.clone(),
            counters: counters.clone(),
        },
        rx,
        stop_rx.clone(),
    ));
    let events_task =
        tokio::spawn(events::refresh_events(client.clone(), settings.clone(), events_tx, stop_rx.clone()));
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

/// What the pipeline task works with.
struct PipelineTask {
    /// Its own outbox connection.
    outbox: Outbox,
    /// The settings (window, commit interval, filter).
    settings: RunSettings,
    /// The active events, for the filter's `minRssi`.
    events: watch::Receiver<Option<Vec<ActiveEvent>>>,
    /// Woken after each commit: the uploader.
    wake: Arc<Notify>,
    /// Figures for the status line and the heartbeat.
    counters: Arc<PipelineCounters>,
    /// For a source that stamps sightings with this machine's clock (BLE): the
    /// clock, whose correction is applied to them, and by which they are stamped
    /// in the outbox with this boot's monotonic time (see [`crate::clock`]).
    live_clock: Option<Arc<Clock>>,
}

/// Filter, coalesce, group-commit.
async fn pipeline_loop(
    task: PipelineTask,
    mut rx: mpsc::Receiver<Sighting>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let PipelineTask { mut outbox, settings, events, wake, counters, live_clock } = task;
    // A live sighting gets the clock's correction.
    let correct = |mut s: Sighting| {
        if let Some(clock) = &live_clock {
            s.seen_at_ms = s.seen_at_ms.saturating_add(clock.offset_ms());
        }
        s
    };
    let window_ms = i64::try_from(settings.window.as_millis()).unwrap_or(i64::MAX);
    let mut pipeline = Pipeline::new(Filter { min_rssi: settings.min_rssi }, window_ms, settings.event.clone());
    pipeline.coalescer = Coalescer::with_max_age(window_ms, max_window_age(&settings));
    let mut rewinds = 0;
    let mut tick = tokio::time::interval(settings.commit_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = tokio::time::Instant::now();
    let mut backlog = Backlog::new(settings.max_held);
    let mut rates = RateMeter::default();
    let mut last_complaint: Option<tokio::time::Instant> = None;
    // Commits what closed, after whatever an earlier commit could not write. A
    // failed commit keeps its sightings in the backlog (see `backlog`); the error
    // is returned only at the end, when nothing will retry it.
    // `wall_shift`: how far the clock that stamped `out` was from the clock now
    // (after a step of the wall clock), for their monotonic stamps.
    let mut commit = |outbox: &mut Outbox,
                      pipeline: &mut Pipeline,
                      out: Vec<Sighting>,
                      last: bool,
                      wall_shift: i64|
     -> anyhow::Result<()> {
        counters.seen.store(pipeline.seen, Ordering::Relaxed);
        counters.dropped.store(pipeline.dropped, Ordering::Relaxed);
        if out.is_empty() && backlog.is_empty() {
            return Ok(());
        }
        backlog.hold(out);
        let batch = backlog.take();
        let stamp = live_clock.as_ref().and_then(|clock| {
            Some(Stamp { boot_id: boot_id()?.to_owned(), mono_ms: mono_ms(), wall_ms: clock.now_ms() + wall_shift })
        });
        let result = tokio::task::block_in_place(|| outbox.append_stamped(&batch, stamp.as_ref()));
        let n = batch.len();
        match result {
            Ok(()) => {
                counters.committed.fetch_add(n as u64, Ordering::Relaxed);
                if counters.storage_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("the outbox takes writes again: committed {n} sightings held in memory");
                }
                backlog.committed();
                wake.notify_one();
            }
            Err(e) => {
                backlog.put_back(batch);
                let first = !counters.storage_failing.swap(true, Ordering::Relaxed);
                if last {
                    counters.held.store(backlog.len() as u64, Ordering::Relaxed);
                    anyhow::bail!(
                        "{} sightings held in memory could not be written to the outbox and are lost: {e}",
                        backlog.len()
                    );
                }
                if first || last_complaint.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    last_complaint = Some(tokio::time::Instant::now());
                    tracing::error!(
                        held = backlog.len(),
                        "cannot write to the outbox (disk full?): {e}; holding the sightings in memory and \
                         retrying every commit interval; scanning and uploading go on"
                    );
                }
            }
        }
        counters.held.store(backlog.len() as u64, Ordering::Relaxed);
        counters.dropped_storage.store(backlog.dropped, Ordering::Relaxed);
        Ok(())
    };
    loop {
        tokio::select! {
            s = rx.recv() => match s {
                Some(s) => {
                    last_heard = tokio::time::Instant::now();
                    rates.heard(&s.identifier, last_heard.into_std());
                    // NTP setting a clock not yet checked: what is in memory was
                    // stamped by the old clock; commit it, then rebase it all.
                    if let Some(r) = live_clock.as_ref().and_then(|c| c.check_step()) {
                        let out = pipeline.coalescer.drain_all();
                        commit(&mut outbox, &mut pipeline, out, false, -r.step_ms)?;
                        rebase_outbox(&mut outbox, &r, false);
                    }
                    pipeline.push(correct(s));
                }
                None => {
                    let out = pipeline.coalescer.drain_all();
                    return commit(&mut outbox, &mut pipeline, out, true, 0);
                }
            },
            _ = tick.tick() => {
                counters.alive.touch();
                // The heartbeat found the clock wrong: commit what is in memory
                // (stamped by the old clock), rebase it all, then correct.
                if let Some(clock) = &live_clock
                    && let Some(r) = clock.take_pending()
                {
                    let out = pipeline.coalescer.drain_all();
                    commit(&mut outbox, &mut pipeline, out, false, 0)?;
                    if rebase_outbox(&mut outbox, &r, true) {
                        clock.corrected(&r);
                    }
                }
                let (adverts, devices) = rates.rates(std::time::Instant::now());
                counters.adverts_per_minute.store(adverts, Ordering::Relaxed);
                counters.devices_per_minute.store(devices, Ordering::Relaxed);
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
                commit(&mut outbox, &mut pipeline, out, false, 0)?;
            }
            _ = stop.changed() => {
                // The source is stopped: take what it had queued in the channel too.
                rx.close();
                while let Some(s) = rx.recv().await {
                    pipeline.push(correct(s));
                }
                let out = pipeline.coalescer.drain_all();
                return commit(&mut outbox, &mut pipeline, out, true, 0);
            }
        }
    }
}

/// Rebases the pending sightings of this boot on `r` (the server's time, or the
/// wall clock just set) and says so. Returns false if the outbox could not be
/// written (the heartbeat's next answer tries again).
fn rebase_outbox(outbox: &mut Outbox, r: &crate::clock::Reference, from_server: bool) -> bool {
    let Some(boot) = boot_id() else {
        tracing::warn!("the clock is wrong, and without a boot id the sightings cannot be rebased: check NTP");
        return true;
    };
    match tokio::task::block_in_place(|| outbox.rebase(boot, r.server_ms, r.mono_ms, DEFAULT_TOLERANCE_MS)) {
        Ok((rebased, other_boots)) => {
            let earlier = if other_boots > 0 {
                format!("; {other_boots} sightings from an earlier boot keep their times")
            } else {
                String::new()
            };
            if from_server {
                let off = r.offset_ms as f64 / 1000.0;
                tracing::warn!(
                    rebased,
                    offset_ms = r.offset_ms,
                    "this scanner's clock is {:.1} s {} the server's (no NTP?): rebased {rebased} sightings waiting \
                     in the outbox on the server's time, and stamping new ones with the corrected time{earlier}",
                    off.abs(),
                    if off > 0.0 { "behind" } else { "ahead of" }
                );
            } else if rebased > 0 {
                tracing::warn!(
                    rebased,
                    "rebased {rebased} sightings waiting in the outbox on the clock just set{earlier}"
                );
            }
            true
        }
        Err(e) => {
            tracing::error!("cannot rebase the outbox on the right time (trying again at the next heartbeat): {e}");
            false
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
        let task = PipelineTask {
            outbox: Outbox::open(&settings.data_dir).unwrap(),
            settings: settings.clone(),
            events,
            wake: Arc::new(Notify::new()),
            counters: counters.clone(),
            live_clock: None,
        };
        pipeline_loop(task, rx, stop).await.unwrap();
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
