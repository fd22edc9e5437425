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
//! start-up (`migrate.rs`), each once, recorded in the `migration` table.
//! Every statement in them is `IF NOT EXISTS`, so two instances starting
//! together are harmless.

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
mod error;
mod events;
mod feed_hints;
mod migrate;
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
pub use error::StoreError;
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
