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
//! The embedded on-disk engine is built in `engine.rs`, so that its write
//! buffer and block cache have the sizes in [`StoreOptions::memory`] rather
//! than SurrealDB's, which are made for a machine that runs nothing else.
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
mod change_feed;
mod check_ins;
mod directory;
mod embedded_wal;
mod engine;
mod epoch;
mod events;
mod feed_hints;
mod models;
mod raw_log;
mod rederive;
mod registrations;
mod retry;
mod row_projector;
mod scanner_identities;
mod users;

use std::time::Duration;

use surrealdb::engine::any;
use surrealdb::opt::auth::{Database, Namespace, Root};
use surrealdb::types::RecordId;
use uuid::Uuid;

pub use api_keys::ApiKeys;
pub use attendance::{AttendanceLog, AttendanceRecord, CommitError, GroupWrite};
pub use batches::{BatchRecord, Batches, StoredBatch};
pub use beacons::{BeaconSecret, Beacons};
pub use change_feed::{CheckInStep, FEED_PAGE, FEED_RETENTION, FeedChanges, FeedEntry, FeedPage};
pub use check_ins::{CheckInRow, cursor_of, seq_of};
pub use directory::Directory;
pub use engine::{Conn, ConnQuery, EmbeddedMemory};
pub use events::{EventChanges, EventFilter, Events, NewEvent};
pub use feed_hints::FeedHints;
pub use models::{ApiKey, Device, Event, Heartbeat, Registration, RegistrationStatus, ScannerHealth, User};
pub use rederive::{Rederivation, Rederivations};
pub use registrations::Registrations;
pub(crate) use registrations::registration_id;
pub(crate) use retry::retry_on_conflict;
use retry::{retried_transaction, retried_write, transaction_failure};
pub use row_projector::{LEASE_SECS, PendingFold, RENEW, RowProjector};
pub use scanner_identities::{Claim, ScannerIdentities};
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
    (11, "beacon secrets", include_str!("migrations/0011_beacon.surql")),
    (12, "scanner identity", include_str!("migrations/0012_scanner_identity.surql")),
    (13, "door codes and phone reports", include_str!("migrations/0013_door.surql")),
    (14, "change feed", include_str!("migrations/0014_change_feed.surql")),
    (15, "feed notices", include_str!("migrations/0015_feed_notices.surql")),
    (16, "deferred rows", include_str!("migrations/0016_deferred_rows.surql")),
    (17, "batch users unindexed", include_str!("migrations/0017_batch_users_unindexed.surql")),
    (18, "directory version", include_str!("migrations/0018_directory_version.surql")),
    (19, "batch user keys", include_str!("migrations/0019_batch_user_keys.surql")),
    (20, "row projector", include_str!("migrations/0020_row_projector.surql")),
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
    /// The database server cannot be reached (its connection is down);
    /// the client may retry.
    #[error("database unavailable: {}", .0.message())]
    Unavailable(#[source] Box<surrealdb::Error>),
    /// Any other database failure. (Boxed: the engine's error is large, and
    /// every `Result` in the server would carry its size.)
    #[error("database error: {}", .0.message())]
    Db(#[source] Box<surrealdb::Error>),
    /// A stored record that no longer matches what the code expects.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The store's epoch file (`epoch.rs`) could not be read or written.
    #[error("cannot record the store's epoch in {}", .dir.display())]
    Epoch {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
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
        if err.is_connection() {
            return StoreError::Unavailable(Box::new(err));
        }
        StoreError::Db(Box::new(err))
    }
}

/// Where a SurrealDB server defines the user Rollcall signs in as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DbAuthLevel {
    /// `DEFINE USER .. ON DATABASE`: can reach Rollcall's database only.
    Database,
    /// `DEFINE USER .. ON NAMESPACE`.
    Namespace,
    /// `DEFINE USER .. ON ROOT` (or the server's `--user`).
    Root,
}

