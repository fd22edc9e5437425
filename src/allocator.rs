//! The server's allocator, mimalloc (see `main.rs` and Cargo.toml), and the
//! one setting Rollcall changes in it: how soon freed memory goes back to the
//! operating system.
//!
//! mimalloc keeps freed pages for reuse and returns them ("purges") only
//! after a delay, 1 s by default (10 s for its arenas). Under a steady stream
//! of check-ins the server's heap stays flat, but with that delay its RSS
//! crept by about 1 MB a minute in `examples/soak.rs`; with no delay it held
//! within a band. So `rollcall` purges at once unless the operator set
//! `MIMALLOC_PURGE_DELAY` (milliseconds; mimalloc's own variable), which
//! always wins. The README's memory section has the figures.

use std::ffi::c_int;

/// mimalloc's `mi_option_purge_delay`: its place in `enum mi_option_e` in
/// mimalloc.h (v3, as built by `libmimalloc-sys`). The bindings name only some
/// options; the unit test below checks this one against its known default.
const MI_OPTION_PURGE_DELAY: c_int = 15;

/// The environment variable through which an operator sets the delay.
pub const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Rollcall's purge delay, in milliseconds, when the operator sets none.
pub const DEFAULT_PURGE_DELAY_MS: i64 = 0;

/// Applies Rollcall's purge delay unless [`PURGE_DELAY_ENV`] is set, and
/// returns the delay in force (milliseconds). Call it once, first thing in
/// `main`.
pub fn tune() -> i64 {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        // SAFETY: mi_option_set only stores an integer in mimalloc's option
        // table; any value is valid for this option.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, DEFAULT_PURGE_DELAY_MS as _) };
    }
    purge_delay_ms()
}

/// The purge delay in force, in milliseconds.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads an integer from mimalloc's option table (initialising it
    // from the environment on first use).
    i64::from(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the hard-coded option number: if a mimalloc upgrade renumbers
    /// its options, this reads another option's default and fails.
    #[test]
    fn the_option_number_is_mimallocs_purge_delay() {
        if std::env::var_os(PURGE_DELAY_ENV).is_some() {
            return; // the operator's value would be read, not the default
        }
        assert_eq!(purge_delay_ms(), 1000, "mimalloc v3's default purge delay is 1000 ms");
    }
}
