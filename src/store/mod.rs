//! SurrealDB persistence.
//!
//! [`SurrealStore`] owns the connection; one repository per aggregate
//! ([`Users`], [`Events`], [`Registrations`], [`ApiKeys`]) borrows it. The
//! connection URL picks the engine:
//!
//! | URL | engine |
//! |---|---|
//! | `surrealkv://PATH` | embedded, on disk (the default, `surrealkv://rollcall-data`) |
//! | `mem://` | embedded, in memory (tests and demos) |
//! | `ws://HOST:PORT` | a SurrealDB server (`wss://` with the `tls` feature) |
//! | `tikv://PD:PORT` | a TiKV cluster (with the `tikv` feature) |
//!
//! **Durability.** SurrealKV's default sync mode is `every`: each commit is
//! fsynced to its write-ahead log before the commit returns (with grouped
//! commits under concurrency), so an acknowledged write survives `kill -9` and
//! power loss. A URL may relax that with `?sync=1s`, trading the last second of
//! writes for speed; Rollcall never does so on its own.
//!
//! **Schema.** Versioned SurrealQL migrations in `migrations/` are applied at
//! start-up, each once, recorded in the `migration` table. Every statement in
//! them is `IF NOT EXISTS`, so two instances starting together are harmless.

mod api_keys;
mod attendance;
mod batches;
mod beacons;
mod check_ins;
mod events;
mod models;
mod raw_log;
mod rederive;
mod registrations;
mod users;

use std::time::Duration;

use surrealdb::Surreal;
use surrealdb::engine::any::{self, Any};
use surrealdb::opt::auth::Root;
use surrealdb::types::RecordId;
use uuid::Uuid;

pub use api_keys::ApiKeys;
pub use attendance::{AttendanceLog, AttendanceRecord, CommitError, GroupWrite};
pub use batches::{BatchRecord, Batches, StoredBatch};
pub use beacons::{BeaconSecret, Beacons};
pub use check_ins::{AttendanceChange, ChangeKind, CheckInRow, cursor_of, seq_of};
pub use events::{EventChanges, EventFilter, Events, NewEvent};
pub use models::{ApiKey, Device, Event, Heartbeat, Registration, RegistrationStatus, ScannerHealth, User};
pub use rederive::{Rederivation, Rederivations};
pub use registrations::Registrations;
pub(crate) use registrations::registration_id;
pub use users::{ImportRow, ImportSummary, NewUser, Users};

/// The default embedded database, relative to the working directory.
pub const DEFAULT_DB_URL: &str = "surrealkv://rollcall-data";

/// The migrations, in order. A migration is never edited once released: a
/// change to the schema is a new file.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.surql")),
    (2, "ingest", include_str!("migrations/0002_ingest.surql")),
    (3, "heartbeat", include_str!("migrations/0003_heartbeat.surql")),
    (4, "live", include_str!("migrations/0004_live.surql")),
    (5, "counting window", include_str!("migrations/0005_counting_window.surql")),
    (6, "batch digest", include_str!("migrations/0006_batch_digest.surql")),
    (7, "raw log", include_str!("migrations/0007_raw_log.surql")),
    (8, "rederive", include_str!("migrations/0008_rederive.surql")),
    (9, "scanner health", include_str!("migrations/0009_scanner_health.surql")),
    (10, "sessions", include_str!("migrations/0010_sessions.surql")),
    (12, "beacon secrets", include_str!("migrations/0012_beacon.surql")),
];

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused a write; `index` names which one.
    #[error("unique index `{index}` already holds this value")]
    Conflict { index: String },
    /// The engine could not be reached or opened.
    #[error("cannot open database `{url}`")]
    Connect {
        url: String,
        #[source]
        source: Box<surrealdb::Error>,
    },
    /// Any other database failure. (Boxed: the engine's error is large, and
    /// every `Result` in the server would carry its size.)
    #[error("database error: {}", .0.message())]
    Db(#[source] Box<surrealdb::Error>),
    /// A stored record that no longer matches what the code expects.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl From<surrealdb::Error> for StoreError {
    fn from(err: surrealdb::Error) -> Self {
        // SurrealDB reports a unique-index violation as
        // "Database index `NAME` already contains ...".
        let msg = err.message();
        if let Some(rest) = msg.split_once("index `").map(|(_, r)| r)
            && msg.contains("already contains")
            && let Some((index, _)) = rest.split_once('`')
        {
            return StoreError::Conflict { index: index.to_owned() };
        }
        // The identifier lookup table is keyed by the identifier itself.
        if msg.contains("`identifier:") && msg.contains("already exists") {
            return StoreError::Conflict { index: "identifier".to_owned() };
        }
        StoreError::Db(Box::new(err))
    }
}

