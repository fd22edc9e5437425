//! The scanner's side of the GraphQL contract.
//!
//! The operations live in `scanner/graphql/*.graphql` and are compiled by
//! `graphql_client` against the workspace's `schema.graphql`, so a change to the
//! server's contract that breaks them breaks this crate's build, not a venue.
//!
//! [`ServerClient`] sends them with the API key and sorts every failure into
//! [`ApiError::Transient`] (try the same thing again later) or a permanent kind
//! that the caller must not retry blindly.

use std::time::Duration;

use graphql_client::{GraphQLQuery, Response};
use serde::de::DeserializeOwned;

/// GraphQL `DateTime`: RFC 3339 text.
pub type DateTime = String;
/// GraphQL `UUID`.
#[allow(clippy::upper_case_acronyms)]
pub type UUID = uuid::Uuid;

/// Uploads one sealed batch.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../schema.graphql",
    query_path = "graphql/submit_sightings.graphql",
    response_derives = "Debug, Clone"
)]
pub struct SubmitSightings;

/// The events the key may report for that are taking attendance now.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../schema.graphql",
    query_path = "graphql/active_events.graphql",
    response_derives = "Debug, Clone, PartialEq"
)]
pub struct ActiveEvents;

/// Version, outbox depth, last upload and clock.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../schema.graphql",
    query_path = "graphql/scanner_heartbeat.graphql",
    response_derives = "Debug, Clone"
)]
pub struct ScannerHeartbeat;

/// An active event as the scanner needs it.
pub type ActiveEvent = active_events::ActiveEventsActiveEvents;
/// What the server did with a batch.
pub type BatchResult = submit_sightings::SubmitSightingsSubmitSightings;

/// How a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Network trouble, a timeout, a 5xx, `RATE_LIMITED` or `INTERNAL`: worth retrying.
    #[error("transient: {0}")]
    Transient(String),
    /// The key is missing, wrong or revoked (`UNAUTHENTICATED`, HTTP 401). Retrying
    /// with the same key cannot help.
    #[error("the server refused the API key: {0}")]
    BadKey(String),
    /// The server understood the request and refused it for good (`VALIDATION`,
    /// `FORBIDDEN`, a GraphQL error without a code, a 4xx).
    #[error("refused: {0}")]
    Refused(String),
}

/// A GraphQL client for one server and one API key.
#[derive(Clone)]
pub struct ServerClient {
    /// The HTTP client (connection pool, timeouts).
    http: reqwest::Client,
    /// `<server>/graphql`.
    endpoint: String,
    /// The API key; never logged.
    api_key: String,
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClient").field("endpoint", &self.endpoint).field("api_key", &"<redacted>").finish()
    }
}

impl ServerClient {
    /// A client for the server at `server` (its base URL; `/graphql` is added).
    pub fn new(server: &str, api_key: String, timeout: Duration) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("rollcall-scanner/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Refused(format!("HTTP client: {e}")))?;
        let base = server.trim_end_matches('/');
        let endpoint = if base.ends_with("/graphql") { base.to_owned() } else { format!("{base}/graphql") };
        Ok(Self { http, endpoint, api_key })
    }

    /// The GraphQL endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Replaces the key (after the key file changed).
    pub fn set_api_key(&mut self, api_key: String) {
        self.api_key = api_key;
    }

    async fn post<Q: GraphQLQuery>(&self, variables: Q::Variables) -> Result<Q::ResponseData, ApiError>
    where
        Q::ResponseData: DeserializeOwned,
    {
        let body = Q::build_query(variables);
        let resp = self
            .http
            .post(&self.endpoint)
            .header("authorization", format!("ApiKey {}", self.api_key))
            .json(&body)
            .send()
            .await
            .map_err(|e| ApiError::Transient(error_chain(&e)))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ApiError::Transient(error_chain(&e)))?;
        let parsed: Option<Response<Q::ResponseData>> = serde_json::from_str(&text).ok();
        if let Some(parsed) = &parsed
            && let Some(err) = parsed.errors.as_ref().and_then(|e| e.first())
        {
            let code =
                err.extensions.as_ref().and_then(|x| x.get("code")).and_then(|c| c.as_str()).unwrap_or("").to_owned();
            let msg = format!("{} ({})", err.message, if code.is_empty() { "no code" } else { &code });
            return Err(match code.as_str() {
                "UNAUTHENTICATED" => ApiError::BadKey(msg),
                "RATE_LIMITED" | "INTERNAL" => ApiError::Transient(msg),
                _ if status.is_server_error() => ApiError::Transient(msg),
                _ => ApiError::Refused(msg),
            });
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ApiError::BadKey(format!("HTTP {status}")));
        }
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            return Err(ApiError::Transient(format!("HTTP {status}")));
        }
        if !status.is_success() {
            return Err(ApiError::Refused(format!("HTTP {status}: {}", truncate(&text, 200))));
        }
        match parsed.and_then(|p| p.data) {
            Some(data) => Ok(data),
            // A 200 that is not our JSON: a captive portal or a proxy page. Try later.
            None => Err(ApiError::Transient(format!("unexpected response: {}", truncate(&text, 200)))),
        }
    }

    /// `submitSightings`.
    pub async fn submit(&self, batch: submit_sightings::SightingBatchInput) -> Result<BatchResult, ApiError> {
        Ok(self.post::<SubmitSightings>(submit_sightings::Variables { batch }).await?.submit_sightings)
    }

    /// `activeEvents`.
    pub async fn active_events(&self) -> Result<Vec<ActiveEvent>, ApiError> {
        Ok(self.post::<ActiveEvents>(active_events::Variables).await?.active_events)
    }

    /// `scannerHeartbeat`; returns the skew the server measured, in ms.
    pub async fn heartbeat(&self, input: scanner_heartbeat::ScannerHeartbeatInput) -> Result<i64, ApiError> {
        Ok(self.post::<ScannerHeartbeat>(scanner_heartbeat::Variables { input }).await?.scanner_heartbeat.clock_skew_ms)
    }
}

/// An error with its causes, on one line (reqwest's top-level message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
