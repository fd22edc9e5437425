//! `GET /events/{id}/attendance.csv`: one row per registration, RFC 4180
//! quoting, for the event's organiser or an admin.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::HttpState;
use crate::auth::{AuthError, Credential, Principal};

fn plain(status: StatusCode, msg: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{msg}\n")).into_response()
}

const COLUMNS: [&str; 14] = [
    "user_id",
    "email",
    "name",
    "registration",
    "walk_in",
    "registered_at",
    "checked_in",
    "checked_in_at",
    "last_seen",
    "dwell_seconds",
    "stays",
    "sightings",
    "best_rssi",
    "ble_uuid",
];

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

/// `cell` as a spreadsheet shows it without running it: a cell that starts
/// with `= + - @`, a tab or a carriage return is a formula to Excel, LibreOffice
/// and Sheets (`=HYPERLINK(...)` in a name), so it gets a leading `'`, as
/// OWASP's CSV-injection guidance says. Only text people typed goes through
/// here; the server's own numbers and times never start so.
fn inert(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{cell}") } else { cell.to_owned() }
}

/// The CSV, `None` if the caller may not see it; a missing event is `None` too
/// so that event ids cannot be probed.
async fn build(state: &HttpState, principal: &Principal, event_id: Uuid) -> anyhow::Result<Option<Vec<u8>>> {
    let store = &state.app.store;
    let Some(event) = store.events().get(event_id).await? else { return Ok(None) };
    if !principal.manages(&event) {
        return Ok(None);
    }
    let regs = store.registrations().for_event(event_id, None, usize::MAX / 2).await?;
    let rows: HashMap<Uuid, _> = store
        .attendance()
        .for_event(event_id, None, usize::MAX / 2)
        .await?
        .into_iter()
        .map(|r| (r.user_id, r))
        .collect();
    let user_ids: Vec<Uuid> = regs.iter().map(|r| r.user_id).collect();
    let users: HashMap<Uuid, _> = store.users().get_many(&user_ids).await?.into_iter().map(|u| (u.id, u)).collect();
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(COLUMNS)?;
    let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for reg in &regs {
        let user = users.get(&reg.user_id);
        let row = rows.get(&reg.user_id);
        let a = row.map(|r| &r.attendance);
        let stays = a
            .map(|a| a.stays.iter().map(|s| format!("{}/{}", time(s.from), time(s.to))).collect::<Vec<_>>().join(";"))
            .unwrap_or_default();
        out.write_record([
            reg.user_id.to_string(),
            user.map(|u| inert(&u.email)).unwrap_or_default(),
            user.map(|u| inert(&u.name)).unwrap_or_default(),
            reg.status.as_str().to_owned(),
            reg.walk_in.to_string(),
            time(reg.registered_at),
            a.is_some().to_string(),
            a.map(|a| time(a.first_seen)).unwrap_or_default(),
            a.map(|a| time(a.last_seen)).unwrap_or_default(),
            a.map(|a| a.dwell().num_seconds().to_string()).unwrap_or_default(),
            stays,
            a.map(|a| a.sightings.to_string()).unwrap_or_default(),
            a.and_then(|a| a.best_rssi).map(|r| r.to_string()).unwrap_or_default(),
            user.map(|u| u.ble_uuid.clone()).unwrap_or_default(),
        ])?;
    }
    Ok(Some(out.into_inner()?))
}

#[cfg(test)]
mod tests {
    use super::inert;

    #[test]
    fn formula_starts_are_quoted_and_the_rest_is_kept() {
        for bad in ["=1+1", "+1", "-1", "@A1", "\tx", "\rx"] {
            assert_eq!(inert(bad), format!("'{bad}"));
        }
        for good in ["Ada", "a=b", "", "'quoted"] {
            assert_eq!(inert(good), good);
        }
    }
}
