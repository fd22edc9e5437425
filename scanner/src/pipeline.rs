//! The in-memory stages between a source and the outbox: filter, then coalesce.
//!
//! - The [`Filter`] drops advertisements weaker than `minRssi`, so a scanner at a
//!   door does not report the café next door. (The server applies each event's own
//!   `minRssi` again; this filter only saves upload volume.) Sightings without an
//!   RSSI (old replay logs) pass.
//! - The [`Coalescer`] keeps one sighting per (identifier, event) per tumbling
//!   window of `window_ms`, aligned to the Unix epoch: the strongest, and among
//!   equals the earliest. A phone advertising ten times a second becomes one row per
//!   window, which is what keeps uploads small.
//!
//! A window closes in whichever of two ways comes first:
//!
//! - **by the sightings' own time**: a sighting at or after its end has been seen
//!   (the *watermark*). That makes a replay at any speed coalesce exactly like
//!   live scanning;
//! - **by its age on the monotonic clock**: a window open for longer than
//!   `window + grace` (see [`Coalescer::with_max_age`]) is closed whatever the
//!   timestamps say. Without that, a wall clock stepped back by NTP, or one
//!   far-future line in a replay, would leave the newest windows open until the
//!   sightings' time caught up, possibly for ever: memory grows and a power cut
//!   loses them all.
//!
//! A sighting far behind the watermark (more than the longest age) means the
//! clock went back, or a replay is out of order: the watermark follows it back
//! (counted in [`Coalescer::rewinds`]), so coalescing carries on at the new time
//! instead of closing every new window at once.
//!
//! **Heard more than once.** A device counts in a window only if it was heard
//! at least `min_hearings` times in it (2 for the radio by default; see
//! [`Coalescer::with_min_hearings`]): one multipath spike from a passer-by in the
//! corridor does not check them in, while a phone in the room advertises many
//! times a second. Those heard too rarely are counted in
//! [`Coalescer::unconfirmed`]. The count is per window, so a phone heard once at
//! the very end of one window and once at the start of the next is not counted
//! for either; with a 10 s window and phones advertising every second or faster,
//! that costs nothing but a passer-by.
//!
//! An RSSI of 127 is the controller's "not available": it is taken as no RSSI.
//!
//! When nothing at all is heard for a while, the caller closes every window with
//! [`Coalescer::drain_all`].
//!
//! Sightings held here are not yet durable; at most `window + grace` plus one
//! commit interval is lost if the power fails. Everything from the outbox on is
//! durable.

use std::collections::BTreeMap;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::registered::Allowed;
use crate::sighting::Sighting;

/// Drops what the scanner should not report.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Weakest RSSI kept, in dBm; `None` keeps everything.
    pub min_rssi: Option<i16>,
    /// The identifiers that may count for the active events
    /// ([`crate::registered`]); `None` keeps every identifier.
    pub allowed: Option<Arc<Allowed>>,
}

impl Filter {
    /// Whether `s` is strong enough.
    #[inline]
    pub fn keep(&self, s: &Sighting) -> bool {
        match (self.min_rssi, s.rssi) {
            (Some(min), Some(rssi)) => rssi >= min,
            _ => true,
        }
    }

    /// Whether `s`'s identifier may count for an active event.
    #[inline]
    pub fn admits(&self, s: &Sighting) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.admits(&s.identifier))
    }
}

/// The best hearing of one identifier in one window so far.
#[derive(Clone, Copy, Debug)]
struct Best {
    /// When the best hearing happened.
    seen_at_ms: i64,
    /// Its RSSI (`None` ranks below any value).
    rssi: Option<i16>,
    /// How many times it was heard in the window.
    hearings: u32,
}

/// Which device a [`Best`] belongs to, within its window.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    /// The identifier heard.
    identifier: String,
    /// The event it was heard for, if pinned.
    event_id: Option<String>,
}

/// One open window.
#[derive(Debug)]
struct Window {
    /// When it was opened, on the monotonic clock.
    opened: Instant,
    /// The best hearing of each device in it.
    best: HashMap<Key, Best>,
}

/// How long a window may stay open beyond its length, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// One sighting per (identifier, event) per window, the strongest.
#[derive(Debug)]
pub struct Coalescer {
    /// Window length in milliseconds (at least 1).
    window_ms: i64,
    /// A window open this long (monotonic clock) is closed.
    max_age: Duration,
    /// Open windows, by index (`seen_at_ms.div_euclid(window_ms)`).
    windows: BTreeMap<i64, Window>,
    /// The latest `seen_at_ms` pushed, unless the time went back since: windows
    /// ending at or before it are closed.
    watermark: i64,
    /// How often a sighting far behind the watermark moved it back.
    pub rewinds: u64,
    /// Hearings a device needs in a window to be reported (at least 1).
    min_hearings: u32,
    /// (identifier, window) pairs dropped for being heard fewer times than that.
    pub unconfirmed: u64,
}