/// Credentials and names for a SurrealDB server; ignored by embedded engines
/// except for the namespace and database names.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Namespace that holds Rollcall's database.
    pub namespace: String,
    /// Database name inside the namespace.
    pub database: String,
    /// Root user for `ws://` servers; embedded engines need none.
    pub username: Option<String>,
    /// Password for `username`. Never logged.
    pub password: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { namespace: "rollcall".into(), database: "rollcall".into(), username: None, password: None }
    }
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct SurrealStore {
    /// The SurrealDB client; embedded or remote depending on the URL. Shared,
    /// not cloned: each clone of a `Surreal` handle opens a session of its
    /// own in the engine (hundreds of KB), and every request and WebSocket
    /// holds a clone of the store.
    db: std::sync::Arc<Surreal<Any>>,
    /// For an embedded on-disk store, its directory: [`SurrealStore::close`]
    /// watches the engine's lock there to know it has shut down.
    data_dir: Option<std::path::PathBuf>,
}

impl SurrealStore {
    /// Opens the database at `url`, signs in if credentials are given, selects
    /// the namespace and database, and applies pending migrations.
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Self, StoreError> {
        let connect_err = |source| StoreError::Connect { url: redact_url(url), source: Box::new(source) };
        let db = any::connect(url).await.map_err(connect_err)?;
        if let (Some(username), Some(password)) = (&opts.username, &opts.password) {
            db.signin(Root { username: username.clone(), password: password.clone() }).await.map_err(connect_err)?;
        }
        db.use_ns(&opts.namespace).use_db(&opts.database).await.map_err(connect_err)?;
        let data_dir = url
            .strip_prefix("surrealkv://")
            .map(|rest| std::path::PathBuf::from(rest.split('?').next().unwrap_or(rest)));
        let store = Self { db: std::sync::Arc::new(db), data_dir };
        store.migrate().await?;
        Ok(store)
    }

