//! Reports on an event, for GraphQL (`eventReport`) and HTTP (the
//! attendance CSV): each loads the event's registrations and attendance rows
//! once and joins them. The caller checks that the principal manages the
//! event.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, DurationRound, SecondsFormat, Utc};
use uuid::Uuid;

use super::{Ingest, Scope};
use crate::store::{AttendanceRecord, Registration, RegistrationStatus, StoreError};

/// How an event went (`eventReport`).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Standing registrations (walk-ins included).
    pub registered: i64,
    /// Users with a check-in.
    pub checked_in: i64,
    /// Registered users with no check-in.
    pub no_shows: i64,
    /// Registered by walking in.
    pub walk_ins: i64,
    /// Registered users who checked in, over registered users (0 when none).
    pub attendance_rate: f64,
    pub median_dwell_seconds: i64,
    pub mean_dwell_seconds: i64,
    /// Check-ins per 5-minute bucket (its start), in time order, empty
    /// buckets omitted.
    pub arrivals: Vec<(DateTime<Utc>, i64)>,
}

/// Every registration of the event, and its attendance rows with every
/// acknowledged batch in them.
async fn load(ingest: &Ingest, event: Uuid) -> Result<(Vec<Registration>, Vec<AttendanceRecord>), StoreError> {
    ingest.settle(Scope::Event(event)).await;
    let store = ingest.store();
    let regs = store.registrations().for_event(event, None, usize::MAX / 2).await?;
    let rows = store.attendance().for_event(event, None, usize::MAX / 2).await?;
    Ok((regs, rows))
}

/// The event's report.
pub async fn event_report(ingest: &Ingest, event: Uuid) -> Result<Report, StoreError> {
    let (regs, rows) = load(ingest, event).await?;
    Ok(report(&regs, &rows))
}

/// Computes the report from an event's registrations and attendance rows.
pub fn report(regs: &[Registration], rows: &[AttendanceRecord]) -> Report {
    let standing: HashSet<Uuid> =
        regs.iter().filter(|r| r.status == RegistrationStatus::Registered).map(|r| r.user_id).collect();
    let walk_ins = regs.iter().filter(|r| r.status == RegistrationStatus::Registered && r.walk_in).count();
    let attended_registered = rows.iter().filter(|r| standing.contains(&r.user_id)).count();
    let mut dwell: Vec<i64> = rows.iter().map(|r| r.attendance.dwell().num_seconds()).collect();
    dwell.sort_unstable();
    let median = match dwell.len() {
        0 => 0,
        n if n % 2 == 1 => dwell[n / 2],
        n => (dwell[n / 2 - 1] + dwell[n / 2]) / 2,
    };
    let mean = if dwell.is_empty() { 0 } else { dwell.iter().sum::<i64>() / dwell.len() as i64 };
    let mut buckets: BTreeMap<DateTime<Utc>, i64> = BTreeMap::new();
    for r in rows {
        let start = r.attendance.first_seen.duration_trunc(Duration::minutes(5)).unwrap_or(r.attendance.first_seen);
        *buckets.entry(start).or_default() += 1;
    }
    Report {
        registered: standing.len() as i64,
        checked_in: rows.len() as i64,
        no_shows: (standing.len() - attended_registered) as i64,
        walk_ins: walk_ins as i64,
        attendance_rate: if standing.is_empty() { 0.0 } else { attended_registered as f64 / standing.len() as f64 },
        median_dwell_seconds: median,
        mean_dwell_seconds: mean,
        arrivals: buckets.into_iter().collect(),
    }
}

/// The attendance CSV's columns.
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

/// Why the CSV could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the CSV: {0}")]
    Write(String),
}

/// The event's attendance as CSV: one row per registration, RFC 4180
/// quoting, people's text made inert for spreadsheets.
pub async fn attendance_csv(ingest: &Ingest, event: Uuid) -> Result<Vec<u8>, CsvError> {
    let (regs, rows) = load(ingest, event).await?;
    let store = ingest.store();
    let rows: HashMap<Uuid, &AttendanceRecord> = rows.iter().map(|r| (r.user_id, r)).collect();
    let user_ids: Vec<Uuid> = regs.iter().map(|r| r.user_id).collect();
    let users: HashMap<Uuid, _> = store.users().get_many(&user_ids).await?.into_iter().map(|u| (u.id, u)).collect();
    let write = |e: csv::Error| CsvError::Write(e.to_string());
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(COLUMNS).map_err(write)?;
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    for reg in &regs {
        let user = users.get(&reg.user_id);
        let a = rows.get(&reg.user_id).map(|r| &r.attendance);
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
        ])
        .map_err(write)?;
    }
    out.into_inner().map_err(|e| CsvError::Write(e.to_string()))
}

/// `cell` as a spreadsheet shows it without running it: a cell that starts
/// with `= + - @`, a tab or a carriage return is a formula to Excel, LibreOffice
/// and Sheets (`=HYPERLINK(...)` in a name), so it gets a leading `'`, as
/// OWASP's CSV-injection guidance says. Only text people typed goes through
/// here; the server's own numbers and times never start so.
fn inert(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{cell}") } else { cell.to_owned() }
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