impl Coalescer {
    /// A coalescer with windows of `window_ms` (0 is taken as 1 ms: no coalescing
    /// beyond identical milliseconds) that stay open at most `window_ms` plus
    /// [`DEFAULT_GRACE`].
    pub fn new(window_ms: i64) -> Self {
        let window = Duration::from_millis(u64::try_from(window_ms.max(1)).unwrap_or(1));
        Self::with_max_age(window_ms, window + DEFAULT_GRACE)
    }

    /// A coalescer whose windows stay open at most `max_age` on the monotonic
    /// clock (normally the window's length plus a grace).
    pub fn with_max_age(window_ms: i64, max_age: Duration) -> Self {
        Self {
            window_ms: window_ms.max(1),
            max_age,
            windows: BTreeMap::new(),
            watermark: i64::MIN,
            rewinds: 0,
            min_hearings: 1,
            unconfirmed: 0,
        }
    }

    /// Reports a device in a window only when heard at least `n` times in it
    /// (0 is taken as 1: every hearing counts).
    pub fn with_min_hearings(mut self, n: u32) -> Self {
        self.min_hearings = n.max(1);
        self
    }

    /// Takes one sighting in.
    #[inline]
    pub fn push(&mut self, s: Sighting) {
        self.push_with(s, Instant::now);
    }

    /// Takes one sighting in, `now` being the monotonic time (for tests).
    pub fn push_at(&mut self, s: Sighting, now: Instant) {
        self.push_with(s, || now);
    }

    #[inline]
    fn push_with(&mut self, s: Sighting, now: impl FnOnce() -> Instant) {
        let far = i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX).max(self.window_ms);
        if s.seen_at_ms < self.watermark.saturating_sub(far) {
            // The clock went back (or the input is out of order): follow it.
            self.watermark = s.seen_at_ms;
            self.rewinds += 1;
        } else {
            self.watermark = self.watermark.max(s.seen_at_ms);
        }
        let window = self
            .windows
            .entry(s.seen_at_ms.div_euclid(self.window_ms))
            .or_insert_with(|| Window { opened: now(), best: HashMap::new() });
        let new = Best { seen_at_ms: s.seen_at_ms, rssi: s.rssi, hearings: 1 };
        window
            .best
            .entry(Key { identifier: s.identifier, event_id: s.event_id })
            .and_modify(|best| {
                let hearings = best.hearings.saturating_add(1);
                if new.rssi > best.rssi || (new.rssi == best.rssi && new.seen_at_ms < best.seen_at_ms) {
                    *best = new;
                }
                best.hearings = hearings;
            })
            .or_insert(new);
    }

    /// Removes and returns the windows that have closed by now, oldest first: those
    /// the watermark has passed, and those open for longer than the maximum age.
    pub fn drain_closed(&mut self) -> Vec<Sighting> {
        self.drain_closed_at(Instant::now())
    }

    /// [`Self::drain_closed`] at the monotonic time `now` (for tests).
    pub fn drain_closed_at(&mut self, now: Instant) -> Vec<Sighting> {
        let (window_ms, watermark, max_age) = (self.window_ms, self.watermark, self.max_age);
        self.drain_where(|index, w| {
            (index + 1).saturating_mul(window_ms) <= watermark || now.saturating_duration_since(w.opened) >= max_age
        })
    }

    /// Removes and returns every open window, oldest first (idle, end of input, shutdown).
    pub fn drain_all(&mut self) -> Vec<Sighting> {
        self.drain_where(|_, _| true)
    }

    /// How many (identifier, window) pairs are open.
    pub fn open_len(&self) -> usize {
        self.windows.values().map(|w| w.best.len()).sum()
    }

    fn drain_where(&mut self, closed: impl Fn(i64, &Window) -> bool) -> Vec<Sighting> {
        let indices: Vec<i64> = self.windows.iter().filter(|(i, w)| closed(**i, w)).map(|(i, _)| *i).collect();
        let mut out = Vec::new();
        for i in indices {
            let Some(w) = self.windows.remove(&i) else { continue };
            let before = w.best.len();
            let heard: Vec<(Key, Best)> =
                w.best.into_iter().filter(|(_, best)| best.hearings >= self.min_hearings).collect();
            self.unconfirmed += (before - heard.len()) as u64;
            out.extend(heard.into_iter().map(|(k, best)| Sighting {
                identifier: k.identifier,
                seen_at_ms: best.seen_at_ms,
                rssi: best.rssi,
                event_id: k.event_id,
            }));
        }
        out.sort_by(|a, b| a.seen_at_ms.cmp(&b.seen_at_ms).then_with(|| a.identifier.cmp(&b.identifier)));
        out
    }
}

