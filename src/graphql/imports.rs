//! `importAttendees`: the CSV import of `rollcall import users`, through the
//! API, so an organiser can import against a running server (the console's
//! import page). The file is judged by [`crate::import`], the same code the
//! CLI runs; `dryRun: true` is the preview, which writes nothing.

use async_graphql::{Context, ID, Object, Result, SimpleObject};

use super::accounts::require_role;
use super::error::ApiError;
use super::{parse_id, state};
use crate::domain::Role;
use crate::import::{self, parse_users_csv};

/// Rows one request may carry; larger files go through `rollcall import users`.
const MAX_ROWS: usize = 5000;

/// One row of an import that passed every check.
#[derive(SimpleObject)]
pub struct ImportedRow {
    /// Its line in the file, from 1 (the header is line 1 when there is one).
    line: i32,
    email: String,
    name: String,
    /// The event the person is registered for, if the row names one.
    event_id: Option<ID>,
}

/// A refused row and why.
#[derive(SimpleObject)]
pub struct RefusedImportRow {
    line: i32,
    reason: String,
}

/// What an import did, or with `dryRun` what it would do.
#[derive(SimpleObject)]
pub struct AttendeeImport {
    /// True when nothing was written (a preview).
    dry_run: bool,
    /// Accounts created (or to be created).
    created: i32,
    /// People whose e-mail already had an account; left as they are.
    existing: i32,
    /// Registrations added (or to be added).
    registered: i32,
    /// The rows that pass, in file order.
    rows: Vec<ImportedRow>,
    /// The rows refused, by line, with the reason.
    refused: Vec<RefusedImportRow>,
}

#[derive(Default)]
pub struct ImportsMutation;

#[Object]
impl ImportsMutation {
    /// Imports attendees from CSV text with rows
    /// `email,name[,bleUuid][,eventId]` (a header row may name and reorder
    /// the columns), by the same rules as `rollcall import users`. One
    /// person may have a row per event. With `eventId`, every row is
    /// registered for that event. With `dryRun`, checks everything and
    /// writes nothing. Organisers may import only into events they run;
    /// admins may also create accounts with no event.
    async fn import_attendees(
        &self,
        ctx: &Context<'_>,
        csv: String,
        event_id: Option<ID>,
        #[graphql(default = false)] dry_run: bool,
    ) -> Result<AttendeeImport> {
        let me = require_role(ctx, &[Role::Admin, Role::Organizer])?;
        let forced = event_id.as_ref().map(|id| parse_id("event", id)).transpose()?;
        let st = state(ctx)?;
        if let Some(id) = forced {
            let event = st.store.events().get(id).await?.ok_or_else(|| ApiError::not_found("event"))?;
            if me.role != Role::Admin && event.organizer_id != me.id {
                return Err(
                    ApiError::Forbidden("only the event's organiser or an admin can import into it".into()).into()
                );
            }
        }
        let parsed = parse_users_csv(csv.as_bytes(), forced);
        if parsed.rows.len() + parsed.refused.len() > MAX_ROWS {
            return Err(ApiError::validation(format!(
                "at most {MAX_ROWS} rows per import: split the file, or use `rollcall import users` on the server"
            ))
            .into());
        }
        let admin = me.role == Role::Admin;
        let me_id = me.id;
        let report = import::apply(
            &st.store,
            parsed,
            dry_run,
            |event| match event {
                Some(e) if admin || e.organizer_id == me_id => Ok(()),
                Some(e) => Err(format!("you do not run the event {} ({})", e.name, e.id)),
                None if admin => Ok(()),
                None => Err("no event: name one of your events in an eventId column, or import into an event".into()),
            },
            |_| {},
        )
        .await?;
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        Ok(AttendeeImport {
            dry_run,
            created: count(report.summary.created),
            existing: count(report.summary.existing),
            registered: count(report.summary.registered),
            rows: report
                .rows
                .into_iter()
                .map(|r| ImportedRow {
                    line: count(r.line),
                    email: r.email,
                    name: r.name,
                    event_id: r.event.map(|e| ID(e.to_string())),
                })
                .collect(),
            refused: report
                .refused
                .into_iter()
                .map(|(line, reason)| RefusedImportRow { line: count(line), reason })
                .collect(),
        })
    }
}
