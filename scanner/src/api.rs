//! The scanner's side of the GraphQL contract.
//!
//! The operations live in `scanner/graphql/*.graphql` and are compiled by
//! `graphql_client` against the workspace's `schema.graphql`, so a change to the
//! server's contract that breaks them breaks this crate's build, not a venue.
//!
//! [`ServerClient`] sends them with the API key and sorts every failure (see
//! [`interpret`]) into [`ApiError::Transient`] (try the same thing again later) or
//! one of two permanent kinds that the caller must not retry blindly.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
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

/// The identifiers that may count for an event, paged and versioned.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../schema.graphql",
    query_path = "graphql/registered_devices.graphql",
    response_derives = "Debug, Clone"
)]
pub struct RegisteredDevices;

/// Version, outbox depth, last upload and clock.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../schema.graphql",
    query_path = "graphql/scanner_heartbeat.graphql",
    response_derives = "Debug, Clone"
)]
pub struct ScannerHeartbeat;

/// Which of this scanner's batches the server's store has, and its epoch.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../schema.graphql",
    query_path = "graphql/stored_batches.graphql",
    response_derives = "Debug, Clone"
)]
pub struct StoredBatches;

/// An active event as the scanner needs it.
pub type ActiveEvent = active_events::ActiveEventsActiveEvents;
/// What the server did with a batch.
pub type BatchResult = submit_sightings::SubmitSightingsSubmitSightings;

/// How a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Anything that says nothing about the request itself: network trouble, a
    /// timeout, any HTTP status but 401, a body that is not GraphQL, an error
    /// without a code, `RATE_LIMITED`, `INTERNAL`, `FORBIDDEN`. Worth retrying.
    #[error("{0}")]
    Transient(String),
    /// The key is missing, wrong or revoked (`UNAUTHENTICATED`, HTTP 401). Retrying
    /// with the same key cannot help.
    #[error("the server refused the API key: {0}")]
    BadKey(String),
    /// The operation's resolver refused what the request carried (`VALIDATION` with
    /// the operation's path): sending the same thing again cannot help.
    #[error("refused: {0}")]
    Refused(String),
    /// The request was refused as too large (HTTP 413 from the server or a proxy,
    /// or the server's own batch-size limit): nothing was applied, and the same
    /// sightings in smaller batches may go through.
    #[error("too large: {0}")]
    TooLarge(String),
}

/// A GraphQL client for one server and one API key. Clones share the key (so a
/// key re-read on SIGHUP reaches every task) and the time of the last answer.
#[derive(Clone)]
pub struct ServerClient {
    /// The HTTP client (connection pool, timeouts).
    http: reqwest::Client,
    /// `<server>/graphql`.
    endpoint: String,
    /// The API key; never logged.
    api_key: Arc<RwLock<String>>,
    /// This scanner's stable identity, sent as `x-rollcall-scanner-id` (see [`crate::identity`]).
    scanner_id: Option<String>,
    /// When the server last answered a request with data (Unix ms, scanner clock; 0: never).
    last_ok_ms: Arc<AtomicI64>,
}

