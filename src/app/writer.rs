//! The ingest writer: one task per process that commits planned batches in
//! groups.
//!
//! Scanners at a venue hear the same crowd, so concurrent batches touch the
//! same attendance rows. Committed one transaction per batch, they conflict,
//! retry and give up. Here every planned batch goes to one task, which takes
//! whatever has queued up since its last commit (up to [`MAX_GROUP`]
//! sightings), folds it together (`domain::ingest::Fold`) and commits it in
//! one transaction: the batches' raw records, each changed row once, the new
//! check-ins with their cursors. Then it answers every batch of the group.
//!
//! - **Exact and synchronous.** A batch is answered after its group
//!   committed, with exact counts; its check-ins are in the database and on
//!   their way to subscribers by then.
//! - **Folding.** Under load, groups grow by themselves: while one commits,
//!   the next queues, so a row is written once per commit, however many
//!   batches touched it. Idle, a batch commits alone, at once.
//! - **Atomic.** Raw log and attendance commit together, so there is no
//!   fold position to keep: after a crash, an unanswered batch is simply
//!   uploaded again (same batchId) and applied once.
//! - **Several instances** each have a writer; their commits guard rows and
//!   cursor counters by version. A group that loses such a race is folded
//!   again from fresh reads and retried; a batch that a concurrent retry
//!   committed meanwhile is answered from its stored result.
//! - **No lock on the ingest path**: requests plan concurrently and only
//!   queue for the commit.
//! - **Re-derivation's final step** (`super::rederive::finish`) replaces one
//!   event's rows in a transaction of its own, which for a large event takes
//!   seconds. It runs beside the writer, not in it: while it runs, batches
//!   whose commit would touch that event's rows wait (they are committed
//!   once it is done, so the step sees every batch committed before it
//!   started and none after), and every other batch commits as usual.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use surrealdb::types::RecordId;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::rederive::Gathered;
use crate::domain::ingest::{BatchOutcome, Counted, EventRules, Fold, Pair, RawSighting, below_marks};
use crate::domain::{Attendance, CheckInSource, Sighting};
use crate::store::{AttendanceRecord, BatchRecord, CommitError, GroupWrite, StoreError, SurrealStore};

/// Most sightings one commit folds together.
pub const MAX_GROUP: usize = 20_000;
/// How often a group that keeps losing races is retried before its batches
/// are refused (`RATE_LIMITED`: the scanner retries with the same batchId).
const MAX_ATTEMPTS: usize = 10;
/// Queued batches beyond which requests wait to queue (back-pressure).
const QUEUE: usize = 256;

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
    pub events: HashMap<Uuid, EventRules>,
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
}

/// The final steps the writer started; they hold the store too, so `stop`
/// waits for them.
type Finishes = Arc<Mutex<JoinSet<()>>>;

impl Writer {
    /// Starts the writer task over `store`.
    pub fn start(store: SurrealStore) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let finishing = Finishes::default();
        let task = tokio::spawn(run(store, rx, finishing.clone()));
        Self { tx, task: Arc::new(tokio::sync::Mutex::new(Some(task))), finishing }
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

    /// Stops the task and waits for it (it holds the store, which must
    /// close after it).
    pub async fn stop(&self) {
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

async fn run(store: SurrealStore, mut rx: mpsc::Receiver<Job>, finishes: Finishes) {
    // Each final step says which event it is done with.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    // Events whose final step runs, and the batches that wait for them.
    let mut finishing: HashSet<Uuid> = HashSet::new();
    let mut waiting: Vec<(PlannedBatch, Reply)> = Vec::new();
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
                    finishing.remove(&event);
                    let (ready, still): (Vec<_>, Vec<_>) =
                        waiting.drain(..).partition(|(b, _)| !touches(b, &finishing));
                    waiting = still;
                    for group in groups_of(ready) {
                        commit_group(&store, group).await;
                    }
                    continue;
                }
            },
        };
        match job {
            Job::Rederive(gathered, reply) => {
                let event = gathered.event.id;
                finishing.insert(event);
                let (store, done) = (store.clone(), done_tx.clone());
                finishes.lock().unwrap_or_else(PoisonError::into_inner).spawn(async move {
                    let _ = reply.send(super::rederive::finish(&store, *gathered).await);
                    let _ = done.send(event);
                });
            }
            Job::Batch(batch, reply) => {
                let mut group = Vec::new();
                let mut size = place(*batch, reply, &finishing, &mut waiting, &mut group);
                while size < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Job::Batch(b, r)) => size += place(*b, r, &finishing, &mut waiting, &mut group),
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
                commit_group(&store, group).await;
            }
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

