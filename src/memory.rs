//! Memory the server gives back to the system on purpose.
//!
//! The binary's allocator is mimalloc (`main.rs`, and the examples that run a
//! server). mimalloc returns a page a thread freed to the system only at
//! that thread's next call into the allocator, a second after the free (its
//! purge delay). A thread that goes quiet after a burst keeps what it freed
//! resident: after the fuzz test's requests (tests/api/fuzz.rs) the server
//! stayed 10-30 MB above what it had in use, differently each run. So, while
//! the server runs, one task has the allocator give back everything freed,
//! every second.

use std::time::Duration;

/// How often the server gives back what the allocator holds freed.
const GIVE_BACK_EVERY: Duration = Duration::from_secs(1);

/// The task that gives back freed memory; it stops when this is dropped.
pub struct GivingBack(tokio::task::JoinHandle<()>);

impl Drop for GivingBack {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Gives back what the allocator holds freed every [`GIVE_BACK_EVERY`]
/// until the returned guard is dropped. With another global allocator (the
/// test binaries, `--features system-allocator`) it costs one call a second
/// into mimalloc's unused heap.
pub fn give_back_freed_regularly() -> GivingBack {
    GivingBack(tokio::spawn(async {
        let mut tick = tokio::time::interval(GIVE_BACK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            give_back_freed();
        }
    }))
}

#[allow(unsafe_code)]
fn give_back_freed() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any
    // thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