/// The header that carries the scanner's stable identity.
pub const SCANNER_ID_HEADER: &str = "x-rollcall-scanner-id";

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
        Ok(Self {
            http,
            endpoint,
            api_key: Arc::new(RwLock::new(api_key)),
            scanner_id: None,
            last_ok_ms: Arc::new(AtomicI64::new(0)),
        })
    }

    /// The same client, sending `id` as this scanner's identity with every request.
    pub fn with_scanner_id(mut self, id: String) -> Self {
        self.scanner_id = Some(id);
        self
    }

    /// When the server last answered a request with data (Unix ms, scanner clock), if ever.
    pub fn last_ok_ms(&self) -> Option<i64> {
        Some(self.last_ok_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0)
    }

    /// The GraphQL endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The key requests are sent with.
    pub fn api_key(&self) -> String {
        self.api_key.read().map(|k| k.clone()).unwrap_or_default()
    }

    /// Replaces the key (after the key file changed), for this client and its clones.
    pub fn set_api_key(&self, api_key: String) {
        if let Ok(mut k) = self.api_key.write() {
            *k = api_key;
        }
    }

    async fn post<Q: GraphQLQuery>(&self, variables: Q::Variables) -> Result<Q::ResponseData, ApiError>
    where
        Q::ResponseData: DeserializeOwned,
    {
        let body = Q::build_query(variables);
        let mut req = self.http.post(&self.endpoint).header("authorization", format!("ApiKey {}", self.api_key()));
        if let Some(id) = &self.scanner_id {
            req = req.header(SCANNER_ID_HEADER, id);
        }
        let resp = req
            .json(&body)
            .send()
            .await
            .map_err(|e| ApiError::Transient(format!("cannot reach {}: {}", self.endpoint, error_chain(&e))))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            ApiError::Transient(format!("reading the answer of {}: {}", self.endpoint, error_chain(&e)))
        })?;
        let data = interpret(&self.endpoint, body.operation_name, status.as_u16(), &text)?;
        self.last_ok_ms.store(crate::sighting::now_ms(), Ordering::Relaxed);
        Ok(data)
    }

    /// `submitSightings`.
    pub async fn submit(&self, batch: submit_sightings::SightingBatchInput) -> Result<BatchResult, ApiError> {
        Ok(self.post::<SubmitSightings>(submit_sightings::Variables { batch }).await?.submit_sightings)
    }

    /// `storedBatches`: the store's epoch, and which of `batch_ids` it does not have.
    pub async fn stored_batches(
        &self,
        batch_ids: Vec<uuid::Uuid>,
    ) -> Result<(Option<String>, Vec<uuid::Uuid>), ApiError> {
        let answer = self.post::<StoredBatches>(stored_batches::Variables { batch_ids }).await?.stored_batches;
        Ok((answer.store_epoch, answer.missing))
    }

    /// `activeEvents`.
    pub async fn active_events(&self) -> Result<Vec<ActiveEvent>, ApiError> {
        Ok(self.post::<ActiveEvents>(active_events::Variables).await?.active_events)
    }

    /// `registeredDevices` for one event, every page: `None` when the set is
    /// still `known_version`, else its version and identifiers.
    pub async fn registered_devices(
        &self,
        event_id: &str,
        known_version: Option<&str>,
    ) -> Result<Option<(String, Vec<String>)>, ApiError> {
        let mut identifiers = Vec::new();
        let mut after = None;
        loop {
            let vars = registered_devices::Variables {
                event_id: event_id.to_owned(),
                after: after.take(),
                known_version: known_version.map(str::to_owned),
            };
            let page = self.post::<RegisteredDevices>(vars).await?.registered_devices;
            if !page.changed {
                return Ok(None);
            }
            identifiers.extend(page.identifiers);
            match page.next_cursor {
                Some(next) => after = Some(next),
                None => return Ok(Some((page.version, identifiers))),
            }
        }
    }

    /// `scannerHeartbeat`; returns the server's time of receipt (Unix ms) and the
    /// skew it measured (ms).
    pub async fn heartbeat(&self, input: scanner_heartbeat::ScannerHeartbeatInput) -> Result<(i64, i64), ApiError> {
        let beat = self.post::<ScannerHeartbeat>(scanner_heartbeat::Variables { input }).await?.scanner_heartbeat;
        let at = crate::sighting::parse_rfc3339_ms(&beat.at)
            .ok_or_else(|| ApiError::Transient(format!("the server's heartbeat time `{}` is not RFC 3339", beat.at)))?;
        Ok((at, beat.clock_skew_ms))
    }
}