/// Commits one group, retrying lost races; answers every batch in it.
async fn commit_group(store: &SurrealStore, mut group: Vec<(PlannedBatch, Reply)>) {
    for attempt in 0..MAX_ATTEMPTS {
        // Batch ids committed meanwhile (or twice in this group) are answered
        // from the stored result by the caller.
        let ids: Vec<RecordId> = group.iter().map(|(b, _)| b.id.clone()).collect();
        let stored = match store.batches().existing(ids).await {
            Ok(s) => s,
            Err(e) => return fail(group, |_| WriteError::Store(clone_store_error(&e))),
        };
        let mut seen = Vec::new();
        let (keep, done): (Vec<_>, Vec<_>) = group.into_iter().partition(|(b, _)| {
            let first = !stored.contains(&b.id) && !seen.contains(&b.id);
            seen.push(b.id.clone());
            first
        });
        for (_, reply) in done {
            let _ = reply.send(Ok(Committed::AlreadyApplied));
        }
        group = keep;
        if group.is_empty() {
            return;
        }
        let now = Utc::now();
        let t = std::time::Instant::now();
        let (write, outcomes) = match fold(store, &group).await {
            Ok(f) => f,
            Err(e) => return fail(group, |_| WriteError::Store(clone_store_error(&e))),
        };
        let (folded, rows) = (t.elapsed(), write.created.len() + write.updated.len());
        let committed = store.attendance().commit(write, now).await;
        tracing::debug!(batches = group.len(), rows, ?folded, commit = ?(t.elapsed() - folded), "ingest group");
        match committed {
            Ok(()) => {
                for ((_, reply), outcome) in group.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(Committed::Applied(outcome)));
                }
                return;
            }
            Err(CommitError::Conflict) | Err(CommitError::AlreadyApplied) => {
                metrics::counter!("rollcall_ingest_conflicts_total").increment(1);
                let backoff = 2u64.saturating_pow(attempt as u32).min(50);
                tokio::time::sleep(Duration::from_millis(backoff + rand::random::<u64>() % 5)).await;
            }
            Err(CommitError::Store(e)) => return fail(group, |_| WriteError::Store(clone_store_error(&e))),
        }
    }
    fail(group, |_| WriteError::Contended);
}

fn fail(group: Vec<(PlannedBatch, Reply)>, err: impl Fn(&PlannedBatch) -> WriteError) {
    for (b, reply) in group {
        let _ = reply.send(Err(err(&b)));
    }
}

/// A store error for each batch of a failed group (the engine's error is not
/// `Clone`; its message is what the log needs).
fn clone_store_error(e: &StoreError) -> StoreError {
    tracing::error!(error = ?e, "ingest commit failed");
    StoreError::Corrupt(e.to_string())
}

