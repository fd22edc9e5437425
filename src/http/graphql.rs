//! `/graphql` over HTTP and WebSocket.
//!
//! - `POST` takes one JSON operation. JSON-array batches are refused: each
//!   operation of a batch would get the full complexity budget.
//! - `GET` runs queries from the URL; a mutation over GET is refused with 405,
//!   since GET must be safe to repeat and to prefetch. A browser asking for
//!   HTML gets the playground instead.
//! - A WebSocket upgrade speaks `graphql-transport-ws` (and the legacy
//!   `graphql-ws`), with credentials in the `connection_init` payload.
//!
//! The caller's credential is checked before the schema runs: a presented
//! credential that does not check out gets 401, never anonymous access.

use std::time::Duration;

use async_graphql::Request as GqlRequest;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{HttpState, playground};
use crate::auth::{AuthError, Credential, Principal};
use crate::graphql::{ClientAddr, SCANNER_ID_HEADER, ScannerIdentity};
use crate::state::AppState;

/// A GraphQL-shaped error body outside of execution.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `POST /graphql`.
pub async fn post(
    State(state): State<HttpState>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let msg = format!("request body is larger than the limit of {} bytes", state.app.limits.max_body_bytes);
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, "VALIDATION", &msg);
        }
        Err(rejection) => return error_response(rejection.status(), "VALIDATION", "could not read the request body"),
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "VALIDATION",
            "send the operation as JSON, with Content-Type: application/json",
        );
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return error_response(
            StatusCode::BAD_REQUEST,
            "VALIDATION",
            "batched requests are not supported: send one operation per request",
        );
    }
    let request = match parse_body(&body) {
        Ok(r) => r,
        Err(msg) => return error_response(StatusCode::BAD_REQUEST, "VALIDATION", &msg),
    };
    execute(&state, &headers, client.map_or(ClientAddr(None), |c| c.0), request).await
}

/// Parses a JSON body `{"query", "variables"?, "operationName"?, "extensions"?}`.
fn parse_body(body: &[u8]) -> Result<GqlRequest, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    if !value.get("query").is_some_and(serde_json::Value::is_string) {
        return Err("the body must be a JSON object with a `query` string".into());
    }
    serde_json::from_value(value).map_err(|e| format!("the body is not a GraphQL request: {e}"))
}

/// `GET /graphql`: a query in the URL, the playground, or a WebSocket upgrade.
pub async fn get(State(state): State<HttpState>, req: Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    let is_upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade {
        return super::ws::upgrade(state, &mut parts).await;
    }
    let query = parts.uri.query().unwrap_or("");
    let has_query = query.split('&').any(|kv| kv.starts_with("query="));
    if !has_query {
        let wants_html =
            parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"));
        if wants_html && state.app.web.playground_on() {
            return playground::page().await;
        }
        return error_response(StatusCode::BAD_REQUEST, "VALIDATION", "missing the `query` parameter");
    }
    let request = match async_graphql::http::parse_query_string(query) {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "VALIDATION", &format!("bad query string: {e}")),
    };
    if is_mutation(&request) {
        let mut resp = error_response(StatusCode::METHOD_NOT_ALLOWED, "VALIDATION", "mutations must be sent with POST");
        resp.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return resp;
    }
    let client = parts.extensions.get::<ClientAddr>().copied().unwrap_or(ClientAddr(None));
    execute(&state, &parts.headers, client, request).await
}

/// What the request would run: a query, a mutation or a subscription
/// (`None` when it does not parse or names no operation it holds).
pub(super) fn operation_type(req: &GqlRequest) -> Option<OperationType> {
    // Execution reports a syntax error.
    let doc = async_graphql::parser::parse_query(&req.query).ok()?;
    match &doc.operations {
        DocumentOperations::Single(op) => Some(op.node.ty),
        DocumentOperations::Multiple(ops) => match &req.operation_name {
            Some(name) => ops.get(name.as_str()).map(|op| op.node.ty),
            // Without a name, execution refuses the document; a mutation in
            // it is still treated as one.
            None => ops.values().map(|op| op.node.ty).find(|ty| *ty == OperationType::Mutation),
        },
    }
}

fn is_mutation(req: &GqlRequest) -> bool {
    operation_type(req) == Some(OperationType::Mutation)
}

/// The error a query gets when it runs past the time limit.
pub(super) fn timed_out(limit: Duration) -> async_graphql::ServerError {
    metrics::counter!("rollcall_graphql_timeouts_total").increment(1);
    let message = format!("the query ran longer than {} ms and was stopped: ask for less", limit.as_millis());
    let mut error = async_graphql::ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", "TIMEOUT");
    error.extensions = Some(extensions);
    error
}

/// How long a request runs before the server checks, and then every so
/// often re-checks, that its database still answers.
const DB_CHECK_AFTER: Duration = Duration::from_secs(3);

