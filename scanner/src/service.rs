//! Talking to systemd when it runs the scanner as a `Type=notify` service (see
//! `deploy/rollcall-scanner.service`). Outside systemd (`NOTIFY_SOCKET` unset)
//! every call here does nothing.
//!
//! - `READY=1` once the outbox is open and every task is running;
//! - `STATUS=…`, the heartbeat's summary, shown by `systemctl status`;
//! - `WATCHDOG=1` at half the unit's `WatchdogSec`, but only while the pipeline is
//!   alive (its commit tick ran within that half). A pipeline stuck on a hung
//!   disk or a deadlock stops the pings, and systemd kills and restarts the
//!   process: what the outbox holds is safe, and a fresh process starts clean;
//! - `STOPPING=1` on SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

use crate::clock::mono_ms;

/// Tells systemd the scanner is up.
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// Tells systemd the scanner is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// A one-line status for `systemctl status`.
pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// When the pipeline last showed it is alive (monotonic ms since boot).
#[derive(Debug, Default)]
pub struct Liveness(AtomicI64);

impl Liveness {
    /// The pipeline is alive now.
    pub fn touch(&self) {
        self.0.store(mono_ms(), Ordering::Relaxed);
    }

    /// How long ago it last was.
    pub fn since(&self) -> Duration {
        Duration::from_millis(u64::try_from(mono_ms() - self.0.load(Ordering::Relaxed)).unwrap_or(0))
    }
}

/// Pings systemd's watchdog while `alive` is fresh, for as long as it runs; returns
/// at once when the unit has no `WatchdogSec`.
pub async fn watchdog(alive: Arc<Liveness>) {
    let Some(timeout) = sd_notify::watchdog_enabled() else { return };
    let every = timeout / 2;
    tracing::info!(
        "systemd watchdog: {} s; pinging every {} s while the pipeline runs",
        timeout.as_secs(),
        every.as_secs()
    );
    let mut stalled = false;
    loop {
        tokio::time::sleep(every).await;
        let since = alive.since();
        if since <= every {
            if stalled {
                tracing::info!("the pipeline runs again; pinging the watchdog again");
                stalled = false;
            }
            notify(&[NotifyState::Watchdog]);
        } else if !stalled {
            stalled = true;
            tracing::error!(
                "the pipeline has not run for {} s: not pinging the watchdog, so systemd restarts the scanner",
                since.as_secs()
            );
        }
    }
}
