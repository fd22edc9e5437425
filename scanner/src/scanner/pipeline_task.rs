//! The pipeline task: filter, coalesce, and group-commit to the outbox, holding
//! in memory what the outbox refuses (see [`crate::backlog`]), and applying the
//! clock's corrections to live sightings (see [`crate::clock`]): when the
//! heartbeat finds the clock wrong, or the wall clock is set while unchecked, it
//! commits what it holds, rebases the outbox, and corrects from then on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};

use super::PipelineCounters;
use crate::api::ActiveEvent;
use crate::backlog::Backlog;
use crate::clock::{Clock, boot_id, mono_ms, rebase_outbox};
use crate::config::RunSettings;
use crate::health::RateMeter;
use crate::outbox::{Outbox, Stamp};
use crate::pipeline::{Coalescer, DEFAULT_GRACE, Filter, Pipeline};
use crate::registered::Allowed;
use crate::sighting::Sighting;
use crate::source::SourceSpec;

/// What the pipeline task works with.
pub(super) struct PipelineTask {
    /// Its own outbox connection.
    pub outbox: Outbox,
    /// The settings (window, commit interval, filter).
    pub settings: RunSettings,
    /// The active events, for the filter's `minRssi`.
    pub events: watch::Receiver<Option<Vec<ActiveEvent>>>,
    /// The identifiers that may count for them, for the filter.
    pub allowed: watch::Receiver<Option<Arc<Allowed>>>,
    /// Woken after each commit: the uploader.
    pub wake: Arc<Notify>,
    /// Figures for the status line and the heartbeat.
    pub counters: Arc<PipelineCounters>,
    /// For a source that stamps sightings with this machine's clock (BLE): the
    /// clock, whose correction is applied to them, and by which they are stamped
    /// in the outbox with this boot's monotonic time (see [`crate::clock`]).
    pub live_clock: Option<Arc<Clock>>,
}

/// Filter, coalesce, group-commit.
pub(super) async fn pipeline_loop(
    task: PipelineTask,
    mut rx: mpsc::Receiver<Sighting>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let PipelineTask { mut outbox, settings, events, mut allowed, wake, counters, live_clock } = task;
    // A live sighting gets the clock's correction.
    let correct = |mut s: Sighting| {
        if let Some(clock) = &live_clock {
            s.seen_at_ms = s.seen_at_ms.saturating_add(clock.offset_ms());
        }
        s
    };
    let window_ms = i64::try_from(settings.window.as_millis()).unwrap_or(i64::MAX);
    let mut pipeline =
        Pipeline::new(Filter { min_rssi: settings.min_rssi, allowed: None }, window_ms, settings.event.clone());
    pipeline.coalescer =
        Coalescer::with_max_age(window_ms, max_window_age(&settings)).with_min_hearings(settings.min_hearings);
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
        counters.unregistered.store(pipeline.unregistered, Ordering::Relaxed);
        counters.unconfirmed.store(pipeline.coalescer.unconfirmed, Ordering::Relaxed);
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
            Ok(()) = allowed.changed() => {
                let now = allowed.borrow_and_update().clone();
                match &now {
                    Some(a) => tracing::info!(
                        identifiers = a.identifiers.len(),
                        events = a.events,
                        rotating = a.rotating,
                        "recording only identifiers that may count for the active events{}",
                        if a.rotating { " (and any that may be a rotating identifier)" } else { "" }
                    ),
                    None => tracing::info!("recording every identifier heard (which may count is not known)"),
                }
                pipeline.filter.allowed = now;
            }
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
