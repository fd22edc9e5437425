//! Rollcall: automatic event attendance over Bluetooth LE.
//!
//! Scanners upload BLE sightings; the server turns them into check-ins and
//! stays and serves them over GraphQL. The layers, from the inside out:
//!
//! - [`domain`]: pure rules and validated values, no I/O;
//! - [`store`]: SurrealDB persistence, one repository per aggregate;
//! - [`app`]: the use cases (ingest) that GraphQL and HTTP both call;
//! - [`auth`]: passwords, JWTs, API keys and the request's [`auth::Principal`];
//! - [`graphql`]: the schema, which knows nothing of HTTP;
//! - [`http`]: the axum router around it;
//! - [`startup`]: building and running the server; `main.rs` is a thin CLI.

pub mod accounts;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod graphql;
pub mod http;
pub mod import;
pub mod live;
pub mod memory;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
