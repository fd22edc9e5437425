//! The rows the writer holds back (see `rows`), and the flushes that
//! write them: on a timer, for a reader about to read them, and at a clean
//! stop; with the `deferred_rows` markers that a crash leaves behind.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::rows::{Flush, Rows, Scope};
use crate::store::{CommitError, SurrealStore};

/// The rows held, and the flushes that write them.
pub(super) struct Held {
    pub(super) rows: Rows,
    /// Events with a `deferred_rows` marker in the store.
    pub(super) marked: HashSet<Uuid>,
    /// Whether a flush is under way, and the readers it answers.
    pub(super) flushing: Option<Vec<oneshot::Sender<()>>>,
    /// Readers waiting for the next flush.
    pub(super) settles: Vec<(Scope, oneshot::Sender<()>)>,
    /// Where flushes report.
    pub(super) done_tx: mpsc::UnboundedSender<(Flush, Result<(), CommitError>)>,
}

impl Held {
    pub(super) fn new(rows: Rows, done_tx: mpsc::UnboundedSender<(Flush, Result<(), CommitError>)>) -> Self {
        Self { rows, marked: HashSet::new(), flushing: None, settles: Vec::new(), done_tx }
    }

    /// Writes what waited long enough, lets idle rows go, and deletes the
    /// markers of events with nothing waiting (only between flushes, so
    /// that no flush can leave rows waiting without a marker).
    pub(super) async fn tick(&mut self, store: &SurrealStore) {
        if self.flushing.is_some() {
            return;
        }
        self.rows.evict(Instant::now());
        let waiting = self.rows.waiting_events();
        let clean: Vec<Uuid> = self.marked.iter().filter(|e| !waiting.contains(e)).copied().collect();
        if !clean.is_empty() {
            match store.attendance().clear_deferred(&clean).await {
                Ok(()) => self.marked.retain(|e| !clean.contains(e)),
                Err(e) => tracing::warn!(error = ?e, "could not clear the markers of written attendance rows"),
            }
        }
        self.start_flush(store);
    }

    /// Starts a flush of the rows due and those the waiting readers need;
    /// answers the readers at once if there is nothing to write.
    pub(super) fn start_flush(&mut self, store: &SurrealStore) {
        let scopes: Vec<Scope> = self.settles.iter().map(|(s, _)| *s).collect();
        let flush = self.rows.take_due(Instant::now(), &scopes);
        let readers: Vec<oneshot::Sender<()>> = self.settles.drain(..).map(|(_, r)| r).collect();
        if flush.is_empty() {
            for r in readers {
                let _ = r.send(());
            }
            return;
        }
        self.flushing = Some(readers);
        let (store, done) = (store.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let result = store.attendance().write_deferred(&flush.rows).await;
            let _ = done.send((flush, result));
        });
    }

    /// A flush ended: record what it wrote, answer its readers, and start
    /// the next if readers wait.
    pub(super) async fn flushed(&mut self, store: &SurrealStore, flush: Flush, result: Result<(), CommitError>) {
        match result {
            Ok(()) => {
                self.rows.written(&flush);
                metrics::counter!("rollcall_ingest_rows_flushed_total").increment(flush.rows.len() as u64);
            }
            Err(CommitError::Conflict) | Err(CommitError::AlreadyApplied) => {
                stale(store, &mut self.rows, &flush).await;
            }
            Err(CommitError::Store(e)) => {
                tracing::warn!(error = ?e, rows = flush.rows.len(), "writing held-back attendance rows failed; retrying");
            }
        }
        metrics::gauge!("rollcall_ingest_rows_waiting").set(self.rows.waiting() as f64);
        metrics::gauge!("rollcall_ingest_rows_held").set(self.rows.held() as f64);
        for reader in self.flushing.take().unwrap_or_default() {
            let _ = reader.send(());
        }
        if !self.settles.is_empty() {
            self.start_flush(store);
        }
    }

    /// Writes every held-back row, then deletes the markers.
    pub(super) async fn drain(&mut self, store: &SurrealStore) {
        for _ in 0..3 {
            let flush = self.rows.take_due(Instant::now(), &[Scope::All]);
            if flush.is_empty() {
                break;
            }
            match store.attendance().write_deferred(&flush.rows).await {
                Ok(()) => self.rows.written(&flush),
                Err(CommitError::Conflict) | Err(CommitError::AlreadyApplied) => {
                    stale(store, &mut self.rows, &flush).await
                }
                Err(CommitError::Store(e)) => {
                    tracing::warn!(error = ?e, "writing held-back attendance rows at shutdown failed");
                    return;
                }
            }
        }
        if self.rows.waiting() > 0 {
            return;
        }
        let marked: Vec<Uuid> = self.marked.drain().collect();
        if !marked.is_empty()
            && let Err(e) = store.attendance().clear_deferred(&marked).await
        {
            tracing::warn!(error = ?e, "could not clear the markers of written attendance rows");
        }
    }
}

/// A flush failed because some stored rows are not at the version held:
/// they changed behind the writer (a re-derivation, an erasure, a deleted
/// event). Lets go of those; where the stored row still exists, asks for
/// its event to be derived again, so nothing the raw log holds is lost.
async fn stale(store: &SurrealStore, rows: &mut Rows, flush: &Flush) {
    let pairs: Vec<_> = flush.pairs().collect();
    let stored = match store.attendance().rows(&pairs).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = ?e, "could not read back attendance rows after a failed write");
            return;
        }
    };
    let stored: HashMap<_, i64> = stored.into_iter().map(|r| ((r.event_id, r.user_id), r.version)).collect();
    let moved: Vec<_> =
        rows.versions(pairs.into_iter()).into_iter().filter(|(p, v)| stored.get(p) != Some(v)).collect();
    let gone: Vec<_> = moved.iter().map(|(p, _)| *p).collect();
    rows.drop_pairs(&gone);
    let mut events: Vec<Uuid> = moved.iter().filter(|(p, _)| stored.contains_key(p)).map(|(p, _)| p.0).collect();
    events.sort_unstable();
    events.dedup();
    tracing::warn!(rows = gone.len(), ?events, "held attendance rows changed in the store meanwhile; let go");
    for event in events {
        if let Err(e) = store.rederivations().request(event, Utc::now()).await {
            tracing::error!(%event, error = ?e, "could not ask for attendance to be derived again");
        }
    }
}
