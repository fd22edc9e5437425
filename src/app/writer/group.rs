//! One group's commit: read the rows its batches touch (or take them from
//! the rows the writer holds), fold the batches into them in order, commit,
//! and answer each batch.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use surrealdb::types::RecordId;
use uuid::Uuid;

use super::rows::Rows;
use super::{Committed, MAX_ATTEMPTS, PlannedBatch, Reply, WriteError};
use crate::domain::ingest::{BatchOutcome, EventRules, Fold, Pair, below_marks};
use crate::domain::{Attendance, CheckInSource, Sighting};
use crate::store::{AttendanceRecord, BatchRecord, CommitError, GroupWrite, PendingFold, StoreError, SurrealStore};

/// Where a group's rows come from and go: the store alone (written
/// through), the rows the writer holds, or the store, with changes to
/// existing rows left to the instance that holds them (`projector`).
pub(super) enum RowsAt<'a> {
    Store,
    Held { rows: &'a mut Rows, marked: &'a mut HashSet<Uuid> },
    Pending,
}

/// Commits one group, retrying lost races; answers every batch in it.
pub(super) async fn commit_group(store: &SurrealStore, mut at: RowsAt<'_>, mut group: Vec<(PlannedBatch, Reply)>) {
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
        let t = Instant::now();
        let Folded { mut write, outcomes, changed } = match fold(store, &mut at, &group).await {
            Ok(f) => f,
            Err(e) => return fail(group, |_| WriteError::Store(clone_store_error(&e))),
        };
        if let RowsAt::Held { marked, .. } = &at {
            write.deferred = changed.iter().map(|(p, _)| p.0).filter(|e| !marked.contains(e)).collect();
            write.deferred.sort_unstable();
            write.deferred.dedup();
        }
        let (folded, rows) = (t.elapsed(), write.created.len() + write.updated.len());
        let pending: usize = write.pending.iter().map(|p| p.sightings.len()).sum();
        let committed = store.attendance().commit(&mut write, now).await;
        tracing::debug!(batches = group.len(), rows, held = changed.len(), ?folded, commit = ?(t.elapsed() - folded), "ingest group");
        match committed {
            Ok(()) => {
                metrics::counter!("rollcall_ingest_pending_sightings_total").increment(pending as u64);
                if let RowsAt::Held { rows, marked } = &mut at {
                    rows.committed(&write.created, changed, Instant::now());
                    marked.extend(write.deferred.iter().copied());
                    metrics::gauge!("rollcall_ingest_rows_waiting").set(rows.waiting() as f64);
                }
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

pub(super) fn fail(group: Vec<(PlannedBatch, Reply)>, err: impl Fn(&PlannedBatch) -> WriteError) {
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

/// A group folded.
struct Folded {
    /// What to commit.
    write: GroupWrite,
    /// Each batch's outcome.
    outcomes: Vec<BatchOutcome>,
    /// Rows changed and held back (when rows are held): written later.
    changed: Vec<(Pair, Attendance)>,
}

/// Takes the rows a group touches and folds its batches into them, in
/// order.
async fn fold(
    store: &SurrealStore,
    at: &mut RowsAt<'_>,
    group: &[(PlannedBatch, super::Reply)],
) -> Result<Folded, StoreError> {
    let pairs: Vec<Pair> =
        group.iter().flat_map(|(b, _)| b.counted.keys().copied()).collect::<HashSet<_>>().into_iter().collect();
    let stored = match at {
        RowsAt::Store | RowsAt::Pending => store.attendance().rows(&pairs).await?,
        RowsAt::Held { rows, .. } => {
            let read = store.attendance().rows(&rows.missing(&pairs)).await?;
            rows.hold_read(read, Instant::now());
            rows.view(&pairs)
        }
    };
    let versions: HashMap<Pair, (i64, String)> =
        stored.iter().map(|r| ((r.event_id, r.user_id), (r.version, r.cursor.clone()))).collect();
    let rows: HashMap<Pair, Attendance> = stored.into_iter().map(|r| ((r.event_id, r.user_id), r.attendance)).collect();
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
    let record = |((event_id, user_id), attendance): (Pair, Attendance)| {
        let (version, cursor) = versions.get(&(event_id, user_id)).cloned().unwrap_or_default();
        AttendanceRecord { event_id, user_id, attendance, version: version + 1, cursor }
    };
    let (updated, changed, pending) = match at {
        RowsAt::Store => (updated.into_iter().map(record).collect(), Vec::new(), Vec::new()),
        RowsAt::Held { .. } => (Vec::new(), updated, Vec::new()),
        RowsAt::Pending => (Vec::new(), Vec::new(), pending_of(group, updated.iter().map(|(p, _)| *p).collect())),
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
        updated,
        walk_ins,
        deferred: Vec::new(),
        pending,
    };
    Ok(Folded { write, outcomes, changed })
}

/// The sightings a group adds to rows that exist (`changed`), per event and
/// departure gap, for the instance that holds the rows to fold in.
fn pending_of(group: &[(PlannedBatch, Reply)], changed: HashSet<Pair>) -> Vec<PendingFold> {
    let mut by: HashMap<(Uuid, chrono::Duration), PendingFold> = HashMap::new();
    for (b, _) in group {
        for (pair, items) in b.counted.iter().filter(|(p, _)| changed.contains(p)) {
            let gap = b.events.get(&pair.0).map(|r| r.policy.departure_gap).unwrap_or_default();
            let p = by.entry((pair.0, gap)).or_insert_with(|| PendingFold {
                id: None,
                event: pair.0,
                batches: Vec::new(),
                gap,
                sightings: Vec::new(),
            });
            if p.batches.last() != Some(&b.id) {
                p.batches.push(b.id.clone());
            }
            p.sightings.extend(items.iter().map(|(_, s)| (pair.1, *s)));
        }
    }
    by.into_values().collect()
}

/// What to ask the raw log about one scanner's sightings: the sightings, and
/// the events' rules.
pub(super) type Ask = (Vec<(Pair, Sighting)>, HashMap<Uuid, EventRules>);

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
    known_repeats_of(store, asks).await
}

/// The raw log's answer to `asks`, per scanner (none: manual check-ins):
/// (event, user, scanner, `seenAt` in ms) of the sightings it holds.
pub(super) async fn known_repeats_of(
    store: &SurrealStore,
    asks: HashMap<Option<Uuid>, Ask>,
) -> Result<HashSet<(Uuid, Uuid, Uuid, i64)>, StoreError> {
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
