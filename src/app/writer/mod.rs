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
//! the group.
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

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use surrealdb::types::RecordId;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use uuid::Uuid;

use self::flush::Held;
use self::group::{RowsAt, commit_group};
use self::projector::Lease;
pub use self::rows::Scope;
use self::rows::{Flush, Rows};
use super::rederive::Gathered;
use crate::domain::ingest::{BatchOutcome, Counted, EventRules, RawSighting};
use crate::store::{CommitError, RENEW, StoreError, SurrealStore};

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

type Flushed = (Flush, Result<(), CommitError>);

/// The writer task's state.
struct Loop {
    store: SurrealStore,
    /// Rows held in memory, or `None` (written through, or held by another
    /// instance).
    held: Option<Held>,
    /// How long a changed row may wait (`None`: written through).
    interval: Option<Duration>,
    /// On a shared store: this instance's hold on the rows.
    lease: Option<Lease>,
    /// Where flushes report.
    flushed_tx: mpsc::UnboundedSender<Flushed>,
    /// Events whose final re-derivation step runs, and the batches that
    /// wait for them.
    finishing: HashSet<Uuid>,
    waiting: Vec<(PlannedBatch, Reply)>,
}

async fn run(
    store: SurrealStore,
    interval: Option<Duration>,
    lease: Option<Lease>,
    mut rx: mpsc::Receiver<Job>,
    finishes: Finishes,
) {
    // Each final step says which event it is done with.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (flushed_tx, mut flushed_rx) = mpsc::unbounded_channel();
    let mut state =
        Loop { store, held: None, interval, lease, flushed_tx, finishing: HashSet::new(), waiting: Vec::new() };
    if let Some(lease) = &mut state.lease {
        // Take the rows before the first batch if no instance holds them.
        lease.start(&state.store).await;
        state.follow_lease(&mut flushed_rx).await;
    } else if interval.is_some() {
        state.hold().await;
    }
    // Ticks to write rows that waited long enough (a quarter of the interval
    // late at most), and with a lease to renew it and fold in what other
    // instances left (a quarter of the renewal period); idle when neither
    // applies.
    let mut period = interval.map_or(Duration::from_secs(3600), |i| (i / 4).max(Duration::from_millis(10)));
    if state.lease.is_some() {
        period = period.min(RENEW / 4);
    }
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
                Some(event) = done_rx.recv() => {
                    state.finished(event).await;
                    continue;
                }
                Some((flush, result)) = flushed_rx.recv() => {
                    if let Some(held) = &mut state.held {
                        held.flushed(&state.store, flush, result).await;
                    }
                    continue;
                }
                _ = tick.tick(), if state.held.is_some() || state.lease.is_some() => {
                    state.follow_lease(&mut flushed_rx).await;
                    state.fold_pending().await;
                    if let Some(held) = &mut state.held {
                        held.tick(&state.store).await;
                    }
                    continue;
                }
            },
        };
        match job {
            Job::Rederive(gathered, reply) => {
                let event = gathered.event.id;
                state.finishing.insert(event);
                if let Some(held) = &mut state.held {
                    held.rows.forget(Scope::Event(event));
                }
                let (store, done) = (state.store.clone(), done_tx.clone());
                finishes.lock().unwrap_or_else(PoisonError::into_inner).spawn(async move {
                    let _ = reply.send(super::rederive::finish(&store, *gathered).await);
                    let _ = done.send(event);
                });
            }
            Job::Batch(batch, reply) => {
                let mut group = Vec::new();
                let mut size = place(*batch, reply, &state.finishing, &mut state.waiting, &mut group);
                while size < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Job::Batch(b, r)) => size += place(*b, r, &state.finishing, &mut state.waiting, &mut group),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if group.is_empty() {
                    continue;
                }
                metrics::histogram!("rollcall_ingest_group_batches").record(group.len() as f64);
                state.commit(group).await;
            }
            Job::Settle(scope, reply) => {
                state.fold_pending().await;
                match &mut state.held {
                    None => {
                        let _ = reply.send(());
                    }
                    Some(held) => {
                        held.settles.push((scope, reply));
                        if held.flushing.is_none() {
                            held.start_flush(&state.store);
                        }
                    }
                }
            }
            Job::Forget(scope) => {
                if let Some(held) = &mut state.held {
                    held.rows.forget(scope);
                }
            }
            Job::Drain(reply) => {
                if let Some(held) = &mut state.held {
                    drain(held, &state.store, &mut flushed_rx).await;
                }
                if let Some(lease) = &mut state.lease {
                    lease.release(&state.store).await;
                }
                let _ = reply.send(());
            }
        }
    }
}

/// Writes every row held, the flushes under way first (one may start the
/// next, for readers that were waiting), so that nothing writes beside the
/// last one.
async fn drain(held: &mut Held, store: &SurrealStore, flushed_rx: &mut mpsc::UnboundedReceiver<Flushed>) {
    while held.flushing.is_some() {
        let Some((flush, result)) = flushed_rx.recv().await else { break };
        held.flushed(store, flush, result).await;
    }
    held.drain(store).await;
}

impl Loop {
    async fn commit(&mut self, group: Vec<(PlannedBatch, Reply)>) {
        let at = match (&mut self.held, &self.lease) {
            (Some(held), _) => RowsAt::Held { rows: &mut held.rows, marked: &mut held.marked },
            (None, Some(_)) => RowsAt::Pending,
            (None, None) => RowsAt::Store,
        };
        commit_group(&self.store, at, group).await;
    }