/// Credentials and names for a SurrealDB server; ignored by embedded engines
/// except for the namespace and database names.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Namespace that holds Rollcall's database.
    pub namespace: String,
    /// Database name inside the namespace.
    pub database: String,
    /// User for `ws://` servers; embedded engines need none.
    pub username: Option<String>,
    /// Password for `username`. Never logged.
    pub password: Option<String>,
    /// Where `username` is defined.
    pub auth_level: DbAuthLevel,
    /// The embedded engine's buffers (`surrealkv://` only).
    pub memory: EmbeddedMemory,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            namespace: "rollcall".into(),
            database: "rollcall".into(),
            username: None,
            password: None,
            auth_level: DbAuthLevel::Database,
            memory: EmbeddedMemory::default(),
        }
    }
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct SurrealStore {
    /// The SurrealDB client; embedded or remote depending on the URL. Shared,
    /// not cloned: each clone of a `Surreal` handle opens a session of its
    /// own in the engine (hundreds of KB), and every request and WebSocket
    /// holds a clone of the store.
    db: std::sync::Arc<Conn>,
    /// The connection the live queries (the change streams) run on: for a
    /// server, a second one. The server closes a connection whose
    /// notifications queue up past its limit (one large batch can do it);
    /// on their own connection that ends only the change stream, which the
    /// live hub reopens and catches up, and never fails the queries in
    /// flight. Embedded engines share `db`.
    live_db: std::sync::Arc<Conn>,
    /// For an embedded on-disk store, its directory: [`SurrealStore::close`]
    /// watches the engine's lock there to know it has shut down.
    data_dir: Option<std::path::PathBuf>,
    /// Whether other processes may write the same database: a SurrealDB
    /// server or TiKV (several Rollcall instances), not an embedded engine.
    shared: bool,
    /// The directory's answers this process has read (`directory.rs`).
    directory: std::sync::Arc<directory::Remembered>,
    /// Changes whenever the store may have lost acknowledged writes
    /// (`epoch.rs`); `None` for a SurrealDB server or TiKV.
    epoch: Option<std::sync::Arc<str>>,
}

impl SurrealStore {
    /// Opens the database at `url`, signs in if credentials are given, selects
    /// the namespace and database, and applies pending migrations.
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Self, StoreError> {
        let db = std::sync::Arc::new(Self::connect(url, opts).await?);
        let remote = ["ws://", "wss://", "http://", "https://"].iter().any(|scheme| url.starts_with(scheme));
        let shared = remote || url.starts_with("tikv://");
        let live_db = if remote { std::sync::Arc::new(Self::connect(url, opts).await?) } else { db.clone() };
        let data_dir = engine::embedded_dir(url).map(std::path::Path::to_path_buf);
        let epoch = match &data_dir {
            // The engine is open: this process holds its lock, and the files beside it.
            Some(dir) => Some(epoch::begin(dir).map_err(|source| StoreError::Epoch { dir: dir.clone(), source })?),
            None if shared => None,
            None => Some(epoch::fresh()),
        };
        let epoch = epoch.map(std::sync::Arc::from);
        let store = Self { db, live_db, data_dir, shared, directory: Default::default(), epoch };
        store.migrate().await?;
        Ok(store)
    }

    /// One connection, signed in, on the namespace and database.
    async fn connect(url: &str, opts: &StoreOptions) -> Result<Conn, StoreError> {
        let connect_err = |source| StoreError::Connect { url: redact_url(url), source: Box::new(source) };
        if url.starts_with("surrealkv://") {
            let db = Conn::embedded(url, opts.memory).await.map_err(connect_err)?;
            db.use_ns_db(&opts.namespace, &opts.database).await.map_err(connect_err)?;
            return Ok(db);
        }
        let db = any::connect(url).await.map_err(connect_err)?;
        if let (Some(username), Some(password)) = (opts.username.clone(), opts.password.clone()) {
            let (namespace, database) = (opts.namespace.clone(), opts.database.clone());
            let signed_in = match opts.auth_level {
                DbAuthLevel::Database => db.signin(Database { namespace, database, username, password }).await,
                DbAuthLevel::Namespace => db.signin(Namespace { namespace, username, password }).await,
                DbAuthLevel::Root => db.signin(Root { username, password }).await,
            };
            signed_in.map_err(connect_err)?;
        }
        let db = Conn::Other(db);
        db.use_ns_db(&opts.namespace, &opts.database).await.map_err(connect_err)?;
        Ok(db)
    }

