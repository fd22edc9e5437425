//! Each scanner's last batch and its count of unknown devices, recorded on
//! its key (`apiKeys`, `scanners`). This is bookkeeping: it is never on a
//! batch's path and never fails one.
//!
//! A busy scanner uploads several batches a second, and a write per batch
//! would add a durable commit to every batch. So notes are merged per key and
//! written at most once per [`INTERVAL`]. The first note after a quiet
//! interval is written at once; the rest go with the next write. A crash
//! loses at most one interval's notes, and the raw log needs none of them. A
//! clean stop writes what is pending.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::SurrealStore;

/// How often at most one key's notes are written.
const INTERVAL: Duration = Duration::from_secs(1);

/// What is waiting to be written for one key.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Note {
    batch_id: Uuid,
    at: DateTime<Utc>,
    /// Unknown devices heard since the last write.
    unknown: u64,
}

impl Note {
    /// Folds a later note in: the latest batch wins, counts add up.
    fn merge(&mut self, later: Note) {
        if later.at >= self.at {
            (self.batch_id, self.at) = (later.batch_id, later.at);
        }
        self.unknown += later.unknown;
    }
}

#[derive(Default)]
struct Shared {
    pending: Mutex<HashMap<Uuid, Note>>,
    wake: Notify,
    stop: Notify,
}

/// The scanners' notes and the task that writes them; cheap to clone.
#[derive(Clone)]
pub struct ScannerNotes {
    shared: Arc<Shared>,
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl ScannerNotes {
    pub fn start(store: SurrealStore) -> Self {
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(write_loop(store, shared.clone()));
        Self { shared, task: Arc::new(tokio::sync::Mutex::new(Some(task))) }
    }

    /// Notes that `key` uploaded `batch_id` now, hearing `unknown` devices
    /// nobody owns.
    pub fn note(&self, key: Uuid, batch_id: Uuid, unknown: u64) {
        let note = Note { batch_id, at: Utc::now(), unknown };
        let mut pending = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.entry(key).and_modify(|n| n.merge(note)).or_insert(note);
        drop(pending);
        self.shared.wake.notify_one();
    }

    /// Writes what is pending and stops.
    pub async fn stop(&self) {
        let Some(task) = self.task.lock().await.take() else { return };
        self.shared.stop.notify_one();
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "the scanner notes' task ended abnormally; notes still waiting are lost");
        }
    }
}

async fn write_loop(store: SurrealStore, shared: Arc<Shared>) {
    loop {
        let stopping = tokio::select! {
            biased;
            () = shared.stop.notified() => true,
            () = shared.wake.notified() => false,
        };
        let notes = std::mem::take(&mut *shared.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for (key, n) in notes {
            if let Err(e) = store.api_keys().note_batch(key, n.batch_id, n.unknown, n.at).await {
                tracing::warn!(error = ?e, scanner = %key, "could not record the scanner's last batch");
            }
        }
        if stopping {
            return;
        }
        // Notes arriving meanwhile leave a wake-up behind, taken at once.
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = shared.stop.notified() => shared.stop.notify_one(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first note is written at once; one made during the quiet second
    /// after it waits, and a stop writes it.
    #[tokio::test]
    async fn a_stop_writes_the_notes_still_waiting() {
        let store = SurrealStore::memory().await.unwrap();
        let keys = store.api_keys();
        let key = keys.create("door".into(), "p".into(), "h".into(), true, vec![], None, Utc::now()).await.unwrap().id;
        let notes = ScannerNotes::start(store.clone());
        notes.note(key, Uuid::from_u128(1), 2);
        let written = |n: i64| {
            let store = store.clone();
            async move { store.api_keys().get(key).await.unwrap().unwrap().unknown_devices == n }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !written(2).await {
            assert!(tokio::time::Instant::now() < deadline, "the first note is written at once");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        notes.note(key, Uuid::from_u128(2), 3);
        notes.stop().await;
        let stored = store.api_keys().get(key).await.unwrap().unwrap();
        assert_eq!((stored.unknown_devices, stored.last_batch_id), (5, Some(Uuid::from_u128(2).to_string())));
    }

    #[test]
    fn notes_merge_to_the_latest_batch_and_the_sum_of_unknown_devices() {
        let t = |s| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        let mut n = Note { batch_id: Uuid::from_u128(2), at: t(20), unknown: 3 };
        n.merge(Note { batch_id: Uuid::from_u128(1), at: t(10), unknown: 1 });
        assert_eq!(n, Note { batch_id: Uuid::from_u128(2), at: t(20), unknown: 4 }, "an earlier note only adds");
        n.merge(Note { batch_id: Uuid::from_u128(3), at: t(30), unknown: 0 });
        assert_eq!(n, Note { batch_id: Uuid::from_u128(3), at: t(30), unknown: 4 });
    }
}
