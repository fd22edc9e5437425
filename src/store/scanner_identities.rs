//! Scanner identities: `scanner_identity:<id>` binds the stable id a scanner
//! sends with its requests (`x-rollcall-scanner-id`) to the owner of the key
//! that first uploaded a batch with it (the key's creator; none for keys made
//! at the command line).
//!
//! Batches are kept per identity rather than per key (see `app::ingest`), so
//! a batch resent under a rotated key is recognised. The binding is what makes
//! that safe: a key of another owner could otherwise claim the identity and
//! send batch ids the scanner has yet to send, and have its real batches
//! answered as replays. The first claim wins and is never moved.

use chrono::{DateTime, Utc};
use surrealdb::Surreal;
use surrealdb::engine::any::Any;
use surrealdb::types::{RecordId, SurrealValue};
use uuid::Uuid;

use super::{StoreError, key_of, rid};

/// The answer to a claim of an identity by a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The identity is (now) bound to the key's owner.
    Granted,
    /// The identity is bound to another owner.
    Refused,
}

#[derive(Debug, SurrealValue)]
struct IdentityRow {
    owner: Option<RecordId>,
}

/// Repository for `scanner_identity` records.
pub struct ScannerIdentities<'a> {
    db: &'a Surreal<Any>,
}

impl<'a> ScannerIdentities<'a> {
    pub(super) fn new(db: &'a Surreal<Any>) -> Self {
        Self { db }
    }

    /// The owner `identity` is bound to: `None` if it is not bound,
    /// `Some(None)` if it is bound to command-line keys.
    pub async fn owner(&self, identity: Uuid) -> Result<Option<Option<Uuid>>, StoreError> {
        let mut res =
            self.db.query("SELECT owner FROM ONLY $id").bind(("id", rid("scanner_identity", identity))).await?;
        let row: Option<IdentityRow> = res.take(0)?;
        row.map(|r| r.owner.as_ref().map(key_of).transpose()).transpose()
    }

    /// Claims `identity` for `key`, whose owner is `owner`: binds it on first
    /// use, then grants it to keys of the same owner only. Two concurrent
    /// first claims agree: one creates the binding, the other reads it.
    pub async fn claim(
        &self,
        identity: Uuid,
        owner: Option<Uuid>,
        key: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let bound = match self.owner(identity).await? {
            Some(bound) => bound,
            None => {
                // CREATE fails if another claim bound it meanwhile: then read theirs.
                let _ = self
                    .db
                    .query("CREATE $id SET owner = $owner, bound_by = $key, bound_at = $now")
                    .bind(("id", rid("scanner_identity", identity)))
                    .bind(("owner", owner.map(|o| rid("user", o))))
                    .bind(("key", rid("api_key", key)))
                    .bind(("now", now))
                    .await?
                    .check();
                self.owner(identity)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt(format!("scanner identity {identity} was bound and vanished")))?
            }
        };
        Ok(if bound == owner { Claim::Granted } else { Claim::Refused })
    }
}
