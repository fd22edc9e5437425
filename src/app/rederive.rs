//! Deriving an event's attendance again from the raw log, in the background.
//!
//! A policy or window change asks for it (`store::Rederivations`, in the
//! change's own transaction), and so may an organiser (`recomputeAttendance`).
//! One worker task per process claims pending jobs, one at a time, under a
//! lease:
//! 1. it reads the raw log's batches for the event in pages, in batch-id
//!    order, collecting each user's sightings, and records its progress
//!    after every page (that also renews its lease); other events' ingest
//!    goes on meanwhile;
//! 2. it hands what it gathered to the process's writer, which starts the
//!    final step between two of its commits: read the batches committed
//!    since the job started (they may have landed behind the page cursor),
//!    fold everything with the event's policy, replace the event's rows,
//!    guarded by their versions, and mark the job done, all in one
//!    transaction. Batches for other events commit meanwhile. No batch
//!    committed meanwhile is lost: in this process the writer holds back
//!    batches that touch the event until the step is done, and another
//!    instance's commit to the same rows fails the guard, and the step is
//!    folded again.
//!
//! A worker that dies leaves its lease to run out; the job is then claimed
//! again and starts over (it is a function of the raw log). Memory is one
//! `Sighting` (40 bytes) per raw sighting of the event while the job runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use surrealdb::types::RecordId;
use tokio::sync::Notify;
use uuid::Uuid;

use super::writer::{WriteError, Writer};
use crate::domain::ingest::{EventRules, RawSighting};
use crate::domain::{Attendance, CheckInSource, EventWindow, Sighting};
use crate::store::{AttendanceRecord, CommitError, Event, StoreError, SurrealStore};

/// How long a claimed job stays with its worker without news.
const LEASE: chrono::Duration = chrono::Duration::seconds(30);
/// How far back of its start a job looks for batches committed while it read.
const CATCH_UP_MARGIN: chrono::Duration = chrono::Duration::seconds(60);
/// How often an idle worker looks for jobs other instances asked for.
const POLL: Duration = Duration::from_secs(2);

/// What a job gathered from the raw log before its final step.
pub struct Gathered {
    pub event: Event,
    pub generation: i64,
    pub scanners: Vec<Uuid>,
    /// When the job started reading.
    pub started: DateTime<Utc>,
    /// The batches read, so the final step folds each once.
    pub read: HashSet<RecordId>,
    /// Each user's sightings of the event.
    pub by_user: BTreeMap<Uuid, Vec<Sighting>>,
}

