//! Batches a scanner sends again because the store's epoch changed since
//! they were acknowledged (`store::epoch`: the store was not stopped cleanly
//! and may have lost them).
//!
//! A scanner first asks which of its kept batch ids the store does not have
//! ([`Ingest::missing_batches`], `storedBatches`), and sends those again
//! flagged `resent`. One the store has is answered `replayed`, as any retry.
//! One it does not have was lost: it is stored now, and each event it counts
//! for is derived again from the raw log, once per event per process
//! ([`Restored`]), because rows written after the lost commit may already
//! hold its sightings, and folding them in again would count them twice.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use chrono::Utc;
use uuid::Uuid;

use super::{Ingest, IngestError, Source};
use crate::app::writer::PlannedBatch;
use crate::domain::batch::MAX_BATCH_SIZE;
use crate::store::BatchRecord;

/// The events already derived again for a batch the store had lost; shared
/// by every clone of [`Ingest`].
#[derive(Clone, Default)]
pub(super) struct Restored(std::sync::Arc<Mutex<HashSet<Uuid>>>);

impl Restored {
    /// Whether `event` is asked for the first time (and now noted).
    fn first(&self, event: Uuid) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(event)
    }

    /// `event` was not asked for after all.
    fn forget(&self, event: Uuid) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&event);
    }
}

impl Ingest {
    /// Of `batch_ids`, as `source` sent them, those the store does not have:
    /// after the store's epoch changed, a scanner asks this about the batches
    /// it keeps, and sends again only those (see the module doc).
    pub async fn missing_batches(&self, source: &Source, batch_ids: &[Uuid]) -> Result<Vec<Uuid>, IngestError> {
        if batch_ids.len() > MAX_BATCH_SIZE {
            return Err(IngestError::Invalid(format!(
                "ask about at most {MAX_BATCH_SIZE} batches at a time, not {}",
                batch_ids.len()
            )));
        }
        if batch_ids.is_empty() {
            return Ok(Vec::new());
        }
        let namespace = self.batch_namespace(source).await?;
        let ids: Vec<_> = batch_ids.iter().map(|b| BatchRecord::id_for(namespace, *b)).collect();
        let mut stored = self.store.batches().existing(ids.clone()).await?;
        stored.sort_unstable();
        Ok(batch_ids.iter().zip(&ids).filter(|(_, id)| stored.binary_search(id).is_err()).map(|(b, _)| *b).collect())
    }

    /// A batch sent again after the store's epoch changed, and not in the
    /// store: the store lost it. Before it is committed, each event it
    /// counts for is asked to be derived again (see the module doc). The
    /// order does not matter: a re-derivation that runs first rebuilds rows
    /// without the lost sightings, and the batch then folds into them; one
    /// that runs after finds the batch in the raw log.
    pub(super) async fn restoring(&self, planned: &PlannedBatch) -> Result<(), IngestError> {
        let events: HashSet<Uuid> = planned.counted.keys().map(|(event, _)| *event).collect();
        let rederivations = self.store.rederivations();
        for event in events {
            if self.restored.first(event)
                && let Err(e) = rederivations.request(event, Utc::now()).await
            {
                self.restored.forget(event);
                return Err(e.into());
            }
        }
        self.rederiver.wake();
        Ok(())
    }
}

/// A batch the store had lost is stored again: said once it is committed.
pub(super) fn restored(source: &Source, batch_id: Uuid) {
    tracing::warn!(
        scanner = %source.scanner_id(), %batch_id,
        "a batch acknowledged before the store's last unclean stop was sent again and was not in the store: stored again"
    );
    metrics::counter!("rollcall_batches_restored_total").increment(1);
}
