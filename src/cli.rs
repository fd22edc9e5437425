//! The operator commands besides `serve`: `admin`, `apikey` and `import`.
//! Each opens the same database the server uses (`--db`), so they work on a
//! stopped server's data directory or beside a server on a shared SurrealDB.

use std::io::BufRead;

use anyhow::{Context as _, bail};
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use crate::accounts::create_account;
use crate::auth::ApiKeySecret;
use crate::config::{AdminCommand, ApiKeyCommand, DbArgs, ImportCommand};
use crate::domain::{Email, Password, PersonName, Role, Text};
use crate::import::{self, parse_users_csv};
use crate::store::{SurrealStore, redact_url};

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

pub async fn import(cmd: ImportCommand) -> anyhow::Result<()> {
    match cmd {
        ImportCommand::Users { file, event, db } => {
            let forced_event = event
                .map(|e| Uuid::parse_str(e.trim()).with_context(|| format!("`{e}` is not an event id")))
                .transpose()?;
            let input = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            let parsed = parse_users_csv(std::io::BufReader::new(input), forced_event);
            let report = with_store(&db, |store| async move {
                let bar = ProgressBar::new(parsed.rows.len() as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} importing [{bar:40}] {pos}/{len} rows ({per_sec}, {eta} left)",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                // The operator may register anyone for any event.
                let report = import::apply(&store, parsed, false, |_| Ok(()), |n| bar.inc(n as u64)).await?;
                bar.finish_and_clear();
                Ok(report)
            })
            .await?;
            for (line, reason) in &report.refused {
                eprintln!("{}:{line}: {reason}", file.display());
            }
            let total = &report.summary;
            println!(
                "imported {}: {} created, {} already existed, {} registrations added, {} rows refused",
                file.display(),
                total.created,
                total.existing,
                total.registered,
                report.refused.len()
            );
            if !report.refused.is_empty() {
                bail!("{} rows were refused (listed above); the others were imported", report.refused.len());
            }
            Ok(())
        }
    }
}
