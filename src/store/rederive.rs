//! Re-derivation jobs: `rederive:<event>` asks for an event's attendance to
//! be derived again from the raw log, and shows how far that has got.
//!
//! A request bumps `requested`, in the same transaction as the change that
//! needs it (a policy or window change), so a crash cannot lose it. A worker
//! claims the job with a lease it renews as it goes, so on several instances
//! one works on it at a time, and a job whose worker died is taken up again
//! when its lease runs out (it starts over: the raw log has not changed).
//! When the derived rows are committed, `done` becomes the generation the
//! worker started from; a request that came meanwhile leaves it pending.

use chrono::{DateTime, Utc};
use surrealdb::types::{RecordId, SurrealValue};
use uuid::Uuid;

use super::Conn;
use super::{StoreError, key_of, rid};

/// Where an event's re-derivation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rederivation {
    /// Requests made, over the event's life.
    pub requested: i64,
    /// The generation last derived (`requested` when up to date).
    pub done: i64,
    /// Whether a worker holds it now.
    pub running: bool,
    /// Raw-log batches read so far, and to read, in the current run.
    pub batches_done: i64,
    pub batches_total: i64,
    pub requested_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Attendance rows the last run derived.
    pub rows: Option<i64>,
}

impl Rederivation {
    /// Whether the rows lag behind a request.
    pub fn pending(&self) -> bool {
        self.requested > self.done
    }
}

#[derive(Debug, Clone, SurrealValue)]
struct RederiveRow {
    id: RecordId,
    requested: i64,
    done: Option<i64>,
    lease_until: Option<DateTime<Utc>>,
    batches_done: Option<i64>,
    batches_total: Option<i64>,
    requested_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    rows: Option<i64>,
}

pub(super) fn rederive_id(event: Uuid) -> RecordId {
    rid("rederive", event)
}

/// Bumps the request count of `$rederive` (a `rederive:<event>` id); used
/// inside the transaction of the change that needs it.
pub(super) const REQUEST: &str =
    "UPSERT $rederive SET requested = (requested ?? 0) + 1, done = done ?? 0, requested_at = $now;";

/// Marks generation `$generation` of `$rederive` derived, with `$rows` rows;
/// used inside the transaction that writes them.
pub(super) const FINISH: &str = "UPDATE $rederive SET done = math::max([done ?? 0, $generation]), rows = $rows_n,
    finished_at = $now, lease_until = NONE, owner = NONE;";

/// Repository for `rederive` records.
pub struct Rederivations<'a> {
    db: &'a Conn,
}

impl<'a> Rederivations<'a> {
    pub(super) fn new(db: &'a Conn) -> Self {
        Self { db }
    }

    /// Asks for `event`'s attendance to be derived again.
    pub async fn request(&self, event: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.db.query(REQUEST).bind(("rederive", rederive_id(event))).bind(("now", now)).await?.check()?;
        Ok(())
    }

    pub async fn get(&self, event: Uuid) -> Result<Option<Rederivation>, StoreError> {
        let mut res = self.db.query("SELECT * FROM ONLY $id").bind(("id", rederive_id(event))).await?;
        let row: Option<RederiveRow> = res.take(0)?;
        let now = Utc::now();
        Ok(row.map(|r| Rederivation {
            requested: r.requested,
            done: r.done.unwrap_or(0),
            running: r.lease_until.is_some_and(|t| t > now),
            batches_done: r.batches_done.unwrap_or(0),
            batches_total: r.batches_total.unwrap_or(0),
            requested_at: r.requested_at,
            finished_at: r.finished_at,
            rows: r.rows,
        }))
    }

    /// Claims a pending job that nobody holds, for `lease`; returns the
    /// event and the generation to derive.
    pub async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<(Uuid, i64)>, StoreError> {
        let mut res = self
            .db
            .query(
                "SELECT VALUE id FROM rederive WHERE requested > (done ?? 0)
                    AND (lease_until IS NONE OR lease_until < $now) LIMIT 5",
            )
            .bind(("now", now))
            .await?;
        let candidates: Vec<RecordId> = res.take(0)?;
        for id in candidates {
            let mut res = self
                .db
                .query(
                    "UPDATE $id SET owner = $owner, lease_until = $until, batches_done = 0, batches_total = 0
                        WHERE requested > (done ?? 0) AND (lease_until IS NONE OR lease_until < $now)
                        RETURN requested",
                )
                .bind(("id", id.clone()))
                .bind(("owner", owner.to_owned()))
                .bind(("until", lease_until))
                .bind(("now", now))
                .await?;
            // Another worker may win the race for the same job: that is fine.
            let Ok(won) = res.take::<Vec<RederiveClaim>>(0) else { continue };
            if let Some(claim) = won.into_iter().next() {
                return Ok(Some((key_of(&id)?, claim.requested)));
            }
        }
        Ok(None)
    }

    /// Records progress and renews the lease.
    pub async fn progress(
        &self,
        event: Uuid,
        done: i64,
        total: i64,
        lease_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.db
            .query("UPDATE $id SET batches_done = $done, batches_total = $total, lease_until = $until")
            .bind(("id", rederive_id(event)))
            .bind(("done", done))
            .bind(("total", total))
            .bind(("until", lease_until))
            .await?
            .check()?;
        Ok(())
    }

    /// Drops the job of an event that is gone.
    pub async fn forget(&self, event: Uuid) -> Result<(), StoreError> {
        self.db.query("DELETE $id").bind(("id", rederive_id(event))).await?.check()?;
        Ok(())
    }

    /// Lets go of a job without finishing it (it is taken up again).
    pub async fn release(&self, event: Uuid) -> Result<(), StoreError> {
        self.db
            .query("UPDATE $id SET lease_until = NONE, owner = NONE")
            .bind(("id", rederive_id(event)))
            .await?
            .check()?;
        Ok(())
    }
}

#[derive(Debug, SurrealValue)]
struct RederiveClaim {
    requested: i64,
}