    /// Closes the store and waits, up to `timeout`, for the embedded engine
    /// to finish shutting down (it does so in the background once the last
    /// handle is gone). Without the wait, a process that exits right away
    /// cancels the engine's tasks mid-shutdown. Other clones of this handle
    /// keep the database open; then this returns after `timeout`.
    pub async fn close(self, timeout: Duration) {
        let Self { db, data_dir, .. } = self;
        drop(db);
        let Some(dir) = data_dir else {
            // In-memory and remote engines have nothing to flush; let their tasks run once.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        };
        // SurrealKV holds an exclusive OS lock on `LOCK` while open.
        let lock = dir.join("LOCK");
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let released = std::fs::File::open(&lock).map(|f| f.try_lock().is_ok()).unwrap_or(true);
            if released {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!(?timeout, "the database did not finish closing in time");
    }

    /// An in-memory store with the schema applied; for tests and demos.
    pub async fn memory() -> Result<Self, StoreError> {
        Self::open("mem://", &StoreOptions::default()).await
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.db
            .query(
                "DEFINE TABLE IF NOT EXISTS migration SCHEMAFULL;
                 DEFINE FIELD IF NOT EXISTS name ON migration TYPE string;
                 DEFINE FIELD IF NOT EXISTS applied_at ON migration TYPE datetime;",
            )
            .await?
            .check()?;
        for &(version, name, sql) in MIGRATIONS {
            let id = RecordId::new("migration", version);
            let mut res = self.db.query("SELECT VALUE id FROM ONLY $id").bind(("id", id.clone())).await?;
            let applied: Option<RecordId> = res.take(0)?;
            if applied.is_some() {
                continue;
            }
            tracing::info!(version, name, "applying database migration");
            self.db.query(sql).await?.check()?;
            let res = self
                .db
                .query("CREATE $id SET name = $name, applied_at = time::now()")
                .bind(("id", id))
                .bind(("name", name.to_owned()))
                .await?
                .check();
            match res.map_err(StoreError::from) {
                Ok(_) => {}
                // Another instance applied it at the same moment.
                Err(StoreError::Db(e)) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Checks that the database answers a trivial query, within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), StoreError> {
        let q = async {
            let mut res = self.db.query("RETURN 1").await?;
            let one: Option<i64> = res.take(0)?;
            if one == Some(1) { Ok(()) } else { Err(StoreError::Corrupt("RETURN 1 did not return 1".into())) }
        };
        match tokio::time::timeout(timeout, q).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Corrupt(format!("database did not answer within {timeout:?}"))),
        }
    }

    /// Returns the secret stored under `name`, creating it with `generate` on
    /// first use. Concurrent first starts agree on one value.
    pub async fn secret_or_insert(&self, name: &str, generate: impl FnOnce() -> String) -> Result<String, StoreError> {
        let id = RecordId::new("secret", name);
        let fetch = || async {
            let mut res = self.db.query("SELECT VALUE value FROM ONLY $id").bind(("id", id.clone())).await?;
            Ok::<Option<String>, StoreError>(res.take(0)?)
        };
        if let Some(v) = fetch().await? {
            return Ok(v);
        }
        let created = self
            .db
            .query("CREATE $id SET value = $value, created_at = time::now()")
            .bind(("id", id.clone()))
            .bind(("value", generate()))
            .await?
            .check();
        // Already there means another instance won the race: use its value.
        if let Err(e) = created
            && !e.is_already_exists()
        {
            return Err(e.into());
        }
        fetch().await?.ok_or_else(|| StoreError::Corrupt(format!("secret `{name}` vanished")))
    }

    pub fn users(&self) -> Users<'_> {
        Users::new(&self.db)
    }

    pub fn beacons(&self) -> Beacons<'_> {
        Beacons::new(&self.db)
    }

    pub fn events(&self) -> Events<'_> {
        Events::new(&self.db)
    }

    pub fn registrations(&self) -> Registrations<'_> {
        Registrations::new(&self.db)
    }

    pub fn api_keys(&self) -> ApiKeys<'_> {
        ApiKeys::new(&self.db)
    }

    pub fn rederivations(&self) -> Rederivations<'_> {
        Rederivations::new(&self.db)
    }

    pub fn batches(&self) -> Batches<'_> {
        Batches::new(&self.db)
    }

    pub fn attendance(&self) -> AttendanceLog<'_> {
        AttendanceLog::new(&self.db)
    }
}

/// A record id `table:⟨uuid⟩` for one of our UUID-keyed tables.
pub fn rid(table: &str, id: Uuid) -> RecordId {
    RecordId::new(table, surrealdb::types::Uuid::from(id))
}

/// The UUID key of a record id, or `Corrupt` when it is of another kind.
pub fn key_of(id: &RecordId) -> Result<Uuid, StoreError> {
    match &id.key {
        surrealdb::types::RecordIdKey::Uuid(u) => Ok(**u),
        other => Err(StoreError::Corrupt(format!("record key {other:?} is not a UUID"))),
    }
}

/// A new time-ordered id, so that keyset pagination by id is creation order.
pub(crate) fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// `url` with any password removed, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://<redacted>@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("ws://root:secret@db:8000"), "ws://<redacted>@db:8000");
        assert_eq!(redact_url("surrealkv://rollcall-data"), "surrealkv://rollcall-data");
    }
}
