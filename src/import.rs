//! Importing attendees from CSV, shared by `rollcall import users` and the
//! `importAttendees` mutation (the console's import page), so a file is
//! judged by the same rules whichever way it comes in.
//!
//! Rows are `email,name[,bleUuid][,eventId]`; a header row (first cell
//! `email`) names the columns and may put them in another order. A person
//! may appear on several rows, one per event they are registered for. A row
//! is refused, with its line and a reason, when:
//! - a cell is not valid (e-mail, name, BLE UUID, event id);
//! - it repeats an earlier row's e-mail and event (or repeats an e-mail
//!   without naming an event: it would add nothing);
//! - its event does not exist, or the caller may not register people for it;
//! - its BLE UUID belongs to someone else, or to an earlier new person in
//!   the file.
//!
//! Existing e-mails are left as they are, so running an import again is
//! harmless. [`apply`] with `dry_run` reads everything a real run reads and
//! writes nothing: that is the console's preview.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use chrono::Utc;
use uuid::Uuid;

use crate::domain::{BleUuid, Email, PersonName};
use crate::store::{Event, ImportRow, ImportSummary, StoreError, SurrealStore};

/// A row refused: its line number and why.
pub type RefusedRow = (usize, String);

/// A CSV file read and checked on its own, before the database is asked.
#[derive(Debug, Default)]
pub struct ParsedCsv {
    /// The rows that passed, in file order.
    pub rows: Vec<ImportRow>,
    /// The rows refused, with line numbers.
    pub refused: Vec<RefusedRow>,
}

/// Rows per database round trip. All rows of one e-mail go in one chunk, so
/// a person created by an early row is not counted as "existing" by a later one.
const CHUNK: usize = 1000;

/// Reads `email,name[,bleUuid][,eventId]` rows from `input`. With
/// `forced_event`, every row is registered for it and the column is ignored.
pub fn parse_users_csv(input: impl Read, forced_event: Option<Uuid>) -> ParsedCsv {
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(input);
    let mut parsed = ParsedCsv::default();
    let mut seen: HashSet<(String, Option<Uuid>)> = HashSet::new();
    let mut seen_emails: HashSet<String> = HashSet::new();
    let (mut ble_col, mut event_col) = (2, 3);
    for (i, record) in reader.records().enumerate() {
        let line = i + 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line() as usize);
                parsed.refused.push((line, format!("unreadable row: {e}")));
                continue;
            }
        };
        let line = record.position().map_or(line, |p| p.line() as usize);
        if i == 0 && record.get(0).is_some_and(|c| c.eq_ignore_ascii_case("email")) {
            let find = |name: &str| record.iter().position(|c| c.eq_ignore_ascii_case(name));
            ble_col = find("bleUuid").or_else(|| find("ble_uuid")).unwrap_or(usize::MAX);
            event_col = find("eventId").or_else(|| find("event_id")).unwrap_or(usize::MAX);
            continue;
        }
        if record.iter().all(str::is_empty) {
            continue;
        }
        let cell = |n: usize| record.get(n).filter(|c| !c.is_empty());
        let row = (|| -> Result<ImportRow, String> {
            let email = Email::parse(cell(0).unwrap_or("")).map_err(|e| e.to_string())?;
            let name = PersonName::parse(cell(1).unwrap_or("")).map_err(|e| e.to_string())?;
            let ble = match cell(ble_col) {
                Some(b) => BleUuid::parse(b).map_err(|e| format!("bleUuid: {e}"))?,
                None => BleUuid::random(),
            };
            let event = match (forced_event, cell(event_col)) {
                (Some(e), _) => Some(e),
                (None, Some(e)) => Some(Uuid::parse_str(e).map_err(|_| format!("`{e}` is not an event id"))?),
                (None, None) => None,
            };
            Ok(ImportRow {
                line,
                email: email.as_str().to_owned(),
                name: name.as_str().to_owned(),
                ble_uuid: ble.to_canonical(),
                event,
            })
        })();
        match row {
            Ok(row) if seen_emails.contains(&row.email) && row.event.is_none() => parsed
                .refused
                .push((line, format!("{} appears earlier in this file, and this row names no event", row.email))),
            Ok(row) if !seen.insert((row.email.clone(), row.event)) => {
                parsed.refused.push((line, format!("{} appears earlier in this file for the same event", row.email)));
            }
            Ok(row) => {
                seen_emails.insert(row.email.clone());
                parsed.rows.push(row);
            }
            Err(reason) => parsed.refused.push((line, reason)),
        }
    }
    parsed
}

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Accounts created, rows whose e-mail had an account, registrations added.
    pub summary: ImportSummary,
    /// Rows that would be (or were) imported, in file order.
    pub rows: Vec<ImportRow>,
    /// Every refused row, by line, whether refused by the file or the database.
    pub refused: Vec<RefusedRow>,
}

