//! The schema's migrations (`migrations/*.surql`) and how a store applies
//! them at open: each once, in order, even with several instances starting
//! together.

use surrealdb::types::RecordId;

use super::retry::transaction_failure;
use super::{StoreError, SurrealStore, retry_on_conflict};

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

impl SurrealStore {
    /// Applies the migrations not yet recorded, each in one transaction with
    /// its record, so that instances starting together apply each exactly
    /// once: the loser of a race fails on the record (or on a write
    /// conflict), rolls back, and finds the migration applied when it looks
    /// again.
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
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
}