/// Filter and coalescer together, with counters for the logs and `status`.
#[derive(Debug)]
pub struct Pipeline {
    /// The filter; its `min_rssi` may change as active events are refreshed.
    pub filter: Filter,
    /// The coalescer.
    pub coalescer: Coalescer,
    /// When set, every sighting is assigned to this event (`--event`).
    pub pinned_event: Option<String>,
    /// Advertisements taken in.
    pub seen: u64,
    /// Advertisements the filter dropped as too weak.
    pub dropped: u64,
    /// Advertisements of identifiers that may count for no active event.
    pub unregistered: u64,
}

impl Pipeline {
    /// A pipeline with `filter`, windows of `window_ms`, and an optional pinned event.
    pub fn new(filter: Filter, window_ms: i64, pinned_event: Option<String>) -> Self {
        Self { filter, coalescer: Coalescer::new(window_ms), pinned_event, seen: 0, dropped: 0, unregistered: 0 }
    }

    /// Takes one advertisement's sighting in.
    #[inline]
    pub fn push(&mut self, mut s: Sighting) {
        self.seen += 1;
        if s.rssi == Some(crate::sighting::RSSI_UNAVAILABLE) {
            s.rssi = None;
        }
        if !self.filter.keep(&s) {
            self.dropped += 1;
            return;
        }
        if !self.filter.admits(&s) {
            self.unregistered += 1;
            return;
        }
        if let Some(event) = &self.pinned_event
            && s.event_id.as_deref() != Some(event.as_str())
        {
            s.event_id = Some(event.clone());
        }
        self.coalescer.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, at: i64, rssi: Option<i16>) -> Sighting {
        Sighting { identifier: id.into(), seen_at_ms: at, rssi, event_id: None }
    }

    #[test]
    fn filter_drops_weak_and_keeps_unknown_rssi() {
        let f = Filter { min_rssi: Some(-80), ..Filter::default() };
        assert!(f.keep(&s("a", 0, Some(-80))));
        assert!(!f.keep(&s("a", 0, Some(-81))));
        assert!(f.keep(&s("a", 0, None)));
        assert!(Filter::default().keep(&s("a", 0, Some(-127))));
    }

    #[test]
    fn one_sighting_per_device_per_window_the_strongest() {
        let mut c = Coalescer::new(10_000);
        c.push(s("a", 1_000, Some(-70)));
        c.push(s("a", 2_000, Some(-60)));
        c.push(s("a", 3_000, Some(-60)));
        c.push(s("b", 4_000, Some(-90)));
        assert!(c.drain_closed().is_empty(), "the window is still open");
        c.push(s("a", 10_000, Some(-75)));
        let out = c.drain_closed();
        assert_eq!(out, vec![s("a", 2_000, Some(-60)), s("b", 4_000, Some(-90))]);
        assert_eq!(c.open_len(), 1);
        assert_eq!(c.drain_all(), vec![s("a", 10_000, Some(-75))]);
        assert_eq!(c.open_len(), 0);
    }

    #[test]
    fn a_device_heard_once_in_a_window_is_not_reported() {
        let mut c = Coalescer::new(10_000).with_min_hearings(2);
        // A phone in the room, heard three times; a passer-by's one multipath spike.
        c.push(s("phone", 1_000, Some(-70)));
        c.push(s("spike", 2_000, Some(-40)));
        c.push(s("phone", 3_000, Some(-60)));
        c.push(s("phone", 4_000, Some(-65)));
        // The next window: the spike heard once again does not add up across windows.
        c.push(s("spike", 11_000, Some(-42)));
        let out = c.drain_closed();
        assert_eq!(out, vec![s("phone", 3_000, Some(-60))], "the strongest of the phone's hearings");
        assert_eq!(c.unconfirmed, 1);
        assert!(c.drain_all().is_empty());
        assert_eq!(c.unconfirmed, 2);
        // At 1 (a replay), every hearing counts.
        let mut once = Coalescer::new(10_000).with_min_hearings(0);
        once.push(s("spike", 2_000, Some(-40)));
        assert_eq!(once.drain_all().len(), 1);
    }

    #[test]
    fn rssi_127_means_not_available() {
        let mut p = Pipeline::new(Filter { min_rssi: Some(-80), ..Filter::default() }, 10_000, None);
        p.push(s("a", 1_000, Some(127)));
        p.push(s("b", 1_000, Some(-60)));
        assert_eq!(p.dropped, 0);
        let out = p.coalescer.drain_all();
        assert_eq!(out, vec![s("a", 1_000, None), s("b", 1_000, Some(-60))], "127 is no RSSI, not a strong one");
    }

