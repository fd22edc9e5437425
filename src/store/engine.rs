//! The connection to SurrealDB, and the embedded engine's memory.
//!
//! An embedded SurrealKV store is opened here, not through the SDK's
//! `any::connect`, because that path gives no way to size the engine's
//! memory. SurrealKV sizes two buffers from the machine's RAM (or the
//! cgroup's limit): its write buffer (the memtable: 1 GiB on a machine with
//! 16–64 GiB, allocated up front and made resident page by page as writes
//! arrive, flushed to disk only when full) and its block cache (half the RAM
//! less 1 GiB). For a database server that is right; for a server that
//! carries its database inside one process on a venue's laptop, it means
//! the process grows by up to a gigabyte for no reader's benefit. So the
//! embedded engine is built here from SurrealDB's own datastore builder,
//! with [`EmbeddedMemory`] passed as the engine's configuration, and served
//! to the SDK as a local connection. Everything else (`mem://`, a SurrealDB
//! server, TiKV) goes through `any::connect` as before.
//!
//! Both kinds of connection are one [`Conn`], so the repositories are
//! written once: they only ever send SurrealQL ([`Conn::query`]).

use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::path::Path;
use std::pin::Pin;

use surrealdb::IndexedResults;
use surrealdb::Surreal;
use surrealdb::engine::any::Any;
use surrealdb::engine::local::Db;
use surrealdb::method::{IntoVariables, Query};

/// How much memory the embedded SurrealKV engine may use for its buffers.
/// Ignored by every other engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedMemory {
    /// The write buffer: writes collect here and go to an on-disk table
    /// when it is full. Its pages become resident as it fills, so the
    /// process's memory rises by up to this much between flushes.
    pub memtable_bytes: u64,
    /// Recently read blocks of the on-disk tables.
    pub block_cache_bytes: u64,
}

impl EmbeddedMemory {
    /// The default write buffer, in MiB. A quarter of what SurrealDB gives
    /// itself on a 16-64 GiB machine. Smaller costs ingest: in alternating
    /// runs of the venue bench, 64 MiB gave about 8 % less than 1 GiB. It
    /// also makes the engine rotate its log more often, and a crash after
    /// a rotation can cost the commits it caught (`embedded_wal.rs`).
    pub const DEFAULT_MEMTABLE_MIB: u64 = 256;
    /// The default block cache, in MiB.
    pub const DEFAULT_BLOCK_CACHE_MIB: u64 = 128;
    /// The smallest write buffer accepted. Every buffer that fills rotates
    /// the engine's log (see `embedded_wal.rs`), so tiny ones are refused.
    pub const MIN_MEMTABLE_MIB: u64 = 4;

    pub fn mib(memtable: u64, block_cache: u64) -> Self {
        Self { memtable_bytes: memtable << 20, block_cache_bytes: block_cache << 20 }
    }
}

impl Default for EmbeddedMemory {
    fn default() -> Self {
        Self::mib(Self::DEFAULT_MEMTABLE_MIB, Self::DEFAULT_BLOCK_CACHE_MIB)
    }
}

/// A connection: the embedded engine built here, or any other through the
/// SDK.
pub enum Conn {
    Embedded(Surreal<Db>),
    Other(Surreal<Any>),
}

