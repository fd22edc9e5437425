//! What the pipeline holds in memory while the outbox cannot take a commit.
//!
//! A commit fails when the SD card is full, or on an I/O error. The sightings of
//! that commit were already taken out of the coalescer, so dropping them would
//! lose them; the [`Backlog`] keeps them, and the pipeline offers them to the
//! outbox again, ahead of anything newer, at every commit interval until a commit
//! succeeds. The scanner keeps hearing, coalescing and uploading meanwhile:
//! uploads free room in the outbox, and so does an operator.
//!
//! Memory is bounded by `cap` sightings. Past it, the backlog degrades in two
//! steps, each only as far as it must:
//!
//! 1. **Widen the window**: the held sightings are coalesced again into windows of
//!    1 minute, then 5, then 1 hour: one sighting per device per window, the
//!    strongest. Attendance loses resolution, not attendees.
//! 2. **Drop the weakest**: if that is still too many, the sightings with the
//!    lowest RSSI (unknown RSSI counts as weakest) go first, and every one dropped
//!    is counted in [`Backlog::dropped`], which `status` lines and the heartbeat
//!    report.
//!
//! Held sightings are not durable: if the process stops while the outbox still
//! refuses them, they are lost, and the scanner says how many.

use std::time::Duration;

use crate::pipeline::Coalescer;
use crate::sighting::Sighting;

/// The wider windows tried, in order, before dropping anything.
pub const WIDER_WINDOWS_MS: [i64; 3] = [60_000, 300_000, 3_600_000];

/// Sightings that could not be committed yet, bounded.
#[derive(Debug)]
pub struct Backlog {
    /// Held sightings, oldest first.
    held: Vec<Sighting>,
    /// At most this many are held.
    cap: usize,
    /// The widest window the held sightings have been coalesced into (ms), 0 if none.
    pub widened_to_ms: i64,
    /// Sightings dropped (weakest first) to stay under `cap`, ever.
    pub dropped: u64,
}

impl Backlog {
    /// An empty backlog holding at most `cap` sightings (at least 1).
    pub fn new(cap: usize) -> Self {
        Self { held: Vec::new(), cap: cap.max(1), widened_to_ms: 0, dropped: 0 }
    }

    /// How many sightings are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Adds `newer` after what is held, then degrades if over the cap.
    pub fn hold(&mut self, newer: Vec<Sighting>) {
        if self.held.is_empty() {
            self.held = newer;
        } else {
            self.held.extend(newer);
        }
        self.degrade();
    }

    /// Takes everything held, to offer it to the outbox; [`Self::put_back`] if that fails.
    pub fn take(&mut self) -> Vec<Sighting> {
        std::mem::take(&mut self.held)
    }

    /// Returns sightings that [`Self::take`] gave out and the outbox refused.
    pub fn put_back(&mut self, sightings: Vec<Sighting>) {
        let newer = std::mem::replace(&mut self.held, sightings);
        self.hold(newer);
    }

    /// Everything was committed: forget the degradation.
    pub fn committed(&mut self) {
        self.widened_to_ms = 0;
    }

    fn degrade(&mut self) {
        for window in WIDER_WINDOWS_MS {
            if self.held.len() <= self.cap {
                return;
            }
            if window <= self.widened_to_ms {
                continue;
            }
            // Window closing by age is irrelevant here: everything is drained at once.
            let mut wider = Coalescer::with_max_age(window, Duration::MAX);
            for s in self.held.drain(..) {
                wider.push(s);
            }
            self.held = wider.drain_all();
            self.widened_to_ms = window;
            tracing::warn!(
                held = self.held.len(),
                "the outbox still refuses writes: sightings held in memory are coalesced into {} s windows",
                window / 1000
            );
        }
        if self.held.len() <= self.cap {
            return;
        }
        let excess = self.held.len() - self.cap;
        // Weakest first; among equals the newest go first, the oldest being rarer.
        let mut order: Vec<usize> = (0..self.held.len()).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (&self.held[a], &self.held[b]);
            x.rssi.cmp(&y.rssi).then_with(|| y.seen_at_ms.cmp(&x.seen_at_ms))
        });
        let mut drop = vec![false; self.held.len()];
        for &i in order.iter().take(excess) {
            drop[i] = true;
        }
        let mut i = 0;
        self.held.retain(|_| {
            let keep = !drop[i];
            i += 1;
            keep
        });
        self.dropped += excess as u64;
        tracing::error!(
            dropped = excess,
            dropped_total = self.dropped,
            "the outbox still refuses writes and {} sightings are held in memory: dropped the {excess} weakest",
            self.cap
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, at: i64, rssi: Option<i16>) -> Sighting {
        Sighting { identifier: id.into(), seen_at_ms: at, rssi, event_id: None }
    }

    #[test]
    fn holds_in_order_and_gives_back_what_failed() {
        let mut b = Backlog::new(10);
        b.hold(vec![s("a", 1, Some(-50))]);
        let taken = b.take();
        assert!(b.is_empty());
        b.hold(vec![s("b", 2, Some(-50))]);
        b.put_back(taken);
        assert_eq!(b.take(), vec![s("a", 1, Some(-50)), s("b", 2, Some(-50))]);
        assert_eq!(b.dropped, 0);
    }

    #[test]
    fn over_the_cap_it_widens_the_window_before_dropping_anything() {
        let mut b = Backlog::new(4);
        // Two devices heard every 10 s for a minute: 12 sightings, 2 per minute.
        let many: Vec<Sighting> = (0..6)
            .flat_map(|k| [s("a", k * 10_000, Some(-60 - k as i16)), s("b", k * 10_000 + 1, Some(-70))])
            .collect();
        b.hold(many);
        assert_eq!(b.widened_to_ms, 60_000);
        assert_eq!(b.dropped, 0);
        assert_eq!(b.take(), vec![s("a", 0, Some(-60)), s("b", 1, Some(-70))], "the strongest of each minute");
    }

    #[test]
    fn when_widening_is_not_enough_the_weakest_go_and_are_counted() {
        let mut b = Backlog::new(2);
        b.hold(vec![s("a", 0, Some(-50)), s("b", 0, None), s("c", 0, Some(-90)), s("d", 0, Some(-40))]);
        assert_eq!(b.dropped, 2);
        assert_eq!(b.widened_to_ms, 3_600_000);
        let mut kept: Vec<String> = b.take().into_iter().map(|s| s.identifier).collect();
        kept.sort();
        assert_eq!(kept, ["a", "d"]);
    }
}
