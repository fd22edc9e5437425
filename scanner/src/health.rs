//! The scanner's own health, for the heartbeat and the `status` line: how much the
//! radio hears (advertisements and distinct devices in the last minute, which tell
//! a dead radio from an empty room), how often the BLE scan had to be restarted,
//! the adapter's state, iPhones heard advertising from the background (Apple's
//! overflow area: no identity, but a sign that attendees' apps are asleep), and
//! the free space left for the outbox.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash as _, Hasher as _};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the BLE source reports about itself.
#[derive(Debug, Default)]
pub struct BleHealth {
    /// Scan sessions restarted by the watchdog or after an error, since start.
    pub restarts: AtomicU64,
    /// The adapter's last known state (`PoweredOn`, `PoweredOff`, `no adapter`, …).
    pub adapter_state: Mutex<Option<String>>,
    /// Advertisements of Apple's overflow area over the last minute, by device
    /// (BlueZ's device id: a phone's random address, so a count, not a person).
    pub background_iphones: Mutex<Option<RateMeter>>,
}

impl BleHealth {
    /// Records the adapter's state.
    pub fn set_adapter_state(&self, state: impl Into<String>) {
        if let Ok(mut s) = self.adapter_state.lock() {
            *s = Some(state.into());
        }
    }

    /// The adapter's last known state.
    pub fn adapter_state(&self) -> Option<String> {
        self.adapter_state.lock().ok().and_then(|s| s.clone())
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// An advertisement of Apple's overflow area from `device`.
    pub fn heard_background_iphone(&self, device: &str) {
        if let Ok(mut m) = self.background_iphones.lock() {
            m.get_or_insert_with(RateMeter::default).heard(device, Instant::now());
        }
    }

    /// (advertisements, devices) of Apple's overflow area over the last minute.
    pub fn background_iphones(&self) -> (u64, u64) {
        match self.background_iphones.lock() {
            Ok(mut m) => m.as_mut().map_or((0, 0), |m| m.rates(Instant::now())),
            Err(_) => (0, 0),
        }
    }
}

/// Advertisements and distinct devices over a sliding minute.
#[derive(Debug)]
pub struct RateMeter {
    /// How far back it looks.
    span: Duration,
    /// Advertisements per second, oldest first: (second since `origin`, count).
    per_second: VecDeque<(u64, u64)>,
    /// When each device (by a hash of its identifier) was last heard.
    devices: HashMap<u64, Instant>,
    /// The time the seconds count from.
    origin: Instant,
}

impl Default for RateMeter {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl RateMeter {
    /// A meter over the last `span`.
    pub fn new(span: Duration) -> Self {
        Self { span, per_second: VecDeque::new(), devices: HashMap::new(), origin: Instant::now() }
    }

    /// One advertisement of `identifier` heard at `now`.
    pub fn heard(&mut self, identifier: &str, now: Instant) {
        let second = now.saturating_duration_since(self.origin).as_secs();
        match self.per_second.back_mut() {
            Some((s, n)) if *s == second => *n += 1,
            _ => self.per_second.push_back((second, 1)),
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        identifier.hash(&mut h);
        self.devices.insert(h.finish(), now);
    }

    /// Forgets what is older than the span, then returns (advertisements, devices) within it.
    pub fn rates(&mut self, now: Instant) -> (u64, u64) {
        let horizon = now.checked_sub(self.span).unwrap_or(self.origin);
        let first_second = horizon.saturating_duration_since(self.origin).as_secs();
        while self.per_second.front().is_some_and(|(s, _)| *s < first_second) {
            self.per_second.pop_front();
        }
        self.devices.retain(|_, at| *at >= horizon);
        (self.per_second.iter().map(|(_, n)| n).sum(), self.devices.len() as u64)
    }
}

/// Free bytes for an unprivileged user on the filesystem holding `path`.
pub fn free_disk_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_adverts_and_devices_over_the_last_minute() {
        let mut m = RateMeter::new(Duration::from_secs(60));
        let t0 = m.origin;
        for k in 0..30u64 {
            m.heard("a", t0 + Duration::from_secs(k));
            m.heard("b", t0 + Duration::from_secs(k));
        }
        m.heard("c", t0 + Duration::from_secs(40));
        assert_eq!(m.rates(t0 + Duration::from_secs(45)), (61, 3));
        // A minute after the last of a and b, only c's one advertisement remains.
        assert_eq!(m.rates(t0 + Duration::from_secs(90)), (1, 1));
        assert_eq!(m.rates(t0 + Duration::from_secs(200)), (0, 0), "a silent radio");
    }

    #[test]
    fn free_disk_is_known_for_a_real_directory() {
        assert!(free_disk_bytes(Path::new("/")).is_some());
        assert!(free_disk_bytes(Path::new("/no/such/dir")).is_none());
    }
}