/// A query being built on a [`Conn`]; `.bind` it, then `.await` it.
pub enum ConnQuery<'a> {
    Embedded(Query<'a, Db>),
    Other(Query<'a, Any>),
}

impl Conn {
    /// Opens an embedded SurrealKV store at `url` (`surrealkv://PATH`, with
    /// any of SurrealDB's own `?key=value` settings) with `memory` as its
    /// buffers' sizes.
    pub async fn embedded(url: &str, memory: EmbeddedMemory) -> Result<Self, surrealdb::Error> {
        use surrealdb_cnf::ConfigMap;
        use surrealdb_core::kvs::Datastore;

        let internal = |e: anyhow::Error| surrealdb::Error::internal(e.to_string());
        // Before the engine opens its log: see `embedded_wal`.
        if let Some(dir) = embedded_dir(url) {
            super::embedded_wal::start_a_new_segment(dir)
                .map_err(|e| surrealdb::Error::internal(format!("preparing the write-ahead log: {e}")))?;
        }
        let config = ConfigMap::empty()
            .with_key_value("surrealkv_max_memtable_size", memory.memtable_bytes.to_string())
            .with_key_value("surrealkv_block_cache_capacity", memory.block_cache_bytes.to_string());
        // The change stream's hints are live queries: their notifications
        // come through this channel, as with `any::connect`.
        let (notify, notifications) = surrealdb::channel::bounded(surrealdb_cnf::NOTIFICATIONS_CHANNEL_SIZE);
        // The same order as the SDK's own local connection: the storage
        // version is settled before any maintenance task writes.
        let datastore = Datastore::builder()
            .with_config(config)
            .with_notify(notify)
            .without_maintenance_tasks()
            .build_with_path(url)
            .await
            .map_err(internal)?;
        datastore.check_version().await.map_err(internal)?;
        datastore.bootstrap().await.map_err(internal)?;
        datastore.start_maintenance_tasks();
        let db = Surreal::<Db>::unstable_from_datastore(datastore, Some(notifications)).await?;
        Ok(Self::Embedded(db))
    }

    /// Runs SurrealQL.
    pub fn query<'a>(&'a self, sql: impl Into<Cow<'a, str>>) -> ConnQuery<'a> {
        match self {
            Self::Embedded(db) => ConnQuery::Embedded(db.query(sql)),
            Self::Other(db) => ConnQuery::Other(db.query(sql)),
        }
    }

    /// Selects the namespace and database every query runs in.
    pub async fn use_ns_db(&self, namespace: &str, database: &str) -> Result<(), surrealdb::Error> {
        match self {
            Self::Embedded(db) => db.use_ns(namespace).use_db(database).await.map(drop),
            Self::Other(db) => db.use_ns(namespace).use_db(database).await.map(drop),
        }
    }
}

/// The directory of an embedded on-disk store's URL (`surrealkv://PATH`,
/// with or without `?key=value` settings); `None` for any other engine.
pub(super) fn embedded_dir(url: &str) -> Option<&Path> {
    let rest = url.strip_prefix("surrealkv://")?;
    Some(Path::new(rest.split('?').next().unwrap_or(rest)))
}

/// Whether an engine holds the embedded store in `dir` open: SurrealKV keeps
/// an exclusive OS lock on its `LOCK` file while it does.
pub(super) fn held_open(dir: &Path) -> bool {
    std::fs::File::open(dir.join("LOCK")).is_ok_and(|f| f.try_lock().is_err())
}

impl<'a> ConnQuery<'a> {
    /// Binds parameters, as [`Query::bind`].
    pub fn bind(self, vars: impl IntoVariables) -> Self {
        match self {
            Self::Embedded(q) => Self::Embedded(q.bind(vars)),
            Self::Other(q) => Self::Other(q.bind(vars)),
        }
    }
}

impl<'a> IntoFuture for ConnQuery<'a> {
    type Output = Result<IndexedResults, surrealdb::Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        match self {
            Self::Embedded(q) => q.into_future(),
            Self::Other(q) => q.into_future(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many on-disk tables (`.sst`) SurrealKV keeps under `dir`: they
    /// appear only when the write buffer is flushed.
    fn table_files(dir: &std::path::Path) -> usize {
        fn walk(dir: &std::path::Path, n: &mut usize) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, n);
                } else if path.extension().is_some_and(|e| e == "sst") {
                    *n += 1;
                }
            }
        }
        let mut n = 0;
        walk(dir, &mut n);
        n
    }

    /// Opens a store with a write buffer of `memtable_mib`, writes 12 MiB
    /// of small distinct records (SurrealKV puts values of 4 KiB and more
    /// in a separate log), and returns how many tables were flushed, waiting
    /// up to 5 s for the first (a flush runs in the background).
    async fn tables_after_12_mib(memtable_mib: u64) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("surrealkv://{}", dir.path().display());
        let db = Conn::embedded(&url, EmbeddedMemory::mib(memtable_mib, 16)).await.unwrap();
        db.use_ns_db("t", "t").await.unwrap();
        let blob = "x".repeat(1000);
        for chunk in 0..12 {
            db.query("FOR $i IN 0..1024 { CREATE blob SET chunk = $chunk, i = $i, data = $data }")
                .bind(("chunk", chunk))
                .bind(("data", blob.clone()))
                .await
                .unwrap()
                .check()
                .unwrap();
        }
        for _ in 0..50 {
            if table_files(dir.path()) > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        table_files(dir.path())
    }

    /// The write buffer's size reaches the engine: 12 MiB into a 4 MiB
    /// buffer flushes tables; into a 512 MiB one, it stays in memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_write_buffer_is_sized_as_asked() {
        assert!(tables_after_12_mib(4).await > 0, "12 MiB into a 4 MiB write buffer flushed no table");
        assert_eq!(tables_after_12_mib(512).await, 0, "12 MiB into a 512 MiB write buffer flushed a table");
    }
}