    /// Closes the store and waits, up to `timeout`, for the embedded engine
    /// to finish shutting down (it does so in the background once the last
    /// handle is gone). Without the wait, a process that exits right away
    /// cancels the engine's tasks mid-shutdown. Other clones of this handle
    /// keep the database open; then this returns after `timeout`.
    pub async fn close(self, timeout: Duration) {
        let Self { db, live_db, data_dir, .. } = self;
        drop((db, live_db));
        let Some(dir) = data_dir else {
            // In-memory and remote engines have nothing to flush; let their tasks run once.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        };
        if !embedded_closed(&dir, timeout).await {
            tracing::warn!(?timeout, "the database did not finish closing in time");
        } else if let Err(e) = epoch::mark_clean_stop(&dir) {
            // The next start takes this for a crash: scanners send again what they keep.
            tracing::warn!(dir = %dir.display(), error = %e, "could not record the clean stop");
        }
    }

    /// The store's epoch (see `epoch.rs`): it changes whenever the store may
    /// have lost writes it acknowledged. `None` on a SurrealDB server or TiKV.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// Whether other processes may write this database too (a SurrealDB
    /// server or TiKV). An embedded engine is opened by one process only.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// An in-memory store with the schema applied; for tests and demos.
    pub async fn memory() -> Result<Self, StoreError> {
        Self::open("mem://", &StoreOptions::default()).await
    }

    /// Applies the migrations not yet recorded, each in one transaction with
    /// its record, so that instances starting together apply each exactly
    /// once: the loser of a race fails on the record (or on a write
    /// conflict), rolls back, and finds the migration applied when it looks
    /// again.
    async fn migrate(&self) -> Result<(), StoreError> {
        retry_on_conflict(|| async {
            self.db
                .query(
                    "DEFINE TABLE IF NOT EXISTS migration SCHEMAFULL;
                     DEFINE FIELD IF NOT EXISTS name ON migration TYPE string;
                     DEFINE FIELD IF NOT EXISTS applied_at ON migration TYPE datetime;",
                )
                .await?
                .check()?;
            Ok(())
        })
        .await?;
        for &(version, name, sql) in MIGRATIONS {
            retry_on_conflict(|| self.apply_migration(version, name, sql)).await?;
        }
        Ok(())
    }

    /// Applies one migration unless it is recorded as applied.
    async fn apply_migration(&self, version: i64, name: &str, sql: &str) -> Result<(), StoreError> {
        let id = RecordId::new("migration", version);
        let mut res = self.db.query("SELECT VALUE id FROM ONLY $id").bind(("id", id.clone())).await?;
        let applied: Option<RecordId> = res.take(0)?;
        if applied.is_some() {
            return Ok(());
        }
        tracing::info!(version, name, "applying database migration");
        let res = self
            .db
            .query(format!(
                "BEGIN TRANSACTION;
                 CREATE $id SET name = $name, applied_at = time::now();
                 {sql}
                 COMMIT TRANSACTION;"
            ))
            .bind(("id", id))
            .bind(("name", name.to_owned()))
            .await?;
        match transaction_failure(res) {
            Some(cause) => Err(cause.into()),
            None => Ok(()),
        }
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
        let value = generate();
        // Already there, or a write conflict, means another instance raced
        // this one: look again, and use its value if it won.
        retry_on_conflict(|| async {
            if let Some(v) = fetch().await? {
                return Ok(v);
            }
            self.db
                .query("CREATE $id SET value = $value, created_at = time::now()")
                .bind(("id", id.clone()))
                .bind(("value", value.clone()))
                .await?
                .check()?;
            fetch().await?.ok_or_else(|| StoreError::Corrupt(format!("secret `{name}` vanished")))
        })
        .await
    }

    pub fn users(&self) -> Users<'_> {
        Users::new(&self.db)
    }

    pub fn beacons(&self) -> Beacons<'_> {
        Beacons::new(&self.db)
    }

    pub fn scanner_identities(&self) -> ScannerIdentities<'_> {
        ScannerIdentities::new(&self.db)
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

    pub fn row_projector(&self) -> RowProjector<'_> {
        RowProjector::new(&self.db)
    }

    pub fn attendance(&self) -> AttendanceLog<'_> {
        AttendanceLog::new(&self.db)
    }

    /// The connection itself, for tests that write what no repository does.
    #[cfg(test)]
    pub(crate) fn raw(&self) -> &Conn {
        &self.db
    }

    /// A hint each time a table with a change feed is written (see
    /// `feed_hints.rs`), on the live connection. [`FeedHints::close`] ends
    /// it.
    pub async fn feed_hints(&self) -> Result<FeedHints, StoreError> {
        FeedHints::open(self.live_db.clone(), &change_feed::FEED_TABLES).await
    }
}

/// Waits, up to `timeout`, until the embedded SurrealKV store in `dir` has
/// shut down (it does so in the background once its last handle is gone);
/// false if it has not by then. SurrealKV holds an exclusive OS lock on
/// `LOCK` while open.
pub async fn embedded_closed(dir: &std::path::Path, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !engine::held_open(dir) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
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
