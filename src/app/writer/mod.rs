//! The ingest writer: one task per process that commits planned batches in
//! groups.
//!
//! Scanners at a venue hear the same crowd, so concurrent batches touch the
//! same attendance rows. Committed one transaction per batch, they conflict,
//! retry and give up. Here every planned batch goes to one task, which takes
//! whatever has queued up since its last commit (up to [`MAX_GROUP`]
//! sightings), folds it together (`domain::ingest::Fold`) and commits it in
//! one transaction: the batches' raw records, the new check-ins with their
//! cursors, and (see below) the changed rows. Then it answers every batch of
//! the group. This file is the handle ([`Writer`]) and its jobs; `task` is
//! the loop that runs them.
//!
//! - **Exact and synchronous.** A batch is answered after its group
//!   committed, with exact counts; its raw record and its check-ins are in
//!   the database and on their way to subscribers by then.
//! - **Folding.** Under load, groups grow by themselves: while one commits,
//!   the next queues. Idle, a batch commits alone, at once.
//! - **Rows written behind** (`rows`). The writer holds the rows in memory
//!   and a row that only changed is written by a flush at most once per
//!   interval (`--row-flush-ms`), however many groups touched it; a crash
//!   leaves markers that make the rows be derived again from the raw log.
//!   `rows` holds them, `flush` writes them.
//! - **Several instances** (a SurrealDB server, TiKV) each have a writer,
//!   and one of them at a time, under a lease, holds and writes the rows
//!   that exist; the others leave the sightings that change them pending
//!   for it, in their commits (`projector`). Rows created (check-ins) are
//!   committed by whichever instance took the batch, guarded by the cursor
//!   counters' versions: a group that loses such a race is folded again
//!   from fresh reads and retried; a batch that a concurrent retry committed
//!   meanwhile is answered from its stored result. With `--row-flush-ms 0`
//!   every instance writes its rows through, guarded by version.
//! - **No lock on the ingest path**: requests plan concurrently and only
//!   queue for the commit.
//! - **Re-derivation's final step** (`super::rederive::finish`) replaces one
//!   event's rows in a transaction of its own, which for a large event takes
//!   seconds. It runs beside the writer, not in it: while it runs, batches
//!   whose commit would touch that event's rows wait (they are committed
//!   once it is done, so the step sees every batch committed before it
//!   started and none after), and every other batch commits as usual. The
//!   rows the writer holds for that event are let go: the step derives them
//!   from the raw log, which holds everything they did.

mod flush;
mod group;
mod projector;
mod rows;
mod task;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use surrealdb::types::RecordId;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use uuid::Uuid;

use self::projector::Lease;
pub use self::rows::Scope;
use self::task::run;
use super::rederive::Gathered;
use crate::domain::ingest::{BatchOutcome, Counted, EventRules, RawSighting};
use crate::store::{StoreError, SurrealStore};

/// Most sightings one commit folds together.
pub const MAX_GROUP: usize = 20_000;
/// How often a group that keeps losing races is retried before its batches
/// are refused (`RATE_LIMITED`: the scanner retries with the same batchId).
const MAX_ATTEMPTS: usize = 10;
/// Queued batches beyond which requests wait to queue (back-pressure).
const QUEUE: usize = 256;
/// How long `stop` waits for the rows held back to be written.
const DRAIN: Duration = Duration::from_secs(20);

/// A batch, planned, waiting to be committed.
pub struct PlannedBatch {
    /// `batch:[scanner, batchId]`.
    pub id: RecordId,
    pub scanner: Option<Uuid>,
    pub recorded_by: Option<Uuid>,
    pub received_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub digest: String,
    pub raw: Vec<RawSighting>,
    pub counted: Counted,
    pub walk_ins: Vec<(Uuid, Uuid)>,
    /// The outcome of rules 1 and 6; the fold adds check-ins and duplicates.
    pub outcome: BatchOutcome,
    /// The events it counts for, as the scanner's key sees them.
    pub events: std::collections::HashMap<Uuid, EventRules>,
}

/// What the writer answers a batch.
pub enum Committed {
    /// Applied now, with this outcome.
    Applied(BatchOutcome),
    /// Someone applied this batch id first: read its stored result.
    AlreadyApplied,
}

