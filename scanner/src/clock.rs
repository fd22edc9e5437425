//! How far the scanner trusts its own wall clock, and how it mends sightings
//! stamped by a wrong one.
//!
//! A Raspberry Pi has no real-time clock. Until NTP sets it, the wall clock says
//! whatever the last shutdown (fake-hwclock) or 1970 said; on a guest network that
//! blocks NTP, that is for ever. The scanner does not wait for the clock: it
//! starts at once and stamps every sighting heard live (BLE; a simulation started
//! now) with the wall time **and** with this boot's id and the monotonic time since
//! boot, which no clock step moves. The outbox keeps both (see
//! [`crate::outbox::Stamp`]).
//!
//! The wall clock is **known to be wrong** when
//!
//! - it reads earlier than the floor: the time this binary was built (or
//!   `SOURCE_DATE_EPOCH`), which no right clock can precede; or
//! - the server's time, taken from each heartbeat's answer (`at`, the server's
//!   receipt time, against the monotonic midpoint of the request), differs from
//!   it by more than the tolerance.
//!
//! While it is wrong and nothing better is known ([`ClockState::Wrong`]), the
//! uploader seals no new batches. And until the clock is **known to be right**
//! (the server's time was seen by this process: [`Clock::may_send`]), it sends
//! no batch that was never sent before: it asks the heartbeat for the server's
//! time first ([`Clock::want_server_time`]). So no wrong time reaches the server
//! in a new batch, even when the clock looks plausible (past the floor, but an
//! hour fast).
//!
//! Once the server's time is known, the sightings of this boot that no server
//! can have seen are **rebased** in one transaction ([`rebase_outbox`]): the
//! pending ones, and those sealed into batches never sent (an earlier process
//! of this boot, or this one while it waited for the server's time). Each gets
//! `seen_at = server time at the reference + (its monotonic time − the
//! reference's)`, and new sightings are stamped with the corrected time from
//! then on ([`ClockState::Corrected`]). Both are logged. A batch already sent is
//! never changed: the server may have applied it, and refuses a batch id sent
//! again with other contents. Sightings from an earlier boot cannot be rebased
//! (monotonic times of two boots have nothing in common) and keep their wall
//! time.

use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::Notify;

use crate::outbox::Outbox;
use crate::sighting::now_ms;

/// The build time floor, Unix ms: a right clock never reads earlier.
pub const FLOOR_MS: i64 = match i64::from_str_radix(env!("ROLLCALL_SCANNER_BUILT_AT"), 10) {
    Ok(secs) => secs * 1000,
    Err(_) => 0,
};

/// A difference from the server's time beyond which the clock is taken to be wrong.
pub const DEFAULT_TOLERANCE_MS: i64 = 10_000;

/// This boot's id (`/proc/sys/kernel/random/boot_id`), if the system has one.
pub fn boot_id() -> Option<&'static str> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_owned()))
        .as_deref()
}

/// Milliseconds since boot on the monotonic clock. Taken from `/proc/uptime` once
/// (10 ms resolution), then advanced by [`Instant`], so every process of this boot
/// agrees within a few milliseconds. Without `/proc`, it counts from this process's start.
pub fn mono_ms() -> i64 {
    static ANCHOR: OnceLock<(Instant, i64)> = OnceLock::new();
    let (at, uptime_ms) = ANCHOR.get_or_init(|| {
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse::<f64>().ok()))
            .map_or(0, |secs| (secs * 1000.0) as i64);
        (Instant::now(), uptime)
    });
    uptime_ms + i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// What the scanner knows about its wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClockState {
    /// Plausible (after the floor), not yet compared with the server's.
    Unchecked,
    /// Before the floor, and the server's time is not known yet: uploads wait.
    Wrong,
    /// Within the tolerance of the server's time.
    Synced,
    /// Off the server's time; sightings are stamped with the corrected time.
    Corrected,
}

impl ClockState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Wrong,
            2 => Self::Synced,
            3 => Self::Corrected,
            _ => Self::Unchecked,
        }
    }

    /// The name the heartbeat and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unchecked => "UNCHECKED",
            Self::Wrong => "WRONG",
            Self::Synced => "SYNCED",
            Self::Corrected => "CORRECTED",
        }
    }
}