/// Sorts an HTTP answer to the operation `operation` (its root field is the
/// operation name with a lower-case first letter) into data or an [`ApiError`].
///
/// A 413 (or the server's own batch-size limit) is [`ApiError::TooLarge`]: the
/// uploader splits the batch. Only two answers are not worth retrying at all:
///
/// - `UNAUTHENTICATED` or HTTP 401: the key ([`ApiError::BadKey`]);
/// - `VALIDATION` raised by the operation's own resolver (the error's `path`
///   starts at its root field): the server read the request and refused what it
///   carried ([`ApiError::Refused`]).
///
/// Everything else is [`ApiError::Transient`], with a message that says what the
/// server answered: a 404 from a wrong `--server` path, a 403 or an HTML page from
/// a captive portal, a GraphQL error without a code, a request
/// the server could not parse (a `VALIDATION` without a path: the scanner and the
/// server disagree about the schema). None of those says anything about the batch
/// itself, and each can be fixed on the server's side or by the network, so the
/// sightings stay in the outbox and are retried.
pub fn interpret<T: DeserializeOwned>(endpoint: &str, operation: &str, status: u16, text: &str) -> Result<T, ApiError> {
    let parsed: Option<Response<T>> = serde_json::from_str(text).ok();
    let root_field = {
        let mut c = operation.chars();
        c.next().map(|f| f.to_lowercase().chain(c).collect::<String>()).unwrap_or_default()
    };
    if let Some(parsed) = &parsed
        && let Some(err) = parsed.errors.as_ref().and_then(|e| e.first())
    {
        let code = err.extensions.as_ref().and_then(|x| x.get("code")).and_then(|c| c.as_str()).unwrap_or("");
        let in_resolver = err
            .path
            .as_ref()
            .and_then(|p| p.first())
            .is_some_and(|f| matches!(f, graphql_client::PathFragment::Key(k) if *k == root_field));
        let msg = format!(
            "the server at {endpoint} answered HTTP {status} with the error \"{}\" ({})",
            err.message,
            if code.is_empty() { "no code" } else { code }
        );
        return Err(match code {
            "UNAUTHENTICATED" => ApiError::BadKey(msg),
            "VALIDATION" if status == 413 => ApiError::TooLarge(msg),
            "VALIDATION" if in_resolver && err.message.contains("at most") => ApiError::TooLarge(msg),
            "VALIDATION" if in_resolver => ApiError::Refused(msg),
            "VALIDATION" => ApiError::Transient(format!(
                "{msg}: the server could not take {operation} as sent; is it an older or newer Rollcall than this scanner ({})?",
                crate::VERSION
            )),
            _ => ApiError::Transient(msg),
        });
    }
    if status == 413 {
        let body = truncate(text.trim(), 200);
        return Err(ApiError::TooLarge(format!("the server at {endpoint} answered HTTP 413 ({body})")));
    }
    if status == 401 {
        return Err(ApiError::BadKey(format!("the server at {endpoint} answered HTTP 401: {}", truncate(text, 200))));
    }
    let body = truncate(text.trim(), 200);
    let hint = match status {
        200..=299 => None,
        404 | 405 => Some("is --server right?"),
        403 => Some("a captive portal or a proxy in the way, or is --server right?"),
        408 | 429 | 500..=599 => Some("the server is busy or down; retrying"),
        _ => Some("retrying"),
    };
    if let Some(hint) = hint {
        return Err(ApiError::Transient(format!("the server at {endpoint} answered HTTP {status}: {hint} ({body})")));
    }
    match parsed.and_then(|p| p.data) {
        Some(data) => Ok(data),
        // A 200 that is not our JSON: a captive portal or a proxy page. Try later.
        None => Err(ApiError::Transient(format!(
            "the server at {endpoint} answered HTTP {status} with something that is not Rollcall's GraphQL \
             (a captive portal? is --server right?): {body}"
        ))),
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

#[cfg(test)]
mod tests {
    use super::*;

    type Data = submit_sightings::ResponseData;
    const URL: &str = "http://rollcall.test/graphql";

    fn answer(status: u16, body: &str) -> Result<Data, ApiError> {
        interpret::<Data>(URL, "SubmitSightings", status, body)
    }

    fn transient(r: Result<Data, ApiError>) -> String {
        match r {
            Err(ApiError::Transient(msg)) => msg,
            other => panic!("expected a transient error, got {other:?}"),
        }
    }

    #[test]
    fn wrong_paths_portals_and_proxies_are_transient_and_say_what_the_server_answered() {
        let msg = transient(answer(404, "Not Found"));
        assert!(
            msg.contains("the server at http://rollcall.test/graphql answered HTTP 404: is --server right?"),
            "{msg}"
        );
        assert!(msg.contains("Not Found"), "the server's answer is quoted: {msg}");
        let msg = transient(answer(403, "<html>Log in to the venue Wi-Fi</html>"));
        assert!(msg.contains("403") && msg.contains("captive portal") && msg.contains("venue Wi-Fi"), "{msg}");
        assert!(matches!(answer(413, "Request Entity Too Large"), Err(ApiError::TooLarge(m)) if m.contains("413")));
        let msg = transient(answer(200, "<html>Welcome to FreeWifi</html>"));
        assert!(msg.contains("not Rollcall's GraphQL") && msg.contains("FreeWifi"), "{msg}");
        transient(answer(400, "bad request"));
        transient(answer(502, "Bad Gateway"));
        transient(answer(429, ""));
    }

    #[test]
    fn only_a_coded_validation_error_from_the_resolver_refuses_the_batch() {
        // The resolver refused the batch: permanent.
        let body = r#"{"data":null,"errors":[{"message":"sighting 3: seenAt is not a time","path":["submitSightings"],
            "extensions":{"code":"VALIDATION"}}]}"#;
        assert!(matches!(answer(200, body), Err(ApiError::Refused(m)) if m.contains("seenAt is not")));
        // A query the server cannot even parse (schema drift): VALIDATION but no path.
        let body = r#"{"errors":[{"message":"Unknown field \"belowRssi\"","extensions":{"code":"VALIDATION"}}]}"#;
        let msg = transient(answer(200, body));
        assert!(msg.contains("Unknown field") && msg.contains("older or newer Rollcall"), "{msg}");
        // The server's own body-size limit.
        let body =
            r#"{"errors":[{"message":"request body is larger than the limit","extensions":{"code":"VALIDATION"}}]}"#;
        assert!(matches!(answer(413, body), Err(ApiError::TooLarge(_))));
        // The resolver's batch-size limit.
        let body = r#"{"errors":[{"message":"a batch holds at most 5000 sightings; this one has 6000","path":["submitSightings"],
            "extensions":{"code":"VALIDATION"}}]}"#;
        assert!(matches!(answer(200, body), Err(ApiError::TooLarge(_))));
        // An error without a code, whatever it says.
        let body = r#"{"errors":[{"message":"Unknown field \"x\" on type \"Mutation\""}]}"#;
        assert!(transient(answer(200, body)).contains("(no code)"));
        // The server's transient codes, and a scope the key does not have (yet).
        for code in ["INTERNAL", "RATE_LIMITED", "FORBIDDEN", "NOT_FOUND"] {
            let body = format!(
                r#"{{"errors":[{{"message":"m","path":["submitSightings"],"extensions":{{"code":"{code}"}}}}]}}"#
            );
            transient(answer(200, &body));
        }
    }

    #[test]
    fn a_bad_key_is_a_bad_key() {
        let body = r#"{"errors":[{"message":"invalid API key","extensions":{"code":"UNAUTHENTICATED"}}]}"#;
        assert!(matches!(answer(401, body), Err(ApiError::BadKey(_))));
        assert!(matches!(answer(200, body), Err(ApiError::BadKey(_))));
        assert!(matches!(answer(401, "Unauthorized"), Err(ApiError::BadKey(_))));
    }

    #[test]
    fn data_is_data() {
        let body = r#"{"data":{"submitSightings":{"accepted":1,"checkIns":1,"duplicates":0,"unknownDevices":0,"unregistered":0,"outsideEvent":0,"belowRssi":0,
            "rejected":[],"replayed":false}}}"#;
        let data = answer(200, body);
        assert!(matches!(&data, Ok(d) if d.submit_sightings.accepted == 1), "{data:?}");
    }
}