    #[test]
    fn pinned_event_keeps_events_apart_and_overrides() {
        let mut p = Pipeline::new(Filter { min_rssi: Some(-90), ..Filter::default() }, 10_000, Some("ev1".into()));
        let mut x = s("a", 1, Some(-50));
        x.event_id = Some("old".into());
        p.push(x);
        p.push(s("a", 2, Some(-95)));
        assert_eq!((p.seen, p.dropped), (2, 1));
        let out = p.coalescer.drain_all();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].event_id.as_deref(), Some("ev1"));
    }

    #[test]
    fn a_window_open_too_long_on_the_monotonic_clock_is_closed_whatever_the_timestamps() {
        let t0 = Instant::now();
        let mut c = Coalescer::with_max_age(10_000, Duration::from_secs(15));
        // One far-future line, then ordinary ones: the watermark cannot close the far one.
        c.push_at(s("future", 4_102_444_800_000, Some(-50)), t0);
        c.push_at(s("a", 1_000, Some(-60)), t0);
        assert!(c.drain_closed_at(t0 + Duration::from_secs(14)).is_empty(), "both still young");
        c.push_at(s("a", 5_000, Some(-55)), t0 + Duration::from_secs(5));
        c.push_at(s("b", 12_000, Some(-70)), t0 + Duration::from_secs(12));
        // The far-future window and the first ordinary one are 15 s old: closed. The
        // one opened at 12 s is not, though the far-future line is "after" it.
        let out = c.drain_closed_at(t0 + Duration::from_secs(15));
        assert_eq!(out, vec![s("a", 5_000, Some(-55)), s("future", 4_102_444_800_000, Some(-50))]);
        assert_eq!(c.open_len(), 1);
        // Later sightings keep coalescing by their own time as before.
        c.push_at(s("b", 13_000, Some(-65)), t0 + Duration::from_secs(16));
        c.push_at(s("b", 20_000, Some(-65)), t0 + Duration::from_secs(17));
        assert_eq!(c.drain_closed_at(t0 + Duration::from_secs(17)), vec![s("b", 13_000, Some(-65))]);
        assert!(c.drain_closed_at(t0 + Duration::from_secs(31)).is_empty());
        assert_eq!(c.drain_closed_at(t0 + Duration::from_secs(32)), vec![s("b", 20_000, Some(-65))]);
        assert_eq!(c.open_len(), 0);
    }

    #[test]
    fn after_the_clock_steps_back_windows_coalesce_and_close_at_the_new_time() {
        let t0 = Instant::now();
        let hour = 3_600_000;
        let mut c = Coalescer::with_max_age(10_000, Duration::from_secs(15));
        // An hour ahead (no RTC, a bad fake-hwclock) ...
        c.push_at(s("a", hour + 1_000, Some(-60)), t0);
        c.push_at(s("a", hour + 2_000, Some(-50)), t0);
        // ... then NTP steps the clock back an hour.
        for (k, rssi) in [(0, -70), (1, -65), (2, -75)] {
            c.push_at(s("a", 1_000 + k * 1_000, Some(rssi)), t0 + Duration::from_secs(3));
        }
        assert_eq!(c.rewinds, 1, "the watermark followed the clock back once");
        // The sightings after the step are still coalesced: nothing closes yet.
        assert!(c.drain_closed_at(t0 + Duration::from_secs(4)).is_empty());
        // The next window at the new time closes the previous one, as usual.
        c.push_at(s("a", 10_000, Some(-80)), t0 + Duration::from_secs(10));
        assert_eq!(c.drain_closed_at(t0 + Duration::from_secs(10)), vec![s("a", 2_000, Some(-65))]);
        // The window from before the step closes by its age, not an hour later.
        assert_eq!(c.drain_closed_at(t0 + Duration::from_secs(15)), vec![s("a", hour + 2_000, Some(-50))]);
        assert_eq!(c.open_len(), 1);
        assert_eq!(c.rewinds, 1);
    }

    #[test]
    fn a_little_late_is_not_a_clock_step() {
        let t0 = Instant::now();
        let mut c = Coalescer::with_max_age(10_000, Duration::from_secs(15));
        c.push_at(s("a", 30_000, Some(-60)), t0);
        c.push_at(s("b", 25_000, Some(-60)), t0);
        c.push_at(s("c", 16_000, Some(-60)), t0);
        assert_eq!(c.rewinds, 0);
        // The late one's window is behind the watermark: it goes out with the next drain.
        assert_eq!(c.drain_closed_at(t0), vec![s("c", 16_000, Some(-60)), s("b", 25_000, Some(-60))]);
    }

    #[test]
    fn late_sightings_before_the_epoch_still_coalesce() {
        let mut c = Coalescer::new(10_000);
        c.push(s("a", -5, Some(-1)));
        c.push(s("a", -9_000, Some(-2)));
        assert_eq!(c.drain_all().len(), 1);
    }
}