/// A comparison with the server's time that calls for rebasing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The server's time at the reference, Unix ms.
    pub server_ms: i64,
    /// This boot's monotonic time at the reference.
    pub mono_ms: i64,
    /// The correction to add to the wall clock (server minus scanner).
    pub offset_ms: i64,
    /// How far the wall clock stepped just before (0 for a server reference): the
    /// sightings still in memory were stamped that much off the clock now.
    pub step_ms: i64,
}

/// The scanner's clock: the wall clock plus a correction, shared by the tasks.
#[derive(Debug)]
pub struct Clock {
    /// The floor, Unix ms.
    floor_ms: i64,
    /// Beyond this difference from the server, the clock is wrong.
    tolerance_ms: i64,
    /// Added to the wall clock for live stamps (0 until a correction).
    offset_ms: AtomicI64,
    /// A [`ClockState`].
    state: AtomicU8,
    /// The raw wall clock minus the monotonic clock when last looked at: it moves
    /// only when the wall clock is stepped.
    base_ms: AtomicI64,
    /// A correction found by the heartbeat, for the pipeline to apply (it owns the
    /// sightings in memory and commits before rebasing; see [`Clock::take_pending`]).
    pending: Mutex<Option<Reference>>,
    /// Rung by the uploader when it waits for the server's time: the heartbeat
    /// asks at once instead of at its next beat.
    wanted: Notify,
}

impl Clock {
    /// A clock judged against `floor_ms`, with `tolerance_ms` against the server's.
    pub fn new(floor_ms: i64, tolerance_ms: i64) -> Self {
        let state = if now_ms() < floor_ms { ClockState::Wrong } else { ClockState::Unchecked };
        if state == ClockState::Wrong {
            tracing::warn!(
                "the clock reads {}, before this build ({}): it is wrong (no NTP yet?). Scanning goes on; \
                 uploads wait until the server's time is known, then what was heard is rebased on it",
                crate::sighting::rfc3339_ms(now_ms()),
                crate::sighting::rfc3339_ms(floor_ms)
            );
        }
        Self {
            floor_ms,
            tolerance_ms,
            offset_ms: AtomicI64::new(0),
            state: AtomicU8::new(state as u8),
            base_ms: AtomicI64::new(now_ms() - mono_ms()),
            pending: Mutex::new(None),
            wanted: Notify::new(),
        }
    }

    /// Notices a step of the wall clock (against the monotonic one) since the last
    /// look. The pipeline looks before taking in each live sighting.
    ///
    /// - If the clock had been found right (or corrected) by the server's time, the
    ///   step made it wrong: the correction takes the step back out, at once, until
    ///   the next heartbeat confirms it. Sightings neither jump nor reorder.
    /// - If it had not been checked, or was known to be wrong, the step is taken
    ///   for NTP setting it. When it now reads after the floor, the returned
    ///   reference (the new wall time) rebases what was stamped before the step.
    pub fn check_step(&self) -> Option<Reference> {
        let base = now_ms() - mono_ms();
        let step = base - self.base_ms.load(Ordering::Relaxed);
        if step.abs() <= self.tolerance_ms {
            return None;
        }
        self.base_ms.store(base, Ordering::Relaxed);
        match self.state() {
            ClockState::Synced | ClockState::Corrected => {
                let offset = self.offset_ms.fetch_sub(step, Ordering::Relaxed) - step;
                self.state.store(ClockState::Corrected as u8, Ordering::Relaxed);
                tracing::warn!(
                    step_ms = step,
                    "the wall clock stepped by {:.1} s, away from the server's time: stamping sightings with the \
                     corrected time ({:+.1} s) until the server's time says otherwise",
                    step as f64 / 1000.0,
                    offset as f64 / 1000.0
                );
                None
            }
            ClockState::Unchecked | ClockState::Wrong => {
                let now = now_ms();
                tracing::info!("the wall clock was set (stepped by {:.1} s)", step as f64 / 1000.0);
                if now < self.floor_ms {
                    return None;
                }
                self.state.store(ClockState::Unchecked as u8, Ordering::Relaxed);
                Some(Reference { server_ms: now, mono_ms: mono_ms(), offset_ms: 0, step_ms: step })
            }
        }
    }

