//! Beacon secrets: `beacon:<user>` holds the secret a user's phone derives its
//! rotating identifiers from (see `domain::identity`). Kept out of the user
//! record so that listing users never reads them.

use chrono::{DateTime, Utc};
use surrealdb::types::{RecordId, SurrealValue};
use uuid::Uuid;

use super::Conn;
use super::{StoreError, key_of, rid};
use crate::domain::identity::{Secret, parse_secret};

/// A user's secret and when it was issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeaconSecret {
    pub secret: Secret,
    pub issued_at: DateTime<Utc>,
}

#[derive(Debug, Clone, SurrealValue)]
struct BeaconRow {
    id: RecordId,
    secret: String,
    issued_at: DateTime<Utc>,
}

impl BeaconRow {
    fn decode(self) -> Result<(Uuid, BeaconSecret), StoreError> {
        let secret =
            parse_secret(&self.secret).ok_or_else(|| StoreError::Corrupt(format!("beacon secret of {:?}", self.id)))?;
        Ok((key_of(&self.id)?, BeaconSecret { secret, issued_at: self.issued_at }))
    }
}

/// Repository for `beacon` records.
pub struct Beacons<'a> {
    db: &'a Conn,
}

impl<'a> Beacons<'a> {
    pub(super) fn new(db: &'a Conn) -> Self {
        Self { db }
    }

    /// The user's secret, if one was issued.
    pub async fn get(&self, user: Uuid) -> Result<Option<BeaconSecret>, StoreError> {
        let mut res = self.db.query("SELECT * FROM ONLY $id").bind(("id", rid("beacon", user))).await?;
        let row: Option<BeaconRow> = res.take(0)?;
        row.map(|r| r.decode().map(|(_, s)| s)).transpose()
    }

    /// Sets the user's secret (issue or rotation); the old one stops resolving.
    pub async fn set(&self, user: Uuid, secret: &Secret, now: DateTime<Utc>) -> Result<BeaconSecret, StoreError> {
        self.db
            .query("UPSERT $id SET secret = $secret, issued_at = $now")
            .bind(("id", rid("beacon", user)))
            .bind(("secret", hex::encode(secret)))
            .bind(("now", now))
            .await?
            .check()?;
        Ok(BeaconSecret { secret: *secret, issued_at: now })
    }

    /// The user's secret, issuing `fresh` first if they have none (accounts
    /// older than rotating identifiers). Two concurrent calls agree.
    pub async fn get_or_issue(
        &self,
        user: Uuid,
        fresh: &Secret,
        now: DateTime<Utc>,
    ) -> Result<BeaconSecret, StoreError> {
        if let Some(s) = self.get(user).await? {
            return Ok(s);
        }
        // CREATE fails if another call issued one meanwhile: then read theirs.
        let _ = self
            .db
            .query("CREATE $id SET secret = $secret, issued_at = $now")
            .bind(("id", rid("beacon", user)))
            .bind(("secret", hex::encode(fresh)))
            .bind(("now", now))
            .await?
            .check();
        self.get(user).await?.ok_or_else(|| StoreError::Corrupt("issued beacon secret vanished".into()))
    }

    /// Every user's secret (for the resolution table).
    pub async fn all(&self) -> Result<Vec<(Uuid, Secret)>, StoreError> {
        let mut res = self.db.query("SELECT * FROM beacon").await?;
        let rows: Vec<BeaconRow> = res.take(0)?;
        rows.into_iter().map(|r| r.decode().map(|(u, s)| (u, s.secret))).collect()
    }
}