/// Reads the rows a group touches and folds its batches into them, in
/// order; returns what to write and each batch's outcome.
async fn fold(
    store: &SurrealStore,
    group: &[(PlannedBatch, Reply)],
) -> Result<(GroupWrite, Vec<BatchOutcome>), StoreError> {
    let pairs: Vec<(Uuid, Uuid)> =
        group.iter().flat_map(|(b, _)| b.counted.keys().copied()).collect::<HashSet<_>>().into_iter().collect();
    let stored = store.attendance().rows(&pairs).await?;
    let versions: HashMap<(Uuid, Uuid), (i64, String)> =
        stored.iter().map(|r| ((r.event_id, r.user_id), (r.version, r.cursor.clone()))).collect();
    let rows: HashMap<(Uuid, Uuid), Attendance> =
        stored.into_iter().map(|r| ((r.event_id, r.user_id), r.attendance)).collect();
    let known = known_repeats(store, group, &rows).await?;

    let mut fold = Fold::new(rows, known);
    let mut outcomes = Vec::with_capacity(group.len());
    for (b, _) in group {
        let mut outcome = b.outcome.clone();
        let gaps = |e: Uuid| b.events.get(&e).map(|r| r.policy.departure_gap).unwrap_or_default();
        fold.apply(&b.counted, gaps, &mut outcome);
        outcomes.push(outcome);
    }
    let (created, updated) = fold.finish();
    let record = |((event_id, user_id), attendance): ((Uuid, Uuid), Attendance)| {
        let (version, cursor) = versions.get(&(event_id, user_id)).cloned().unwrap_or_default();
        AttendanceRecord { event_id, user_id, attendance, version: version + 1, cursor }
    };
    let mut walk_ins: Vec<(Uuid, Uuid)> = group.iter().flat_map(|(b, _)| b.walk_ins.iter().copied()).collect();
    walk_ins.sort_unstable();
    walk_ins.dedup();
    let batches = group
        .iter()
        .zip(&outcomes)
        .map(|((b, _), outcome)| {
            let result =
                serde_json::to_string(outcome).map_err(|e| StoreError::Corrupt(format!("batch result: {e}")))?;
            Ok(BatchRecord {
                id: b.id.clone(),
                scanner: b.scanner,
                recorded_by: b.recorded_by,
                received_at: b.received_at,
                sent_at: b.sent_at,
                digest: Some(b.digest.clone()),
                sightings: b.raw.clone(),
                result,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let write = GroupWrite {
        batches,
        created: created.into_iter().map(record).collect(),
        updated: updated.into_iter().map(record).collect(),
        walk_ins,
    };
    Ok((write, outcomes))
}

/// What to ask the raw log about one scanner's sightings: the sightings, and
/// the events' rules.
type Ask = (Vec<(Pair, Sighting)>, HashMap<Uuid, EventRules>);

/// The raw log's answer for the sightings at or before their scanner's mark
/// (see `domain::ingest`): which of them it holds for the same event.
async fn known_repeats(
    store: &SurrealStore,
    group: &[(PlannedBatch, Reply)],
    rows: &HashMap<(Uuid, Uuid), Attendance>,
) -> Result<HashSet<(Uuid, Uuid, Uuid, i64)>, StoreError> {
    // Per scanner: the sightings to ask about, and the events' rules.
    let mut asks: HashMap<Option<Uuid>, Ask> = HashMap::new();
    for (b, _) in group {
        let below = below_marks(rows, &b.counted);
        if below.is_empty() {
            continue;
        }
        let entry = asks.entry(b.scanner).or_default();
        entry.0.extend(below);
        entry.1.extend(b.events.iter().map(|(k, v)| (*k, v.clone())));
    }
    let mut known = HashSet::new();
    for (scanner, (below, events)) in asks {
        let from = below.iter().map(|(_, s)| s.seen_at).min();
        let to = below.iter().map(|(_, s)| s.seen_at).max();
        let (Some(from), Some(to)) = (from, to) else { continue };
        metrics::counter!("rollcall_ingest_raw_lookups_total").increment(1);
        let wanted: HashSet<(Uuid, Uuid, i64)> =
            below.iter().map(|((e, u), s)| (*e, *u, s.seen_at.timestamp_millis())).collect();
        let scanner_id = scanner.unwrap_or_else(Uuid::nil);
        for raw in store.batches().logged_between(scanner, from, to).await? {
            let ms = raw.seen_at.timestamp_millis();
            for (id, rules) in &events {
                if wanted.contains(&(*id, raw.user, ms))
                    && raw.belongs_to(rules)
                    && raw.source_counts(rules, CheckInSource::of(scanner_id))
                {
                    known.insert((*id, raw.user, scanner_id, ms));
                }
            }
        }
    }
    Ok(known)
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