/// Checks `parsed` against the database and, unless `dry_run`, imports it.
/// `may_register` says whether the caller may register people for an event
/// (the CLI may for all; an organiser only for their own), and whether a row
/// without an event is allowed (`None`). `progress` is told of each chunk.
pub async fn apply(
    store: &SurrealStore,
    parsed: ParsedCsv,
    dry_run: bool,
    may_register: impl Fn(Option<&Event>) -> Result<(), String>,
    mut progress: impl FnMut(usize),
) -> Result<ImportReport, StoreError> {
    let ParsedCsv { rows, mut refused } = parsed;
    let mut events: HashMap<Uuid, Option<Event>> = HashMap::new();
    for id in rows.iter().filter_map(|r| r.event) {
        if let std::collections::hash_map::Entry::Vacant(slot) = events.entry(id) {
            slot.insert(store.events().get(id).await?);
        }
    }
    let mut allowed = Vec::with_capacity(rows.len());
    for row in rows {
        let verdict = match row.event {
            Some(id) => match events.get(&id).and_then(Option::as_ref) {
                Some(event) => may_register(Some(event)),
                None => Err(format!("no event has the id {id}")),
            },
            None => may_register(None),
        };
        match verdict {
            Ok(()) => allowed.push(row),
            Err(reason) => refused.push((row.line, reason)),
        }
    }

    // Group by e-mail (stable, so each person's rows keep their order), then
    // cut chunks only between people.
    let mut by_email = allowed;
    by_email.sort_by(|a, b| a.email.cmp(&b.email));
    let mut summary = ImportSummary::default();
    let mut kept = Vec::with_capacity(by_email.len());
    let mut rows = by_email.into_iter().peekable();
    while rows.peek().is_some() {
        let mut chunk: Vec<ImportRow> = rows.by_ref().take(CHUNK).collect();
        while let (Some(last), Some(next)) = (chunk.last(), rows.peek()) {
            if last.email != next.email {
                break;
            }
            chunk.extend(rows.next());
        }
        let n = chunk.len();
        let users = store.users();
        let s = if dry_run {
            users.preview_import(chunk.clone(), Utc::now()).await?
        } else {
            users.import(chunk.clone(), Utc::now()).await?
        };
        let refused_lines: HashSet<usize> = s.refused.iter().map(|(line, _)| *line).collect();
        kept.extend(chunk.into_iter().filter(|r| !refused_lines.contains(&r.line)));
        summary.created += s.created;
        summary.existing += s.existing;
        summary.registered += s.registered;
        refused.extend(s.refused);
        progress(n);
    }
    kept.sort_by_key(|r| r.line);
    refused.sort();
    Ok(ImportReport { summary, rows: kept, refused })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT_A: &str = "0190f7a4-0000-7000-8000-00000000000a";
    const EVENT_B: &str = "0190f7a4-0000-7000-8000-00000000000b";

    fn parse(csv: &str) -> ParsedCsv {
        parse_users_csv(csv.as_bytes(), None)
    }

    #[test]
    fn one_person_may_be_registered_for_several_events() {
        let p = parse(&format!(
            "email,name,eventId\nada@example.org,Ada,{EVENT_A}\nada@example.org,Ada,{EVENT_B}\ngrace@example.org,Grace,{EVENT_A}\n"
        ));
        assert!(p.refused.is_empty(), "{:?}", p.refused);
        assert_eq!(p.rows.len(), 3);
        assert_eq!(p.rows[1].event, Uuid::parse_str(EVENT_B).ok());
    }

    #[test]
    fn a_repeated_email_and_event_is_refused_with_its_line() {
        let p = parse(&format!(
            "email,name,eventId\nada@example.org,Ada,{EVENT_A}\nADA@example.org,Ada,{EVENT_A}\nada@example.org,Ada,\n"
        ));
        assert_eq!(p.rows.len(), 1);
        let lines: Vec<usize> = p.refused.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [3, 4], "{:?}", p.refused);
        assert!(p.refused[0].1.contains("same event"), "{:?}", p.refused);
    }

    #[test]
    fn bad_cells_are_refused_with_a_reason() {
        let p = parse("not-an-email,X\nok@example.org,\nb@example.org,B,xyz\nc@example.org,C,,nope\n");
        let reasons: Vec<&str> = p.refused.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(p.refused.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(reasons[2].starts_with("bleUuid"), "{reasons:?}");
        assert!(reasons[3].contains("not an event id"), "{reasons:?}");
        assert!(p.rows.is_empty());
    }

    #[test]
    fn a_header_may_reorder_the_columns_and_a_forced_event_wins() {
        let forced = Uuid::parse_str(EVENT_B).ok();
        let p = parse_users_csv(
            format!("email,name,eventId,bleUuid\nada@example.org,Ada,{EVENT_A},6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a\n")
                .as_bytes(),
            forced,
        );
        assert_eq!(p.rows[0].event, forced);
        assert_eq!(p.rows[0].ble_uuid, "6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a");
    }
}
