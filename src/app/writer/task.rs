//! The writer's task: takes jobs from the handle ([`super::Writer`]), folds
//! queued batches into groups and commits them, holds rows back and flushes
//! them (`flush`), follows the rows' lease on a shared store (`projector`),
//! and lets batches wait while an event's re-derivation finishes.

use std::collections::HashSet;
use std::sync::PoisonError;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::flush::Held;
use super::group::{RowsAt, commit_group};
use super::projector::Lease;
use super::rows::{Flush, Rows, Scope};
use super::{Finishes, Job, MAX_GROUP, PlannedBatch, Reply};
use crate::store::{CommitError, RENEW, SurrealStore};

pub(super) type Flushed = (Flush, Result<(), CommitError>);

/// The writer task's state.
pub(super) struct Loop {
    pub(super) store: SurrealStore,
    /// Rows held in memory, or `None` (written through, or held by another
    /// instance).
    pub(super) held: Option<Held>,
    /// How long a changed row may wait (`None`: written through).
    pub(super) interval: Option<Duration>,
    /// On a shared store: this instance's hold on the rows.
    pub(super) lease: Option<Lease>,
    /// Where flushes report.
    pub(super) flushed_tx: mpsc::UnboundedSender<Flushed>,
    /// Events whose final re-derivation step runs, and the batches that
    /// wait for them.
    pub(super) finishing: HashSet<Uuid>,
    pub(super) waiting: Vec<(PlannedBatch, Reply)>,
}

pub(super) async fn run(
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
                    let _ = reply.send(crate::app::rederive::finish(&store, *gathered).await);
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
pub(super) async fn drain(held: &mut Held, store: &SurrealStore, flushed_rx: &mut mpsc::UnboundedReceiver<Flushed>) {
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
    pub(super) async fn hold(&mut self) {
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
    use surrealdb::types::RecordId;
    use tokio::sync::oneshot;

    use crate::domain::ingest::{Assignment, BatchOutcome, EventRules, RawSighting};
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
