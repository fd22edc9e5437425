//! `rollcall-scanner`: the program on each scanner box at a venue.
//!
//! It hears attendees' phones, keeps every sighting it has accepted in a durable
//! outbox, and delivers them to the Rollcall server exactly once, however often the
//! network or the power fails. The data flow is a straight line:
//!
//! ```text
//! source (ble | replay | simulate) → filter → coalesce → outbox → uploader → ack
//! ```
//!
//! - [`source`]: where advertisements come from, behind the [`source::Source`] trait.
//! - [`advert`]: pure parsing of BLE advertisement payloads into identifiers.
//! - [`pipeline`]: the filter (`minRssi`, registered identifiers) and the per-window coalescer.
//! - [`registered`]: which identifiers may count for the active events.
//! - [`backlog`]: what the pipeline holds in memory while the outbox refuses writes.
//! - [`outbox`]: the durable queue (SQLite in WAL mode) with sealed batches.
//! - [`api`]: the GraphQL operations, checked at compile time against `schema.graphql`.
//! - [`uploader`]: seals, sends, backs off, acks.
//! - [`scanner`]: wires them together for `rollcall-scanner run`, plus the active-event
//!   refresher and the heartbeat.
//! - [`clock`]: how far the wall clock is trusted; rebasing sightings stamped by a wrong one.
//! - [`service`]: systemd's readiness, status and watchdog.
//! - [`health`]: BLE health and free disk, for the heartbeat.
//! - [`doctor`] and [`listen`]: checking a scanner, and placing one.
//! - [`config`]: the command line, the TOML file and the environment.
//! - [`identity`]: the scanner's stable id, which survives key rotation.
//! - [`rotating`]: rotating beacon identifiers, for `simulate`.

pub mod advert;
pub mod api;
pub mod backlog;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod health;
pub mod identity;
pub mod listen;
pub mod outbox;
pub mod pipeline;
pub mod registered;
pub mod rotating;
pub mod scanner;
pub mod service;
pub mod sighting;
pub mod source;
pub mod uploader;

/// The version sent in heartbeats.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
