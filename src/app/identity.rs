//! Resolving rotating identifiers for ingest: the process's
//! [`RotatingTable`] over every user's beacon secret, kept current per slot.
//!
//! The table holds the current slot ±1 and the [`RETAIN_SLOTS`] before it (to
//! tell a replayed identifier from an unknown one). It is rebuilt from the
//! secrets when a slot begins, when a secret issued or rotated in this process
//! asks for it ([`Resolver::invalidate`]), and on an unknown identifier heard
//! in the current window once the table is [`RELOAD_AFTER`] old (a secret
//! issued through another instance). Sightings uploaded late are resolved
//! against the slots around their own `seenAt`, computed then and dropped
//! after the batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::identity::{DRIFT_SLOTS, RotatingTable, Rotation, slot_of};
use crate::store::{StoreError, SurrealStore};

/// Slots before the current one kept in the table.
pub const RETAIN_SLOTS: i64 = 12;
/// How old the table must be before an unknown identifier reloads the secrets.
pub const RELOAD_AFTER: Duration = Duration::from_secs(30);

/// The table and when it was built.
struct Loaded {
    table: RotatingTable,
    at: Instant,
    slot: i64,
}

/// The process's rotating-identifier resolver; cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    store: SurrealStore,
    slot_secs: i64,
    loaded: Arc<tokio::sync::Mutex<Option<Loaded>>>,
    stale: Arc<AtomicBool>,
}

impl Resolver {
    pub fn new(store: SurrealStore, slot_secs: i64) -> Self {
        Self {
            store,
            slot_secs: slot_secs.max(1),
            loaded: Arc::new(tokio::sync::Mutex::new(None)),
            stale: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The slot length, in seconds.
    pub fn slot_secs(&self) -> i64 {
        self.slot_secs
    }

    /// A secret changed: rebuild before the next resolution.
    pub fn invalidate(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// Resolves each (identifier, seenAt) in one pass over the table.
    pub async fn resolve(
        &self,
        queries: &[(Uuid, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Rotation>, StoreError> {
        let now_slot = slot_of(now.timestamp(), self.slot_secs);
        let mut guard = self.loaded.lock().await;
        let stale = self.stale.swap(false, Ordering::AcqRel);
        if stale || guard.as_ref().is_none_or(|l| l.slot != now_slot) {
            *guard = Some(self.load(now_slot).await?);
        }
        let mut out = self.lookup(guard.as_mut(), queries);
        // An unknown identifier of the current window may be a secret issued
        // through another instance: reload once, if the table is not fresh.
        let current = |t: &DateTime<Utc>| (slot_of(t.timestamp(), self.slot_secs) - now_slot).abs() <= DRIFT_SLOTS;
        let missed = out.iter().zip(queries).any(|(r, (_, t))| *r == Rotation::Unknown && current(t));
        if missed && guard.as_ref().is_some_and(|l| l.at.elapsed() >= RELOAD_AFTER) {
            *guard = Some(self.load(now_slot).await?);
            out = self.lookup(guard.as_mut(), queries);
        }
        if let Some(l) = guard.as_mut() {
            l.table.evict_before(now_slot - RETAIN_SLOTS);
        }
        Ok(out)
    }

    fn lookup(&self, loaded: Option<&mut Loaded>, queries: &[(Uuid, DateTime<Utc>)]) -> Vec<Rotation> {
        let Some(l) = loaded else { return vec![Rotation::Unknown; queries.len()] };
        queries
            .iter()
            .map(|(id, t)| {
                let slot = slot_of(t.timestamp(), self.slot_secs);
                if !l.table.covers(slot) {
                    l.table.ensure(slot - DRIFT_SLOTS..=slot + DRIFT_SLOTS);
                }
                l.table.resolve(id, slot)
            })
            .collect()
    }

    async fn load(&self, now_slot: i64) -> Result<Loaded, StoreError> {
        let secrets = self.store.beacons().all().await?;
        let t = Instant::now();
        let slot_secs = self.slot_secs;
        // One HMAC per user and slot: off the async workers.
        let table = tokio::task::spawn_blocking(move || {
            let mut table = RotatingTable::new(secrets, slot_secs);
            table.ensure(now_slot - RETAIN_SLOTS..=now_slot + DRIFT_SLOTS);
            table
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("building the rotating identifiers table: {e}")))?;
        tracing::debug!(users = table.users(), took = ?t.elapsed(), slot = now_slot, "rotating identifiers table built");
        Ok(Loaded { table, at: Instant::now(), slot: now_slot })
    }
}
