//! Records when this binary was built (or `SOURCE_DATE_EPOCH`, for reproducible
//! builds), as `ROLLCALL_SCANNER_BUILT_AT` in Unix seconds: the scanner takes a
//! wall clock reading earlier than that for a wrong clock (see `src/clock.rs`).
//! The script runs again only when it or `SOURCE_DATE_EPOCH` changes, so the
//! floor may be older than the binary, never newer.

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    println!("cargo:rustc-env=ROLLCALL_SCANNER_BUILT_AT={secs}");
}
