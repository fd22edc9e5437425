//! [`AppState`]: everything a request handler needs, built once at start-up
//! and shared by cheap clones. There are no globals: two servers in one
//! process (as in the tests) never see each other's state.

use std::sync::Arc;

use crate::app::{DoorCodes, Ingest, PhoneReports};
use crate::auth::{JwtKeys, LoginGate};
use async_graphql::dataloader::DataLoader;

use crate::config::{Limits, LiveLimits, WebArgs};
use crate::graphql::loaders::Users;
use crate::live::Live;
use crate::store::SurrealStore;
use crate::telemetry::Metrics;

#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: SurrealStore,
    /// Sighting ingest, with this process's writer.
    pub ingest: Ingest,
    /// The door screens' codes, and check-ins with them. (Behind an `Arc`,
    /// as is all that is large here: every live socket holds this state.)
    pub door: Arc<DoorCodes>,
    /// Presence reported by attendees' phones.
    pub phone: Arc<PhoneReports>,
    /// Signs and verifies people's tokens.
    pub jwt: JwtKeys,
    /// Request limits, from the configuration.
    pub limits: Arc<Limits>,
    /// The Prometheus registry `/metrics` renders.
    pub metrics: Metrics,
    /// The live change stream, fanned out to subscribers.
    pub live: Live,
    /// WebSocket and subscription limits.
    pub live_limits: Arc<LiveLimits>,
    /// Bounds password hashing and throttles failed log-ins.
    pub logins: Arc<LoginGate>,
    /// Profile, CORS, metrics access.
    pub web: Arc<WebArgs>,
    /// Users by id, batched per moment (for per-node `user` fields).
    pub users: Arc<DataLoader<Users>>,
}
