//! `GET /events/{id}/attendance.csv`: one row per registration, RFC 4180
//! quoting, for the event's organiser or an admin.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::HttpState;
use crate::app::reports;
use crate::auth::{AuthError, Credential, Principal};

fn plain(status: StatusCode, msg: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{msg}\n")).into_response()
}

pub async fn attendance_csv(State(state): State<HttpState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Ok(event_id) = Uuid::parse_str(&id) else {
        return plain(StatusCode::BAD_REQUEST, "not an event id");
    };
    let principal = match Credential::from_headers(&headers) {
        Ok(Some(c)) => Principal::authenticate(&state.app.store, &state.app.jwt, Some(c)).await,
        Ok(None) => Err(AuthError::Missing),
        Err(e) => Err(e),
    };
    let principal = match principal {
        Ok(p) => p,
        Err(AuthError::Store(e)) => {
            tracing::error!(error = ?e, "credential check failed");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
        Err(e) => return plain(StatusCode::UNAUTHORIZED, &e.to_string()),
    };
    match build(&state, &principal, event_id).await {
        Ok(Some(csv)) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"attendance-{event_id}.csv\"")),
            ],
            csv,
        )
            .into_response(),
        Ok(None) => plain(StatusCode::FORBIDDEN, "only the event's organizer or an admin can export its attendance"),
        Err(e) => {
            tracing::error!(error = ?e, "attendance export failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// The CSV, `None` if the caller may not see it; a missing event is `None` too
/// so that event ids cannot be probed.
async fn build(state: &HttpState, principal: &Principal, event_id: Uuid) -> anyhow::Result<Option<Vec<u8>>> {
    let store = &state.app.store;
    let Some(event) = store.events().get(event_id).await? else { return Ok(None) };
    if !principal.manages(&event) {
        return Ok(None);
    }
    Ok(Some(reports::attendance_csv(&state.app.ingest, event_id).await?))
}