    /// Starts holding rows, after turning the markers a crash (or a holder
    /// that died) left into re-derivations: those rows lag behind the raw
    /// log.
    async fn hold(&mut self) {
        let Some(interval) = self.interval else { return };
        match self.store.attendance().request_deferred(Utc::now()).await {
            Ok(events) if !events.is_empty() => {
                tracing::warn!(
                    ?events,
                    "attendance rows were held back when their writer last stopped; deriving them again"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = ?e, "could not look for attendance rows left behind by a crash"),
        }
        self.held = Some(Held::new(Rows::new(interval), self.flushed_tx.clone()));
    }

    /// A final re-derivation step is done: its event's batches go on.
    async fn finished(&mut self, event: Uuid) {
        self.finishing.remove(&event);
        if let Some(held) = &mut self.held {
            held.rows.forget(Scope::Event(event));
        }
        let (ready, still): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.waiting).into_iter().partition(|(b, _)| !touches(b, &self.finishing));
        self.waiting = still;
        for group in groups_of(ready) {
            self.commit(group).await;
        }
    }
}

/// Whether committing `batch` would write the rows of one of `events`: a
/// sighting of it belongs to that event by the rules it was planned with.
fn touches(batch: &PlannedBatch, events: &HashSet<Uuid>) -> bool {
    events.iter().any(|e| batch.events.get(e).is_some_and(|rules| batch.raw.iter().any(|s| s.belongs_to(rules))))
}

/// Adds a batch to the group, or to the batches waiting for a final step if
/// it touches one's event; returns the sightings it added to the group.
fn place(
    batch: PlannedBatch,
    reply: Reply,
    finishing: &HashSet<Uuid>,
    waiting: &mut Vec<(PlannedBatch, Reply)>,
    group: &mut Vec<(PlannedBatch, Reply)>,
) -> usize {
    if touches(&batch, finishing) {
        waiting.push((batch, reply));
        return 0;
    }
    let n = batch.raw.len();
    group.push((batch, reply));
    n
}

/// Batches cut into groups of about [`MAX_GROUP`] sightings at most.
fn groups_of(batches: Vec<(PlannedBatch, Reply)>) -> Vec<Vec<(PlannedBatch, Reply)>> {
    let (mut groups, mut group, mut size) = (Vec::new(), Vec::new(), 0);
    for (b, r) in batches {
        size += b.raw.len();
        group.push((b, r));
        if size >= MAX_GROUP {
            groups.push(std::mem::take(&mut group));
            size = 0;
        }
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ingest::Assignment;
    use crate::domain::{AttendancePolicy, EventState, EventWindow};

    fn rules(id: Uuid, in_scope: bool) -> EventRules {
        let start = Utc::now();
        EventRules {
            id,
            state: EventState::Active,
            window: EventWindow::new(start, start + chrono::Duration::hours(1)).expect("a window"),
            policy: AttendancePolicy::default(),
            in_scope,
        }
    }

    fn planned(events: Vec<EventRules>, assignments: Vec<Assignment>) -> (PlannedBatch, Reply) {
        let raw = assignments
            .into_iter()
            .map(|assignment| RawSighting {
                identifier: "ble".into(),
                user: Uuid::new_v4(),
                seen_at: Utc::now() + chrono::Duration::minutes(5),
                rssi: Some(-60),
                assignment,
                rotating: false,
            })
            .collect();
        let batch = PlannedBatch {
            id: RecordId::new("batch", Uuid::new_v4().to_string()),
            scanner: None,
            recorded_by: None,
            received_at: Utc::now(),
            sent_at: None,
            digest: String::new(),
            raw,
            counted: Default::default(),
            walk_ins: Vec::new(),
            outcome: BatchOutcome::default(),
            events: events.into_iter().map(|r| (r.id, r)).collect(),
        };
        (batch, oneshot::channel().0)
    }

    /// Only a batch that would write the finishing event's rows waits: one
    /// that names another event, or whose key does not cover it, goes on.
    #[test]
    fn a_batch_waits_only_if_it_would_write_the_finishing_events_rows() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let finishing = HashSet::from([a]);
        let named_a = planned(vec![rules(a, true), rules(b, true)], vec![Assignment::Explicit(a)]).0;
        let named_b = planned(vec![rules(a, true), rules(b, true)], vec![Assignment::Explicit(b)]).0;
        let implicit_in_scope = planned(vec![rules(a, true)], vec![Assignment::Implicit]).0;
        let implicit_out_of_scope = planned(vec![rules(a, false)], vec![Assignment::Implicit]).0;
        assert!(touches(&named_a, &finishing));
        assert!(!touches(&named_b, &finishing));
        assert!(touches(&implicit_in_scope, &finishing));
        assert!(!touches(&implicit_out_of_scope, &finishing));
        assert!(!touches(&named_a, &HashSet::new()));
    }

    #[test]
    fn waiting_batches_commit_in_groups_of_bounded_size() {
        let e = Uuid::new_v4();
        let batch = |n: usize| planned(vec![rules(e, true)], vec![Assignment::Explicit(e); n]);
        let groups = groups_of(vec![batch(MAX_GROUP - 1), batch(1), batch(5), batch(MAX_GROUP), batch(2)]);
        let sizes: Vec<Vec<usize>> = groups.iter().map(|g| g.iter().map(|(b, _)| b.raw.len()).collect()).collect();
        assert_eq!(sizes, vec![vec![MAX_GROUP - 1, 1], vec![5, MAX_GROUP], vec![2]]);
        assert!(groups_of(Vec::new()).is_empty());
    }
}
