//! The operator commands besides `serve`: `admin`, `apikey` and `import`.
//! Each opens the same database the server uses (`--db`), so they work on a
//! stopped server's data directory or beside a server on a shared SurrealDB.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

use anyhow::{Context as _, bail};
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use crate::accounts::create_account;
use crate::auth::ApiKeySecret;
use crate::config::{AdminCommand, ApiKeyCommand, DbArgs, ImportCommand};
use crate::domain::{BleUuid, Email, Password, PersonName, Role, Text};
use crate::store::{ImportRow, ImportSummary, SurrealStore, redact_url};

/// Opens the database, runs `work` on it, and closes it cleanly whatever
/// `work` returned, so the embedded engine is never cut off mid-shutdown.
async fn with_store<T, F, Fut>(db: &DbArgs, work: F) -> anyhow::Result<T>
where
    F: FnOnce(SurrealStore) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let store = SurrealStore::open(&db.url, &db.options())
        .await
        .with_context(|| format!("opening the database {} (is a server holding it open?)", redact_url(&db.url)))?;
    let result = work(store.clone()).await;
    store.close(std::time::Duration::from_secs(10)).await;
    result
}

pub async fn admin(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Create { email, name, password_stdin: _, db } => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
            let password = Password::parse(line.trim_end_matches(['\r', '\n']))?;
            let email = Email::parse(&email)?;
            let name = PersonName::parse(&name)?;
            let user = with_store(&db, |store| async move {
                Ok(create_account(&store, email, name, Role::Admin, Some(password), None).await?)
            })
            .await?;
            println!("created ADMIN {} <{}> (id {})", user.name, user.email, user.id);
            Ok(())
        }
    }
}

pub async fn apikey(cmd: ApiKeyCommand) -> anyhow::Result<()> {
    match cmd {
        ApiKeyCommand::Create { name, scopes, db } => {
            let name = Text::parse("name", &name, 200)?.into_inner();
            let secret = ApiKeySecret::generate();
            let (prefix, hash) = (secret.display_prefix(), secret.hash());
            let key = with_store(&db, |store| async move {
                let mut events = Vec::new();
                for raw in scopes {
                    let id = Uuid::parse_str(raw.trim()).with_context(|| format!("`{raw}` is not an event id"))?;
                    if store.events().get(id).await?.is_none() {
                        bail!("no event has the id {id}");
                    }
                    events.push(id);
                }
                let all = events.is_empty();
                let key = store.api_keys().create(name, prefix, hash, all, events, None, Utc::now()).await?;
                Ok(key)
            })
            .await?;
            eprintln!("created API key {} ({}); its secret is shown only now:", key.id, key.name);
            println!("{}", secret.expose());
            Ok(())
        }
        ApiKeyCommand::List { db } => {
            let keys = with_store(&db, |store| async move { Ok(store.api_keys().list(None).await?) }).await?;
            if keys.is_empty() {
                println!("no API keys");
            }
            for k in keys {
                let scope = if k.all_events {
                    "all events".to_owned()
                } else if k.events.is_empty() {
                    "creator's events".to_owned()
                } else {
                    k.events.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",")
                };
                let status = match k.revoked_at {
                    Some(t) => format!("revoked {}", t.format("%Y-%m-%d %H:%M")),
                    None => "active".into(),
                };
                let used = k.last_used_at.map_or("never".into(), |t| t.format("%Y-%m-%d %H:%M").to_string());
                println!("{}  {:<12}  {:<24}  {}  last used {}  [{}]", k.id, k.prefix, k.name, status, used, scope);
            }
            Ok(())
        }
        ApiKeyCommand::Revoke { id, db } => {
            let id = Uuid::parse_str(id.trim()).with_context(|| format!("`{id}` is not an API key id"))?;
            match with_store(&db, |store| async move { Ok(store.api_keys().revoke(id, Utc::now()).await?) }).await? {
                Some(k) => println!("revoked API key {} ({})", k.id, k.name),
                None => bail!("no API key has the id {id}"),
            }
            Ok(())
        }
    }
}

/// A row an import refused: its line number and why.
pub type RefusedRow = (usize, String);

/// Rows per database round trip during an import.
const IMPORT_CHUNK: usize = 1000;

pub async fn import(cmd: ImportCommand) -> anyhow::Result<()> {
    match cmd {
        ImportCommand::Users { file, event, db } => {
            let forced_event = event
                .map(|e| Uuid::parse_str(e.trim()).with_context(|| format!("`{e}` is not an event id")))
                .transpose()?;
            let (rows, mut refused) = read_users_csv(&file, forced_event)?;
            let (total, refused) = with_store(&db, |store| async move {
                let events: HashSet<Uuid> = rows.iter().filter_map(|r| r.event).collect();
                let mut missing = HashSet::new();
                for e in &events {
                    if store.events().get(*e).await?.is_none() {
                        missing.insert(*e);
                    }
                }
                let (rows, unknown_event): (Vec<_>, Vec<_>) =
                    rows.into_iter().partition(|r| r.event.is_none_or(|e| !missing.contains(&e)));
                refused.extend(
                    unknown_event
                        .into_iter()
                        .map(|r| (r.line, format!("no event has the id {}", r.event.unwrap_or_default()))),
                );

                let bar = ProgressBar::new(rows.len() as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} importing [{bar:40}] {pos}/{len} rows ({per_sec}, {eta} left)",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                let mut total = ImportSummary::default();
                let mut rows = rows.into_iter().peekable();
                while rows.peek().is_some() {
                    let chunk: Vec<ImportRow> = rows.by_ref().take(IMPORT_CHUNK).collect();
                    let n = chunk.len() as u64;
                    let s = store.users().import(chunk, Utc::now()).await?;
                    total.created += s.created;
                    total.existing += s.existing;
                    total.registered += s.registered;
                    refused.extend(s.refused);
                    bar.inc(n);
                }
                bar.finish_and_clear();
                Ok((total, refused))
            })
            .await?;
            let mut refused = refused;
            refused.sort();
            for (line, reason) in &refused {
                eprintln!("{}:{line}: {reason}", file.display());
            }
            println!(
                "imported {}: {} created, {} already existed, {} registrations added, {} rows refused",
                file.display(),
                total.created,
                total.existing,
                total.registered,
                refused.len()
            );
            if !refused.is_empty() {
                bail!("{} rows were refused (listed above); the others were imported", refused.len());
            }
            Ok(())
        }
    }
}

/// Parses `email,name[,bleUuid][,eventId]` rows. Returns the good rows and
/// the refused ones with their line numbers. A header row, recognised by its
/// first cell being `email`, names the columns and is skipped.
pub fn read_users_csv(path: &Path, forced_event: Option<Uuid>) -> anyhow::Result<(Vec<ImportRow>, Vec<RefusedRow>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut rows = Vec::new();
    let mut refused = Vec::new();
    let mut seen_emails = HashSet::new();
    let (mut ble_col, mut event_col) = (2, 3);
    for (i, record) in reader.records().enumerate() {
        let line = i + 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line() as usize);
                refused.push((line, format!("unreadable row: {e}")));
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
        let parsed = (|| -> Result<ImportRow, String> {
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
        match parsed {
            Ok(row) if !seen_emails.insert(row.email.clone()) => {
                refused.push((line, format!("{} appears earlier in this file", row.email)));
            }
            Ok(row) => rows.push(row),
            Err(reason) => refused.push((line, reason)),
        }
    }
    Ok((rows, refused))
}
