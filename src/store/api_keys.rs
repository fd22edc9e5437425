//! The API-key aggregate: scanners' credentials, stored as hashes only.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Conn;
use super::models::{ApiKeyRow, convert_all};
use super::{ApiKey, StoreError, new_id, rid};

/// Repository for `api_key` records.
pub struct ApiKeys<'a> {
    db: &'a Conn,
}

impl<'a> ApiKeys<'a> {
    pub(super) fn new(db: &'a Conn) -> Self {
        Self { db }
    }

    /// Stores a new key. `prefix` and `key_hash` come from
    /// [`crate::auth::ApiKeySecret`]; the secret itself never reaches here.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        name: String,
        prefix: String,
        key_hash: String,
        all_events: bool,
        events: Vec<Uuid>,
        created_by: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<ApiKey, StoreError> {
        let row = ApiKeyRow {
            id: rid("api_key", new_id()),
            name,
            prefix,
            key_hash,
            all_events,
            events: events.into_iter().map(|e| rid("event", e)).collect(),
            created_by: created_by.map(|u| rid("user", u)),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
            last_batch_at: None,
            last_batch_id: None,
            unknown_devices: Some(0),
            heartbeat_at: None,
            heartbeat_version: None,
            outbox_depth: None,
            last_upload_at: None,
            clock_skew_ms: None,
            heartbeat_scanner_id: None,
            heartbeat_health: None,
        };
        let mut res = self.db.query("CREATE ONLY $row.id CONTENT $row").bind(("row", row)).await?.check()?;
        let row: Option<ApiKeyRow> = res.take(0)?;
        row.ok_or_else(|| StoreError::Corrupt("CREATE returned nothing".into()))?.try_into()
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<ApiKey>, StoreError> {
        let mut res = self.db.query("SELECT * FROM ONLY $id").bind(("id", rid("api_key", id))).await?;
        let row: Option<ApiKeyRow> = res.take(0)?;
        row.map(ApiKey::try_from).transpose()
    }

    /// The key whose secret hashes to `key_hash`, revoked or not.
    pub async fn by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let mut res =
            self.db.query("SELECT * FROM api_key WHERE key_hash = $h LIMIT 1").bind(("h", key_hash.to_owned())).await?;
        let rows: Vec<ApiKeyRow> = res.take(0)?;
        rows.into_iter().next().map(ApiKey::try_from).transpose()
    }

    /// Keys in creation order; only those made by `created_by` when given.
    pub async fn list(&self, created_by: Option<Uuid>) -> Result<Vec<ApiKey>, StoreError> {
        let sql = match created_by {
            Some(_) => "SELECT * FROM api_key WHERE created_by = $by ORDER BY id",
            None => "SELECT * FROM api_key ORDER BY id",
        };
        let mut res = self.db.query(sql).bind(("by", created_by.map(|u| rid("user", u)))).await?;
        convert_all(res.take::<Vec<ApiKeyRow>>(0)?)
    }

    /// The keys, revoked or not, whose scope covers `event` (the same rule
    /// as `ScannerScope::covers`): whose unassigned sightings may count for it.
    pub async fn covering(&self, event: &super::Event) -> Result<Vec<Uuid>, StoreError> {
        let mut res = self
            .db
            .query(
                "SELECT VALUE id FROM api_key WHERE all_events = true OR events CONTAINS $e
                    OR (all_events = false AND array::len(events) = 0 AND created_by = $org)",
            )
            .bind(("e", rid("event", event.id)))
            .bind(("org", rid("user", event.organizer_id)))
            .await?;
        let ids: Vec<surrealdb::types::RecordId> = res.take(0)?;
        ids.iter().map(super::key_of).collect()
    }

    /// Marks a key revoked (once; later calls keep the first time), and
    /// records the revocation in the change feed in the same transaction,
    /// for every instance's sockets (`store::change_feed`).
    pub async fn revoke(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<ApiKey>, StoreError> {
        self.db
            .query(
                "BEGIN;
                 LET $revoked = UPDATE $id SET revoked_at = revoked_at ?? $now RETURN VALUE id;
                 IF array::len($revoked) > 0 { UPSERT $notice SET at = $now };
                 COMMIT;",
            )
            .bind(("id", rid("api_key", id)))
            .bind(("notice", rid("key_revocation", id)))
            .bind(("now", now))
            .await?
            .check()?;
        self.get(id).await
    }

    /// Stores a scanner's heartbeat.
    pub async fn heartbeat(&self, id: Uuid, beat: &super::Heartbeat) -> Result<(), StoreError> {
        self.db
            .query(
                "UPDATE $id SET heartbeat_at = $at, heartbeat_version = $version, outbox_depth = $depth,
                    last_upload_at = $upload, clock_skew_ms = $skew, heartbeat_scanner_id = $scanner,
                    heartbeat_health = $health",
            )
            .bind(("id", rid("api_key", id)))
            .bind(("at", beat.at))
            .bind(("version", beat.version.clone()))
            .bind(("depth", beat.outbox_depth))
            .bind(("upload", beat.last_upload_at))
            .bind(("skew", beat.clock_skew_ms))
            .bind(("scanner", beat.scanner_id.map(|id| id.to_string())))
            .bind(("health", beat.health.as_ref().and_then(|h| serde_json::to_string(h).ok())))
            .await?
            .check()?;
        Ok(())
    }

    /// Records that the key was just used.
    pub async fn touch(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.db
            .query("UPDATE $id SET last_used_at = $now")
            .bind(("id", rid("api_key", id)))
            .bind(("now", now))
            .await?
            .check()?;
        Ok(())
    }

    /// Records the key's last batch and adds to its unknown-device count.
    ///
    /// Kept out of the batch's transaction: scanners sharing a key would
    /// otherwise all write this one record and conflict on every batch.
    /// A few retries cover concurrent batches of the same key.
    pub async fn note_batch(
        &self,
        key: Uuid,
        batch_id: Uuid,
        unknown: u64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut last = None;
        for _ in 0..5 {
            let res = self
                .db
                .query(
                    "UPDATE $key SET last_batch_at = $now, last_batch_id = $batch,
                         unknown_devices = (unknown_devices ?? 0) + $unknown",
                )
                .bind(("key", rid("api_key", key)))
                .bind(("now", now))
                .bind(("batch", batch_id.to_string()))
                .bind(("unknown", unknown as i64))
                .await
                .and_then(|r| r.check());
            match res {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        Err(last.map_or_else(|| StoreError::Corrupt("no attempt".into()), StoreError::from))
    }
}