type Reply = oneshot::Sender<Result<Committed, WriteError>>;

/// What the writer is asked to do.
enum Job {
    /// Commit a batch (folded with whatever else is queued).
    Batch(Box<PlannedBatch>, Reply),
    /// The final step of a re-derivation (`super::rederive`).
    Rederive(Box<Gathered>, oneshot::Sender<Result<usize, WriteError>>),
    /// Write the held-back rows a reader is about to read.
    Settle(Scope, oneshot::Sender<()>),
    /// Let go of held rows whose stored rows changed elsewhere.
    Forget(Scope),
    /// Write every held-back row (the process is stopping).
    Drain(oneshot::Sender<()>),
}

/// Why a group was not committed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the batch kept conflicting with concurrent commits; retry it")]
    Contended,
    #[error("the server is shutting down; retry the batch")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A handle on the process's writer; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// Re-derivations' final steps under way (see the module doc).
    finishing: Finishes,
    /// On a shared store: whether this instance holds the rows (`None`:
    /// rows are not shared out by lease).
    holding: Option<Arc<AtomicBool>>,
}

/// The final steps the writer started; they hold the store too, so `stop`
/// waits for them.
type Finishes = Arc<Mutex<JoinSet<()>>>;

impl Writer {
    /// Starts the writer task over `store`. With `row_flush`, changed rows
    /// are held back and written at most that often (on a shared store, by
    /// the instance holding the lease; see the module doc); without it, they
    /// are written with each commit.
    pub fn start(store: SurrealStore, row_flush: Option<Duration>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let finishing = Finishes::default();
        let holding = (store.shared() && row_flush.is_some()).then(|| Arc::new(AtomicBool::new(false)));
        let lease = holding.clone().map(Lease::new);
        let task = tokio::spawn(run(store, row_flush, lease, rx, finishing.clone()));
        Self { tx, task: Arc::new(tokio::sync::Mutex::new(Some(task))), finishing, holding }
    }

    /// Whether re-derivations' final steps should run here: everywhere but
    /// on an instance whose rows another instance holds (the step replaces
    /// rows; the holder lets go of its own first).
    pub fn derives_here(&self) -> bool {
        self.holding.as_ref().is_none_or(|h| h.load(Ordering::Relaxed))
    }

    /// Queues a planned batch and waits for its commit.
    pub async fn commit(&self, batch: PlannedBatch) -> Result<Committed, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job::Batch(Box::new(batch), reply)).await.map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Runs a re-derivation's final step beside the commits of other events'
    /// batches; returns how many rows the event now has.
    pub async fn rederive(&self, gathered: Gathered) -> Result<usize, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job::Rederive(Box::new(gathered), reply)).await.map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Writes the held-back rows in `scope` before a read of them, so that
    /// the read sees every batch acknowledged so far. A failed write is
    /// logged and the read goes on (it then lags by at most an interval).
    pub async fn settle(&self, scope: Scope) {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Job::Settle(scope, reply)).await.is_ok() {
            let _ = answer.await;
        }
    }

    /// Lets go of the rows held in `scope`, after the stored ones were
    /// deleted (a user erased, an event deleted).
    pub async fn forget(&self, scope: Scope) {
        let _ = self.tx.send(Job::Forget(scope)).await;
    }

    /// Writes the rows held back, then stops the task and waits for it (it
    /// holds the store, which must close after it).
    pub async fn stop(&self) {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Job::Drain(reply)).await.is_ok() && tokio::time::timeout(DRAIN, answer).await.is_err() {
            tracing::warn!(
                "attendance rows held back were not all written in time; they are derived again at the next start"
            );
        }
        let task = self.task.lock().await.take();
        if let Some(task) = task {
            // By now the server has stopped and in-flight requests are done,
            // so nothing is queued; a batch caught mid-commit is unanswered
            // and its scanner uploads it again.
            task.abort();
            let _ = task.await;
        }
        let mut finishing = std::mem::take(&mut *self.finishing.lock().unwrap_or_else(PoisonError::into_inner));
        finishing.abort_all();
        while finishing.join_next().await.is_some() {}
    }
}