/// A handle on the process's re-derivation worker.
#[derive(Clone)]
pub struct Rederiver {
    wake: Arc<Notify>,
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Rederiver {
    pub fn start(store: SurrealStore, writer: Writer) -> Self {
        let wake = Arc::new(Notify::new());
        let owner = Uuid::new_v4().to_string();
        let task = tokio::spawn(run(store, writer, wake.clone(), owner));
        Self { wake, task: Arc::new(tokio::sync::Mutex::new(Some(task))) }
    }

    /// Looks for work now (a job was just asked for).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub async fn stop(&self) {
        if let Some(task) = self.task.lock().await.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn run(store: SurrealStore, writer: Writer, wake: Arc<Notify>, owner: String) {
    loop {
        if !writer.derives_here() {
            // Another instance holds the rows; it takes the jobs.
            let _ = tokio::time::timeout(POLL, wake.notified()).await;
            continue;
        }
        let now = Utc::now();
        match store.rederivations().claim(&owner, now, now + LEASE).await {
            Ok(Some((event, generation))) => {
                let t = std::time::Instant::now();
                match job(&store, &writer, event, generation).await {
                    Ok(rows) => {
                        tracing::info!(%event, generation, rows, took = ?t.elapsed(), "attendance derived again")
                    }
                    Err(e) => {
                        tracing::error!(%event, error = ?e, "deriving attendance again failed; it will be retried");
                        let _ = store.rederivations().release(event).await;
                        tokio::time::sleep(POLL).await;
                    }
                }
            }
            Ok(None) => {
                let _ = tokio::time::timeout(POLL, wake.notified()).await;
            }
            Err(e) => {
                tracing::warn!(error = ?e, "could not look for re-derivation jobs");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// Runs one job; returns how many rows the event now has.
async fn job(store: &SurrealStore, writer: &Writer, event_id: Uuid, generation: i64) -> Result<usize, WriteError> {
    let Some(event) = store.events().get(event_id).await? else {
        // The event went, with its rows: nothing to derive.
        store.rederivations().forget(event_id).await?;
        return Ok(0);
    };
    let started = Utc::now();
    let window = window_of(&event)?;
    let counting = window.with_grace(event.policy.grace);
    let scanners = store.api_keys().covering(&event).await?;
    let total = store.batches().count_for_event(event.id, &scanners, counting).await?;
    let rules = EventRules { id: event.id, state: event.state, window, policy: event.policy, in_scope: true };
    let mut gathered =
        Gathered { event, generation, scanners, started, read: HashSet::new(), by_user: BTreeMap::new() };
    let mut after = None;
    loop {
        let page = store.batches().page_for_event(event_id, &gathered.scanners, counting, after.clone()).await?;
        let Some((last, _, _)) = page.last() else { break };
        after = Some(last.clone());
        for (id, scanner, raw) in page {
            gather(&mut gathered, &rules, id, scanner, &raw);
        }
        store.rederivations().progress(event_id, gathered.read.len() as i64, total, Utc::now() + LEASE).await?;
    }
    writer.rederive(gathered).await
}

fn window_of(event: &Event) -> Result<EventWindow, StoreError> {
    EventWindow::new(event.starts_at, event.ends_at)
        .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", event.id)))
}

/// Adds one batch's sightings of the event.
fn gather(g: &mut Gathered, rules: &EventRules, id: RecordId, scanner: Option<Uuid>, raw: &[RawSighting]) {
    if !g.read.insert(id) {
        return;
    }
    // Unassigned sightings count only from keys that cover the event.
    let in_scope = scanner.is_none_or(|s| g.scanners.contains(&s));
    let rules = EventRules { in_scope, ..rules.clone() };
    let reporter = scanner.unwrap_or_else(Uuid::nil);
    let source = CheckInSource::of(reporter);
    for s in raw.iter().filter(|s| s.belongs_to(&rules) && s.source_counts(&rules, source)) {
        let sighting = Sighting { scanner: reporter, seen_at: s.seen_at, rssi: s.rssi };
        g.by_user.entry(s.user).or_default().push(sighting);
    }
}

/// The final step, started by the writer, which holds back the event's
/// batches meanwhile: folds in what committed since the job started, and
/// replaces the event's rows.
pub(super) async fn finish(store: &SurrealStore, mut g: Gathered) -> Result<usize, WriteError> {
    let event = g.event.clone();
    let window = window_of(&event)?;
    let counting = window.with_grace(event.policy.grace);
    let rules = EventRules { id: event.id, state: event.state, window, policy: event.policy, in_scope: true };
    for attempt in 0..10u32 {
        let since = g.started - CATCH_UP_MARGIN;
        for (id, scanner, raw) in store.batches().for_event_since(event.id, &g.scanners, counting, since).await? {
            gather(&mut g, &rules, id, scanner, &raw);
        }
        let pairs: Vec<(Uuid, Uuid)> = g.by_user.keys().map(|u| (*u, event.id)).collect();
        // Check-ins that stay keep their place in the event's check-in
        // stream; versions move on from the ones read here.
        let kept: HashMap<Uuid, (String, i64)> = store.attendance().cursors(event.id).await?;
        let registered: HashSet<Uuid> =
            store.registrations().standing(&pairs).await?.into_iter().map(|(u, _)| u).collect();
        let rows: Vec<AttendanceRecord> = g
            .by_user
            .iter()
            .filter(|(user, _)| registered.contains(user) || !event.policy.require_registration)
            .filter_map(|(user_id, sightings)| {
                Attendance::fold(&event.policy, &window, sightings).map(|attendance| {
                    let (cursor, version) = kept.get(user_id).cloned().unwrap_or_default();
                    AttendanceRecord { event_id: event.id, user_id: *user_id, attendance, version: version + 1, cursor }
                })
            })
            .collect();
        // Under walk-in rules, whoever now counts without a registration walks in.
        let walk_ins: Vec<(Uuid, Uuid)> =
            rows.iter().filter(|r| !registered.contains(&r.user_id)).map(|r| (r.user_id, event.id)).collect();
        let n = rows.len();
        let staying: HashSet<Uuid> = rows.iter().map(|r| r.user_id).collect();
        let gone: Vec<(Uuid, i64)> =
            kept.iter().filter(|(u, _)| !staying.contains(u)).map(|(u, (_, version))| (*u, *version)).collect();
        let read = g.read.iter().cloned().collect();
        let now = Utc::now();
        match store.attendance().replace_for_event(event.id, rows, &walk_ins, &gone, read, g.generation, now).await {
            Ok(()) => return Ok(n),
            Err(CommitError::Conflict) | Err(CommitError::AlreadyApplied) => {
                tokio::time::sleep(Duration::from_millis(2u64.pow(attempt.min(6)))).await;
            }
            Err(CommitError::Store(e)) => return Err(e.into()),
        }
    }
    Err(WriteError::Contended)
}
