//! The deployed scanners' HTTP protocol (DESIGN.md, "Seed compatibility"):
//! `GET /active-events` and `POST /batch-checkin`, with `x-api-key` and Unix
//! millisecond times. Both run the same code as GraphQL (`crate::app::ingest`).
//!
//! That protocol has no batch id, so one is derived from the key and the
//! exact request body: a scanner that resends a request it got no answer to
//! gets the stored answer instead of a second application.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::HttpState;
use crate::app::{IngestError, Source};
use crate::auth::{AuthError, Credential, Principal, ScannerScope};
use crate::domain::batch::MAX_BATCH_SIZE;
use crate::domain::ingest::{SightingIn, SightingStatus};

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The scanner behind the request's `x-api-key` (or `Authorization: ApiKey`).
async fn scanner(state: &HttpState, headers: &HeaderMap) -> Result<(Uuid, ScannerScope), Response> {
    let credential = match Credential::from_headers(headers) {
        Ok(Some(c @ Credential::ApiKey(_))) => c,
        Ok(_) => return Err(error(StatusCode::UNAUTHORIZED, "missing x-api-key header")),
        Err(e) => return Err(error(StatusCode::UNAUTHORIZED, &e.to_string())),
    };
    match Principal::authenticate(&state.app.store, &state.app.jwt, Some(credential)).await {
        Ok(Principal::Scanner { key, scope }) => Ok((key.id, scope)),
        Ok(_) => Err(error(StatusCode::UNAUTHORIZED, "invalid API key")),
        Err(AuthError::Store(e)) => {
            tracing::error!(error = ?e, "credential check failed");
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
        }
        Err(e) => Err(error(StatusCode::UNAUTHORIZED, &e.to_string())),
    }
}

/// `GET /active-events`: the active events the key may report for.
pub async fn active_events(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let (_, scope) = match scanner(&state, &headers).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    match state.app.store.events().active().await {
        Ok(events) => {
            let events: Vec<_> = events
                .iter()
                .filter(|e| scope.covers(e))
                .map(|e| {
                    json!({
                        "id": e.id.to_string(),
                        "name": e.name,
                        "startTime": e.starts_at.timestamp_millis(),
                        "endTime": e.ends_at.timestamp_millis(),
                        "isActive": true,
                    })
                })
                .collect();
            Json(json!({ "success": true, "events": events })).into_response()
        }
        Err(e) => {
            tracing::error!(error = ?e, "listing active events failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// One record of the old protocol.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    ble_uuid: String,
    /// Unix milliseconds.
    timestamp: i64,
    event_id: Option<String>,
    #[allow(dead_code)]
    scanner_source: Option<String>,
    rssi: Option<i32>,
    #[allow(dead_code)]
    device_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Body {
    records: Vec<Record>,
}

/// `POST /batch-checkin`.
pub async fn batch_checkin(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (key_id, scope) = match scanner(&state, &headers).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let body = match body {
        Ok(b) => b,
        Err(r) => return error(r.status(), "could not read the request body"),
    };
    let parsed: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("malformed body: {e}")),
    };
    if parsed.records.len() > MAX_BATCH_SIZE {
        return error(StatusCode::BAD_REQUEST, &format!("at most {MAX_BATCH_SIZE} records per request"));
    }
    let sightings: Vec<SightingIn> = parsed
        .records
        .iter()
        .map(|r| SightingIn {
            identifier: r.ble_uuid.clone(),
            // An impossible timestamp becomes one that validation rejects.
            seen_at: DateTime::<Utc>::from_timestamp_millis(r.timestamp).unwrap_or(DateTime::<Utc>::MIN_UTC),
            rssi: r.rssi,
            event_id: r.event_id.as_deref().map(|e| Uuid::parse_str(e.trim()).unwrap_or(Uuid::nil())),
        })
        .collect();
    let digest = Sha256::new().chain_update(key_id.as_bytes()).chain_update(&body).finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    let batch_id = uuid::Builder::from_random_bytes(id).into_uuid();
    // This route names no scanner identity: its batch ids are per key.
    let source = Source::Scanner { key_id, owner: None, identity: None, scope };
    let outcome = match state.app.ingest.submit(&source, batch_id, None, sightings, false).await {
        Ok(o) => o,
        Err(e @ IngestError::TooLarge(_)) | Err(e @ IngestError::Invalid(_)) => {
            return error(StatusCode::BAD_REQUEST, &e.to_string());
        }
        Err(e @ IngestError::Contended) | Err(e @ IngestError::Unavailable) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
        Err(e @ IngestError::ReusedBatchId) => return error(StatusCode::CONFLICT, &e.to_string()),
        Err(e @ IngestError::ForeignIdentity(_)) => return error(StatusCode::FORBIDDEN, &e.to_string()),
        Err(IngestError::Store(e)) => {
            tracing::error!(error = ?e, "batch-checkin failed");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let reasons: std::collections::HashMap<usize, &str> =
        outcome.rejected.iter().map(|r| (r.index, r.reason.as_str())).collect();
    let (mut successful, mut duplicates, mut errors) = (0, 0, 0);
    let results: Vec<_> = parsed
        .records
        .iter()
        .zip(&outcome.statuses)
        .enumerate()
        .map(|(i, (r, status))| match status {
            SightingStatus::Counted => {
                successful += 1;
                json!({ "bleUuid": r.ble_uuid, "status": "success" })
            }
            SightingStatus::Duplicate => {
                duplicates += 1;
                json!({ "bleUuid": r.ble_uuid, "status": "duplicate" })
            }
            other => {
                errors += 1;
                let reason = match other {
                    SightingStatus::Rejected => reasons.get(&i).copied().unwrap_or("rejected"),
                    SightingStatus::UnknownDevice => "unknown device",
                    SightingStatus::IdentityNotAccepted => "this kind of identifier does not count at this event",
                    SightingStatus::Unregistered => "not registered for this event",
                    SightingStatus::OutsideEvent => "outside the event's time window",
                    _ => "signal weaker than the event's minimum RSSI",
                };
                json!({ "bleUuid": r.ble_uuid, "status": "error", "error": reason })
            }
        })
        .collect();
    Json(json!({
        "success": true,
        "processed": parsed.records.len(),
        "successful": successful,
        "duplicates": duplicates,
        "errors": errors,
        "results": results,
    }))
    .into_response()
}