    /// What is known about the clock.
    pub fn state(&self) -> ClockState {
        ClockState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// The correction added to live stamps, ms.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// The corrected wall time, Unix ms.
    pub fn now_ms(&self) -> i64 {
        now_ms().saturating_add(self.offset_ms())
    }

    /// Whether new batches may be sealed: not while the clock is known to be wrong
    /// and the server's time is not yet known.
    pub fn may_seal(&self) -> bool {
        self.state() != ClockState::Wrong
    }

    /// Whether a batch never sent may be sent: only once the server's time has
    /// been seen and any correction applied (the sightings it holds were
    /// rebased by then).
    pub fn may_send(&self) -> bool {
        matches!(self.state(), ClockState::Synced | ClockState::Corrected)
    }

    /// Asks for the server's time now (the heartbeat answers).
    pub fn want_server_time(&self) {
        self.wanted.notify_one();
    }

    /// Resolves when [`Self::want_server_time`] was called.
    pub async fn server_time_wanted(&self) {
        self.wanted.notified().await;
    }

    /// Compares with the server's time `server_ms`, taken at this boot's monotonic
    /// time `mono_ref`. When the clock is wrong, the reference to rebase on is kept
    /// for the pipeline ([`Self::take_pending`]), which rebases and then calls
    /// [`Self::corrected`]; otherwise the clock is marked synced, dropping any
    /// earlier correction (NTP has caught up).
    pub fn observe(&self, server_ms: i64, mono_ref: i64) {
        let found = self.compare(server_ms, mono_ref);
        if let Ok(mut pending) = self.pending.lock() {
            *pending = found;
        }
    }

    /// The correction the heartbeat found and nobody applied yet.
    pub fn take_pending(&self) -> Option<Reference> {
        self.pending.lock().ok().and_then(|mut p| p.take())
    }

    /// [`Self::observe`]'s comparison: the reference to rebase on, if the clock is wrong.
    fn compare(&self, server_ms: i64, mono_ref: i64) -> Option<Reference> {
        let raw_at_ref = now_ms() - (mono_ms() - mono_ref);
        let offset_ms = server_ms - raw_at_ref;
        let before_floor = raw_at_ref < self.floor_ms;
        if self.state() == ClockState::Corrected && (offset_ms - self.offset_ms()).abs() <= self.tolerance_ms {
            // The correction in force still holds.
            return None;
        }
        if offset_ms.abs() <= self.tolerance_ms && !before_floor {
            let was = self.state();
            if self.offset_ms.swap(0, Ordering::Relaxed) != 0 || was == ClockState::Corrected {
                tracing::info!("the clock agrees with the server's now: no more correction");
            }
            self.state.store(ClockState::Synced as u8, Ordering::Relaxed);
            return None;
        }
        Some(Reference { server_ms, mono_ms: mono_ref, offset_ms, step_ms: 0 })
    }

    /// A correction is in force (after the pending sightings were rebased).
    pub fn corrected(&self, r: &Reference) {
        self.offset_ms.store(r.offset_ms, Ordering::Relaxed);
        self.state.store(ClockState::Corrected as u8, Ordering::Relaxed);
    }
}

/// Rebases the sightings of this boot that no server has seen on `r` (the
/// server's time, or the wall clock just set) and says so. Returns false if the
/// outbox could not be written (the heartbeat's next answer tries again).
pub fn rebase_outbox(outbox: &mut Outbox, r: &Reference, from_server: bool) -> bool {
    let Some(boot) = boot_id() else {
        tracing::warn!("the clock is wrong, and without a boot id the sightings cannot be rebased: check NTP");
        return true;
    };
    match tokio::task::block_in_place(|| outbox.rebase(boot, r.server_ms, r.mono_ms, DEFAULT_TOLERANCE_MS)) {
        Ok(done) => {
            let total = done.pending + done.sealed;
            let mut kept = String::new();
            if done.kept_sent > 0 {
                kept += &format!(
                    "; {} sightings in batches already sent keep their times (the server may have them)",
                    done.kept_sent
                );
            }
            if done.other_boots > 0 {
                kept += &format!("; {} sightings from an earlier boot keep their times", done.other_boots);
            }
            let what = format!(
                "rebased {total} sightings waiting in the outbox ({} pending, {} in {} sealed batches never sent)",
                done.pending, done.sealed, done.batches
            );
            if from_server {
                let off = r.offset_ms as f64 / 1000.0;
                tracing::warn!(
                    rebased = total,
                    rebased_pending = done.pending,
                    rebased_sealed = done.sealed,
                    rebased_batches = done.batches,
                    kept_sent = done.kept_sent,
                    offset_ms = r.offset_ms,
                    "this scanner's clock is {:.1} s {} the server's (no NTP?): {what} on the server's time, and \
                     stamping new ones with the corrected time{kept}",
                    off.abs(),
                    if off > 0.0 { "behind" } else { "ahead of" }
                );
            } else if total > 0 {
                tracing::warn!(rebased = total, rebased_sealed = done.sealed, "{what} on the clock just set{kept}");
            }
            true
        }
        Err(e) => {
            tracing::error!("cannot rebase the outbox on the right time (trying again at the next heartbeat): {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_before_the_floor_is_wrong_until_the_server_tells_the_time() {
        let far_future_floor = now_ms() + 86_400_000;
        let clock = Clock::new(far_future_floor, DEFAULT_TOLERANCE_MS);
        assert_eq!(clock.state(), ClockState::Wrong);
        assert!(!clock.may_seal());
        // The server says it is a day later than the clock says.
        let mono = mono_ms();
        clock.observe(now_ms() + 86_400_000 + 5_000, mono);
        let r = clock.take_pending().expect("a reference to rebase on");
        assert_eq!(clock.take_pending(), None, "taken once");
        assert!((r.offset_ms - 86_405_000).abs() < 1_000, "{r:?}");
        clock.corrected(&r);
        assert!(clock.may_seal());
        assert_eq!(clock.state(), ClockState::Corrected);
        assert!((clock.now_ms() - (now_ms() + r.offset_ms)).abs() < 1_000);
    }

    #[test]
    fn a_clock_within_the_tolerance_is_synced_and_a_skewed_one_is_corrected() {
        let clock = Clock::new(0, DEFAULT_TOLERANCE_MS);
        assert_eq!(clock.state(), ClockState::Unchecked);
        clock.observe(now_ms() + 2_000, mono_ms());
        assert_eq!((clock.take_pending(), clock.state()), (None, ClockState::Synced));
        clock.observe(now_ms() - 3_600_000, mono_ms());
        let r = clock.take_pending().expect("an hour off");
        clock.corrected(&r);
        assert!(clock.now_ms() < now_ms() - 3_500_000);
        clock.observe(now_ms(), mono_ms());
        assert_eq!(clock.take_pending(), None, "NTP caught up");
        assert_eq!(clock.offset_ms(), 0);
    }

    #[test]
    fn a_step_of_a_checked_clock_is_taken_back_out() {
        let clock = Clock::new(0, DEFAULT_TOLERANCE_MS);
        clock.observe(now_ms(), mono_ms());
        assert_eq!(clock.take_pending(), None);
        // As if the wall clock had been an hour ahead when last looked at: it stepped back.
        clock.base_ms.fetch_add(3_600_000, Ordering::Relaxed);
        assert_eq!(clock.check_step(), None);
        assert_eq!(clock.state(), ClockState::Corrected);
        assert!((clock.offset_ms() - 3_600_000).abs() < 100);
        assert_eq!(clock.check_step(), None, "once");
        assert!((clock.offset_ms() - 3_600_000).abs() < 100);
    }

    #[test]
    fn a_step_of_an_unchecked_clock_is_ntp_setting_it() {
        let clock = Clock::new(0, DEFAULT_TOLERANCE_MS);
        clock.base_ms.fetch_sub(86_400_000, Ordering::Relaxed);
        let r = clock.check_step().expect("a reference for what was stamped before");
        assert_eq!((r.offset_ms, clock.offset_ms(), clock.state()), (0, 0, ClockState::Unchecked));
    }

    #[test]
    fn the_floor_is_the_build_time() {
        assert!(FLOOR_MS > 1_700_000_000_000 && FLOOR_MS <= now_ms(), "{FLOOR_MS}");
        assert!(mono_ms() > 0);
    }
}
