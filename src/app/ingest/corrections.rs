//! Corrections of what the raw log says, and of what is derived from it:
//! erasing a person, undoing an organiser's manual check-in, deriving an
//! event's attendance again.

use chrono::Utc;
use uuid::Uuid;

use super::{Ingest, IngestError};
use crate::app::writer::Scope;
use crate::store::{Event, StoreError};

impl Ingest {
    /// Erases a user's sightings from the raw log (the right to erasure),
    /// then deletes the user with everything derived from them, so that
    /// nothing derives them again. Returns false if there was no such user.
    ///
    /// The raw log goes first, so a failure leaves the user in place and
    /// `deleteUser` can simply be retried; a second pass after the deletion
    /// catches a batch that resolved them and committed in between.
    pub async fn erase_user(&self, user: Uuid) -> Result<bool, StoreError> {
        if self.store.users().get(user).await?.is_none() {
            return Ok(false);
        }
        let mut erased = self.store.batches().erase_user(user).await?;
        if !self.store.users().delete(user).await? {
            return Ok(false);
        }
        erased += self.store.batches().erase_user(user).await?;
        self.writer.forget(Scope::User(user)).await;
        tracing::info!(%user, erased, "erased a user's sightings from the raw log");
        Ok(true)
    }

    /// Undoes an organiser's manual check-ins of `user` at `event`: erases
    /// them from the raw log, then derives the event's attendance again
    /// (what scanners heard stays). Returns false if there were none.
    pub async fn undo_manual(&self, event: &Event, user: Uuid) -> Result<bool, IngestError> {
        if self.store.batches().erase_manual(event.id, user).await? == 0 {
            return Ok(false);
        }
        if self.recompute(event, std::time::Duration::from_secs(60)).await?.is_none() {
            tracing::warn!(event = %event.id, "a manual check-in was undone; the re-derivation is still running");
        }
        Ok(true)
    }

    /// Asks for an event's attendance to be derived again from the raw log
    /// and waits (up to `wait`) for it; returns how many rows it then has,
    /// or `None` if it is still running. (A policy or window change asks in
    /// its own transaction, through `store::Events::update`, and does not
    /// wait.)
    pub async fn recompute(&self, event: &Event, wait: std::time::Duration) -> Result<Option<usize>, IngestError> {
        let rederivations = self.store.rederivations();
        rederivations.request(event.id, Utc::now()).await?;
        let wanted = rederivations.get(event.id).await?.map_or(0, |r| r.requested);
        self.rederiver.wake();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(r) = rederivations.get(event.id).await?
                && r.done >= wanted
            {
                return Ok(Some(r.rows.unwrap_or(0).max(0) as usize));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
