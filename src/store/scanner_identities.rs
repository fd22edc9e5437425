//! Scanner identities: `scanner_identity:<id>` binds the stable id a scanner
//! sends with its requests (`x-rollcall-scanner-id`) to the owner of the key
//! that first uploaded a batch with it (the key's creator; none for keys made
//! at the command line).
//!
//! Batches are kept per identity rather than per key (see `app::ingest`), so
//! a batch resent under a rotated key is recognised. The binding is what makes
//! that safe: a key of another owner could otherwise claim the identity and
//! send batch ids the scanner has yet to send, and have its real batches
//! answered as replays. The first claim wins, until the owner (or an admin)
//! releases the identity ([`ScannerIdentities::release`]), for a box handed
//! to another organiser: then the next claim binds it anew.
//!
//! A release removes the binding only. The batch ids kept under the identity
//! stay: the box keeps its outbox, and a batch the first owner's key sent
//! whose answer never came must still be answered as a replay when the new
//! owner's key resends it, not counted twice.

use chrono::{DateTime, Utc};
use surrealdb::types::{RecordId, SurrealValue};
use uuid::Uuid;

use super::Conn;
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
    db: &'a Conn,
}

impl<'a> ScannerIdentities<'a> {
    pub(super) fn new(db: &'a Conn) -> Self {
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

    /// Releases `identity` if it is still bound to `owner` (as [`Self::owner`]
    /// read it): the next claim binds it anew. Returns whether it was.
    pub async fn release(&self, identity: Uuid, owner: Option<Uuid>) -> Result<bool, StoreError> {
        let mut res = self
            .db
            .query("DELETE $id WHERE owner = $owner RETURN BEFORE")
            .bind(("id", rid("scanner_identity", identity)))
            .bind(("owner", owner.map(|o| rid("user", o))))
            .await?;
        let rows: Vec<IdentityRow> = res.take(0)?;
        Ok(!rows.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SurrealStore;

    #[tokio::test]
    async fn a_release_frees_the_identity_for_its_owner_only() {
        let store = SurrealStore::memory().await.unwrap();
        let ids = store.scanner_identities();
        let (box_a, box_b, key) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (alice, bob) = (Some(Uuid::new_v4()), Some(Uuid::new_v4()));
        // Bound to command-line keys (no owner), then released by an admin.
        assert_eq!(ids.claim(box_a, None, key, Utc::now()).await.unwrap(), Claim::Granted);
        assert_eq!(ids.claim(box_a, alice, key, Utc::now()).await.unwrap(), Claim::Refused);
        assert!(!ids.release(box_a, alice).await.unwrap(), "not Alice's");
        assert!(ids.release(box_a, None).await.unwrap());
        assert_eq!(ids.owner(box_a).await.unwrap(), None);
        assert_eq!(ids.claim(box_a, alice, key, Utc::now()).await.unwrap(), Claim::Granted);
        // Bound to Alice: a release meant for Bob's binding changes nothing.
        assert_eq!(ids.claim(box_b, alice, key, Utc::now()).await.unwrap(), Claim::Granted);
        assert!(!ids.release(box_b, bob).await.unwrap());
        assert!(!ids.release(Uuid::new_v4(), alice).await.unwrap(), "unknown");
        assert_eq!(ids.owner(box_b).await.unwrap(), Some(alice));
    }
}
