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
//! Time here is the sightings' own time, not the wall clock: a window closes when a
//! sighting at or after its end has been seen (the *watermark*). That makes replay
//! at any speed coalesce exactly like live scanning. When nothing at all is heard
//! for a while, the caller closes every window with [`Coalescer::drain_all`].
//!
//! Sightings held here are not yet durable; at most one window plus one commit
//! interval is lost if the power fails. Everything from the outbox on is durable.

use std::collections::HashMap;

use crate::sighting::Sighting;

/// Drops what the scanner should not report.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Weakest RSSI kept, in dBm; `None` keeps everything.
    pub min_rssi: Option<i16>,
}

impl Filter {
    /// Whether `s` passes.
    #[inline]
    pub fn keep(&self, s: &Sighting) -> bool {
        match (self.min_rssi, s.rssi) {
            (Some(min), Some(rssi)) => rssi >= min,
            _ => true,
        }
    }
}

/// The best hearing of one identifier in one window so far.
#[derive(Clone, Copy, Debug)]
struct Best {
    /// When the best hearing happened.
    seen_at_ms: i64,
    /// Its RSSI (`None` ranks below any value).
    rssi: Option<i16>,
}

/// Which window and device a [`Best`] belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    /// The window's index: `seen_at_ms.div_euclid(window_ms)`.
    window: i64,
    /// The identifier heard.
    identifier: String,
    /// The event it was heard for, if pinned.
    event_id: Option<String>,
}

/// One sighting per (identifier, event) per window, the strongest.
#[derive(Debug)]
pub struct Coalescer {
    /// Window length in milliseconds (at least 1).
    window_ms: i64,
    /// Open windows.
    open: HashMap<Key, Best>,
    /// The latest `seen_at_ms` pushed: windows ending at or before it are closed.
    watermark: i64,
}

impl Coalescer {
    /// A coalescer with windows of `window_ms` (0 is taken as 1 ms: no coalescing
    /// beyond identical milliseconds).
    pub fn new(window_ms: i64) -> Self {
        Self { window_ms: window_ms.max(1), open: HashMap::new(), watermark: i64::MIN }
    }

    /// Takes one sighting in.
    #[inline]
    pub fn push(&mut self, s: Sighting) {
        self.watermark = self.watermark.max(s.seen_at_ms);
        let key =
            Key { window: s.seen_at_ms.div_euclid(self.window_ms), identifier: s.identifier, event_id: s.event_id };
        let new = Best { seen_at_ms: s.seen_at_ms, rssi: s.rssi };
        self.open
            .entry(key)
            .and_modify(|best| {
                if new.rssi > best.rssi || (new.rssi == best.rssi && new.seen_at_ms < best.seen_at_ms) {
                    *best = new;
                }
            })
            .or_insert(new);
    }

    /// Removes and returns the windows that have closed, oldest first.
    pub fn drain_closed(&mut self) -> Vec<Sighting> {
        let window_ms = self.window_ms;
        let watermark = self.watermark;
        self.drain_where(|k| (k.window + 1).saturating_mul(window_ms) <= watermark)
    }

    /// Removes and returns every open window, oldest first (idle, end of input, shutdown).
    pub fn drain_all(&mut self) -> Vec<Sighting> {
        self.drain_where(|_| true)
    }

    /// How many (identifier, window) pairs are open.
    pub fn open_len(&self) -> usize {
        self.open.len()
    }

    fn drain_where(&mut self, closed: impl Fn(&Key) -> bool) -> Vec<Sighting> {
        if self.open.is_empty() {
            return Vec::new();
        }
        let keys: Vec<Key> = self.open.keys().filter(|k| closed(k)).cloned().collect();
        let mut out: Vec<Sighting> = keys
            .into_iter()
            .filter_map(|k| {
                let best = self.open.remove(&k)?;
                Some(Sighting {
                    identifier: k.identifier,
                    seen_at_ms: best.seen_at_ms,
                    rssi: best.rssi,
                    event_id: k.event_id,
                })
            })
            .collect();
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
    /// Advertisements the filter dropped.
    pub dropped: u64,
}

impl Pipeline {
    /// A pipeline with `filter`, windows of `window_ms`, and an optional pinned event.
    pub fn new(filter: Filter, window_ms: i64, pinned_event: Option<String>) -> Self {
        Self { filter, coalescer: Coalescer::new(window_ms), pinned_event, seen: 0, dropped: 0 }
    }

    /// Takes one advertisement's sighting in.
    #[inline]
    pub fn push(&mut self, mut s: Sighting) {
        self.seen += 1;
        if !self.filter.keep(&s) {
            self.dropped += 1;
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
        let f = Filter { min_rssi: Some(-80) };
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
    fn pinned_event_keeps_events_apart_and_overrides() {
        let mut p = Pipeline::new(Filter { min_rssi: Some(-90) }, 10_000, Some("ev1".into()));
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
    fn late_sightings_before_the_epoch_still_coalesce() {
        let mut c = Coalescer::new(10_000);
        c.push(s("a", -5, Some(-1)));
        c.push(s("a", -9_000, Some(-2)));
        assert_eq!(c.drain_all().len(), 1);
    }
}