/// Runs the request. A database server that went away does not fail the
/// client's calls (it queues them until it reconnects), so a request that
/// takes long is given up with `UNAVAILABLE` once the database stops
/// answering a ping; a merely slow one runs on (to its time limit, if a query).
async fn execute(state: &HttpState, headers: &HeaderMap, client: ClientAddr, request: GqlRequest) -> Response {
    let mut work = std::pin::pin!(run(state, headers, client, request));
    loop {
        tokio::select! {
            resp = &mut work => return resp,
            _ = tokio::time::sleep(DB_CHECK_AFTER) => {
                if let Err(e) = state.app.store.ping(Duration::from_secs(2)).await {
                    tracing::warn!(error = %e, "giving up a request: the database does not answer");
                    return error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "UNAVAILABLE",
                        "the database is unavailable; retry shortly",
                    );
                }
            }
        }
    }
}

/// Authenticates and executes: a query within the time limit, a mutation to its end.
async fn run(state: &HttpState, headers: &HeaderMap, client: ClientAddr, request: GqlRequest) -> Response {
    let principal = match authenticate(&state.app, Credential::from_headers(headers)).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let identity = match scanner_identity(headers) {
        Ok(i) => i,
        Err(msg) => return error_response(StatusCode::BAD_REQUEST, "VALIDATION", msg),
    };
    let mutation = is_mutation(&request);
    let media = Media::accepted(headers);
    let run = state.schema.execute(request.data(principal).data(client).data(identity));
    if mutation {
        return media.respond(run.await);
    }
    let limit = state.app.limits.request_timeout();
    match tokio::time::timeout(limit, run).await {
        Ok(resp) => media.respond(resp),
        Err(_) => {
            let body = json!({ "data": null, "errors": [timed_out(limit)] });
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
    }
}

/// The scanner identity the request names, if any; one that is not a UUID
/// is refused rather than ignored, since ignoring it would quietly turn off
/// what it is for.
fn scanner_identity(headers: &HeaderMap) -> Result<ScannerIdentity, &'static str> {
    let Some(value) = headers.get(SCANNER_ID_HEADER) else { return Ok(ScannerIdentity(None)) };
    let parsed = value.to_str().ok().and_then(|v| uuid::Uuid::parse_str(v.trim()).ok());
    match parsed {
        Some(id) if !id.is_nil() => Ok(ScannerIdentity(Some(id))),
        _ => Err("the x-rollcall-scanner-id header must be the scanner's identity, a UUID (not nil)"),
    }
}

/// The response media types of the GraphQL-over-HTTP specification.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Media {
    /// `application/graphql-response+json`: the status tells a request that
    /// never ran (400) from one that did (200).
    GraphqlResponse,
    /// `application/json`, for clients that do not ask for the above: always
    /// 200 for a GraphQL answer, as they expect.
    Json,
}

impl Media {
    /// What the client's `Accept` asks for; `application/json` when it asks
    /// for neither (the specification's legacy rule).
    fn accepted(headers: &HeaderMap) -> Self {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let wants = |media: &str| accept.split(',').any(|a| a.split(';').next().is_some_and(|m| m.trim() == media));
        if wants("application/graphql-response+json") { Media::GraphqlResponse } else { Media::Json }
    }

    fn respond(self, resp: async_graphql::Response) -> Response {
        // A request error: nothing executed (parse, validation, variables).
        let unexecuted = resp.data == async_graphql::Value::Null
            && !resp.errors.is_empty()
            && resp.errors.iter().all(|e| e.path.is_empty());
        let (status, content_type) = match self {
            Media::GraphqlResponse if unexecuted => (StatusCode::BAD_REQUEST, "application/graphql-response+json"),
            Media::GraphqlResponse => (StatusCode::OK, "application/graphql-response+json"),
            Media::Json => (StatusCode::OK, "application/json"),
        };
        // A request that never ran has no `data` at all, as the specification says.
        let body = if unexecuted {
            serde_json::to_string(&json!({ "errors": resp.errors }))
        } else {
            serde_json::to_string(&resp)
        };
        let body = body.unwrap_or_else(|_| {
            r#"{"data":null,"errors":[{"message":"internal error","extensions":{"code":"INTERNAL"}}]}"#.to_owned()
        });
        (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
    }
}

/// Resolves a credential, turning failures into the response to send.
async fn authenticate(
    app: &AppState,
    credential: Result<Option<Credential>, AuthError>,
) -> Result<Principal, Response> {
    let result = match credential {
        Ok(c) => Principal::authenticate(&app.store, &app.jwt, c).await,
        Err(e) => Err(e),
    };
    result.map_err(|err| match err {
        AuthError::Store(e) => {
            tracing::error!(error = ?e, "credential check failed");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")
        }
        other => error_response(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", &other.to_string()),
    })
}
