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
//! - [`pipeline`]: the filter (`minRssi`) and the per-window coalescer.
//! - [`outbox`]: the durable queue (SQLite in WAL mode) with sealed batches.
//! - [`api`]: the GraphQL operations, checked at compile time against `schema.graphql`.
//! - [`uploader`]: seals, sends, backs off, acks.
//! - [`scanner`]: wires them together for `rollcall-scanner run`, plus the active-event
//!   refresher and the heartbeat.
//! - [`config`]: the command line, the TOML file and the environment.

pub mod advert;
pub mod api;
pub mod config;
pub mod outbox;
pub mod pipeline;
pub mod scanner;
pub mod sighting;
pub mod source;
pub mod uploader;

/// The version sent in heartbeats.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
