//! Integration tests: the real server on 127.0.0.1:0, spoken to over real
//! HTTP (and, for the CLI and persistence, the real binary). One test binary,
//! so the server crate is linked once.

// Tests state their expectations with unwrap; a failure is the point.
#![allow(clippy::unwrap_used)]

mod accounts;
mod api_keys;
mod browser;
mod cdp;
mod cli;
mod compat;
mod console;
mod door;
mod events;
mod fuzz;
mod hardening;
mod held_rows;
mod helpers;
mod identity;
mod identity_changes;
mod imports;
mod ingest;
mod limits;
mod live;
mod multi;
mod ops;
mod persistence;
mod privacy;
mod raw_log;
mod registrations;
mod scanner_identity;
mod scanners;
mod schema;
mod surreal;
mod tokens;
mod web;
mod websocket;
