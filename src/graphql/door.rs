//! Check-ins that do not depend on the phone advertising (docs/identity.md):
//! the door screen's rotating QR code (`doorCode`, `checkInWithCode`) and
//! presence reported by the phone (`reportPresence`); and the `source`
//! every check-in carries.

use async_graphql::{Context, ErrorExtensions, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

use super::attendance::AttendanceRecord;
use super::error::ApiError;
use super::events::managed_event;
use super::{parse_id, require_user, state};
use crate::app::DoorError;
use crate::app::presence::PresenceReport;
use crate::domain::CheckInSource;
use crate::domain::door::{DoorCodeError, SLOT_SECS};

/// Where a check-in came from.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "CheckInSource")]
pub enum CheckInSourceGql {
    /// A scanner heard the phone's advertisement.
    Scanner,
    /// An organiser recorded it (`recordAttendance`).
    Manual,
    /// The attendee's app scanned the door screen's code (`checkInWithCode`).
    DoorCode,
    /// The attendee's app heard the venue's beacon (`reportPresence`).
    Phone,
}

impl From<CheckInSource> for CheckInSourceGql {
    fn from(s: CheckInSource) -> Self {
        match s {
            CheckInSource::Scanner => Self::Scanner,
            CheckInSource::Manual => Self::Manual,
            CheckInSource::DoorCode => Self::DoorCode,
            CheckInSource::Phone => Self::Phone,
        }
    }
}

/// The code a door screen shows now, for attendees' apps to scan.
#[derive(SimpleObject)]
pub struct DoorCode {
    pub event_id: ID,
    /// What the QR code holds; the app sends it to `checkInWithCode`.
    pub code: String,
    /// The QR code as an SVG image (black on white, with its quiet zone).
    pub svg: String,
    /// When this code began to be shown.
    pub valid_from: DateTime<Utc>,
    /// When the next code replaces it: fetch again then. (A code is still
    /// accepted for one more period, for scans in flight.)
    pub next_at: DateTime<Utc>,
    /// How long each code is shown.
    pub slot_seconds: i32,
}

#[derive(Default)]
pub struct DoorQuery;

#[Object]
impl DoorQuery {
    /// The door code of an event now, with its QR image. The event's
    /// organiser or an admin (the door screen logs in as them).
    async fn door_code(&self, ctx: &Context<'_>, event_id: ID) -> Result<DoorCode> {
        let event = managed_event(ctx, &event_id).await?;
        let shown = state(ctx)?.door.code_at(event.id, Utc::now());
        let svg = qr_svg(&shown.code)?;
        Ok(DoorCode {
            event_id: ID(event.id.to_string()),
            code: shown.code,
            svg,
            valid_from: shown.valid_from,
            next_at: shown.next_at,
            slot_seconds: SLOT_SECS as i32,
        })
    }
}

#[derive(Default)]
pub struct DoorMutation;

#[Object]
impl DoorMutation {
    /// Checks the signed-in user in with the code their app scanned at the
    /// door. With `eventId`, a code for another event is refused. Errors are
    /// `VALIDATION` with `extensions.reason`: `INVALID_CODE`, `EXPIRED_CODE`,
    /// `WRONG_EVENT` or `NOT_COUNTED` (outside the event's window, not
    /// registered where registration is required...).
    async fn check_in_with_code(
        &self,
        ctx: &Context<'_>,
        code: String,
        event_id: Option<ID>,
    ) -> Result<AttendanceRecord> {
        let me = require_user(ctx)?;
        let expected = event_id.as_ref().map(|id| parse_id("event", id)).transpose()?;
        let record = state(ctx)?.door.check_in(me, &code, expected, Utc::now()).await.map_err(door_error)?;
        Ok(AttendanceRecord { record, departure_gap: None })
    }

    /// The signed-in user's phone heard the venue's iBeacon (`beacon`:
    /// `<uuid>[:<major>[:<minor>]]`) at `at`, with this RSSI. Counts only
    /// where the event's policy has `acceptPhoneReports` (else `FORBIDDEN`),
    /// for the event's `venueBeacon`, with `at` within 5 minutes of the
    /// server's clock; one report per user and event counts every 30 s
    /// (`RATE_LIMITED`, with `extensions.retryAfterSeconds`).
    async fn report_presence(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        beacon: String,
        rssi: Option<i32>,
        at: DateTime<Utc>,
    ) -> Result<AttendanceRecord> {
        let me = require_user(ctx)?;
        let event = parse_id("event", &event_id)?;
        let report = PresenceReport { event, beacon, rssi, at };
        let record = state(ctx)?.phone.report(me, &report, Utc::now()).await.map_err(door_error)?;
        Ok(AttendanceRecord { record, departure_gap: None })
    }
}

/// The QR code of `text` as SVG, one unit per module.
fn qr_svg(text: &str) -> Result<String, ApiError> {
    let qr = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("door code QR: {e}")))?;
    Ok(qr.render::<svg::Color<'_>>().module_dimensions(1, 1).quiet_zone(true).build())
}

/// The API's error for a refused code or report, with a `reason` apps can
/// branch on.
fn door_error(e: DoorError) -> async_graphql::Error {
    let message = e.to_string();
    let reason = match e {
        DoorError::Code(DoorCodeError::Invalid) => "INVALID_CODE",
        DoorError::Code(DoorCodeError::Expired) => "EXPIRED_CODE",
        DoorError::WrongEvent => "WRONG_EVENT",
        DoorError::NotCounted(_) => "NOT_COUNTED",
        DoorError::RateLimited { retry_after, .. } => {
            return async_graphql::Error::from(ApiError::RateLimited(message))
                .extend_with(|_, x| x.set("retryAfterSeconds", retry_after));
        }
        DoorError::NoEvent => return ApiError::not_found("event").into(),
        DoorError::NotAccepted(m) => return ApiError::Forbidden(m).into(),
        DoorError::Invalid(m) => return ApiError::Validation(m).into(),
        DoorError::Ingest(e) => return e.into(),
        DoorError::Store(e) => return ApiError::from(e).into(),
    };
    async_graphql::Error::from(ApiError::Validation(message)).extend_with(|_, x| x.set("reason", reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::presence;

    /// The schema's docs name these figures.
    #[test]
    fn the_documented_limits_hold() {
        assert_eq!(presence::MAX_REPORT_SKEW.num_minutes(), 5);
        assert_eq!(presence::REPORT_INTERVAL.num_seconds(), 30);
        assert_eq!(SLOT_SECS, 30);
    }
}
