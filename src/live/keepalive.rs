//! One ticker for every socket's keepalive.
//!
//! A timer per socket costs a timer entry and a wake-up each per interval;
//! at 10,000 sockets that is 10,000 timers. Instead one task ticks a
//! `watch` cell, and each socket, on a tick, pings its client, drops it if
//! it has been silent too long, and rechecks its credential when due.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;

/// The process's keepalive ticker; started by the first socket.
#[derive(Default)]
pub(crate) struct Ticker {
    ticks: OnceLock<(watch::Sender<u64>, AbortHandle)>,
}

impl Ticker {
    /// Ticks every `period` (the first caller's: every socket of a process
    /// has the same limits).
    pub(crate) fn subscribe(self: &Arc<Self>, period: Duration) -> watch::Receiver<u64> {
        let (tx, _) = self.ticks.get_or_init(|| {
            let (tx, _) = watch::channel(0);
            let me: Weak<Ticker> = Arc::downgrade(self);
            let task = tokio::spawn(async move {
                let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let Some(me) = me.upgrade() else { return };
                    if let Some((tx, _)) = me.ticks.get() {
                        tx.send_modify(|n| *n = n.wrapping_add(1));
                    }
                }
            });
            (tx, task.abort_handle())
        });
        tx.subscribe()
    }

    /// Stops ticking.
    pub(crate) fn stop(&self) {
        if let Some((_, task)) = self.ticks.get() {
            task.abort();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop();
    }
}
