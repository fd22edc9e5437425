//! Turning sighting batches into attendance: the one implementation behind
//! `submitSightings`, `recordAttendance` and the seed route `/batch-checkin`.
//!
//! A batch is applied exactly once per (scanner, batchId): its stored result
//! answers every retry. It costs a fixed number of round trips whatever its
//! size: look up the batch, resolve all identifiers, read the events and the
//! registrations, read the touched attendance rows by id, then one
//! transaction that writes the raw log record and one row per changed
//! (user, event). A transaction that loses a race with another batch for the
//! same person is retried from the reads.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::ScannerScope;
use crate::domain::batch::{MAX_BATCH_SIZE, canonical_identifier, check_sighting};
use crate::domain::{Attendance, Sighting, Verdict, classify};
use crate::store::{
    AttendanceRecord, BatchRecord, BatchWrite, CommitError, Event, LoggedSighting, StoreError, SurrealStore,
};

/// How often a batch is retried after losing a race for an attendance row.
const MAX_ATTEMPTS: usize = 10;

/// One sighting as uploaded.
#[derive(Debug, Clone)]
pub struct SightingIn {
    /// A BLE UUID, or (older scanners) any device identifier.
    pub identifier: String,
    pub seen_at: DateTime<Utc>,
    pub rssi: Option<i32>,
    /// The event it is for; without one, every event in scope whose window
    /// with grace covers `seen_at` (active or ended). The
    /// nil UUID stands for an id that did not parse (rejected with a reason).
    pub event_id: Option<Uuid>,
}

/// Who reports the sightings.
#[derive(Debug, Clone)]
pub enum Source {
    /// A scanner, by its API key.
    Scanner { key_id: Uuid, scope: ScannerScope },
    /// An organiser's manual check-in.
    Manual { by: Uuid },
}

impl Source {
    /// The id sightings are attributed to (the nil UUID for manual ones).
    fn scanner_id(&self) -> Uuid {
        match self {
            Source::Scanner { key_id, .. } => *key_id,
            Source::Manual { .. } => Uuid::nil(),
        }
    }
}

/// What happened to one sighting; for a sighting offered to several events,
/// the best outcome among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SightingStatus {
    Rejected,
    UnknownDevice,
    OutsideEvent,
    BelowRssi,
    Unregistered,
    Duplicate,
    Counted,
}

/// A sighting refused by validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Its position in the batch, from 0.
    pub index: usize,
    pub reason: String,
}

/// A check-in a batch created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckIn {
    pub event_id: Uuid,
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
    pub scanner: Uuid,
}

/// The result of a batch, as stored and returned to every retry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// Sightings that passed validation.
    pub accepted: u64,
    /// New check-ins (first counted sighting of a user at an event).
    pub check_ins: u64,
    /// (sighting, event) pairs already counted before.
    pub duplicates: u64,
    /// Sightings of identifiers that belong to nobody.
    pub unknown_devices: u64,
    /// (sighting, event) pairs of users not registered where registration is required.
    pub unregistered: u64,
    /// (sighting, event) pairs outside the event's window with grace, or
    /// sightings with no event in scope at that time.
    pub outside_event: u64,
    /// (sighting, event) pairs weaker than the event's minRssi.
    pub below_rssi: u64,
    pub rejected: Vec<Rejection>,
    /// True when this is the stored result of an earlier delivery.
    #[serde(default)]
    pub replayed: bool,
    /// Per sighting, in batch order.
    pub statuses: Vec<SightingStatus>,
    /// The check-ins created, for live subscribers.
    pub new_check_ins: Vec<CheckIn>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("a batch holds at most {MAX_BATCH_SIZE} sightings; this one has {0}")]
    TooLarge(usize),
    #[error("{0}")]
    Invalid(String),
    /// Concurrent batches kept winning the race for the same rows; the
    /// scanner should retry (with the same batchId, so nothing doubles).
    #[error("the batch kept conflicting with concurrent batches; retry it")]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A validated sighting with the user it belongs to.
struct Resolved {
    index: usize,
    user: Uuid,
    sighting: Sighting,
    /// Events it is offered to (before the window and RSSI rules).
    events: Vec<Uuid>,
}

/// Applies a batch; see the module doc.
pub async fn submit(
    store: &SurrealStore,
    source: &Source,
    batch_id: Uuid,
    sent_at: Option<DateTime<Utc>>,
    sightings: Vec<SightingIn>,
) -> Result<BatchOutcome, IngestError> {
    if sightings.len() > MAX_BATCH_SIZE {
        return Err(IngestError::TooLarge(sightings.len()));
    }
    let batch_rid = BatchRecord::id_for(source.scanner_id(), batch_id);
    for _ in 0..MAX_ATTEMPTS {
        if let Some(stored) = store.attendance().batch_result(&batch_rid).await? {
            return replayed(&stored);
        }
        let now = Utc::now();
        let (outcome, write) = plan(store, source, &batch_rid, sent_at, &sightings, now).await?;
        let t = std::time::Instant::now();
        let committed = store.attendance().commit(write, now).await;
        tracing::debug!(commit = ?t.elapsed(), "batch write");
        match committed {
            Ok(()) => {
                if let Source::Scanner { key_id, .. } = source
                    && let Err(e) =
                        store.attendance().note_scanner_batch(*key_id, batch_id, outcome.unknown_devices, now).await
                {
                    // The batch is applied; only the scanner's statistics lag.
                    tracing::warn!(error = ?e, scanner = %key_id, "could not record the scanner's last batch");
                }
                return Ok(outcome);
            }
            Err(CommitError::AlreadyApplied) => continue,
            Err(CommitError::Conflict) => {
                metrics::counter!("rollcall_ingest_conflicts_total").increment(1);
                tokio::time::sleep(std::time::Duration::from_millis(rand::random::<u64>() % 20)).await;
            }
            Err(CommitError::Store(e)) => return Err(e.into()),
        }
    }
    Err(IngestError::Contended)
}

fn replayed(stored: &str) -> Result<BatchOutcome, IngestError> {
    let mut outcome: BatchOutcome =
        serde_json::from_str(stored).map_err(|e| StoreError::Corrupt(format!("stored batch result: {e}")))?;
    outcome.replayed = true;
    outcome.new_check_ins.clear();
    Ok(outcome)
}

/// Reads what the batch needs and works out its outcome and its writes.
async fn plan(
    store: &SurrealStore,
    source: &Source,
    batch_rid: &surrealdb::types::RecordId,
    sent_at: Option<DateTime<Utc>>,
    sightings: &[SightingIn],
    now: DateTime<Utc>,
) -> Result<(BatchOutcome, BatchWrite), IngestError> {
    let mut out = BatchOutcome { statuses: vec![SightingStatus::Rejected; sightings.len()], ..Default::default() };
    let scanner = source.scanner_id();

    // Validation, and the identifiers and events to look up.
    let mut valid = Vec::new();
    for (index, s) in sightings.iter().enumerate() {
        match check_sighting(&s.identifier, s.seen_at, s.rssi, now) {
            Ok(()) => valid.push((index, canonical_identifier(&s.identifier), s)),
            Err(reason) => out.rejected.push(Rejection { index, reason }),
        }
    }
    let identifiers: Vec<String> =
        valid.iter().map(|(_, id, _)| id.clone()).collect::<HashSet<_>>().into_iter().collect();
    let t0 = std::time::Instant::now();
    let users = store.attendance().resolve(identifiers).await?;
    let t_resolve = t0.elapsed();
    let explicit: Vec<Uuid> =
        valid.iter().filter_map(|(_, _, s)| s.event_id).collect::<HashSet<_>>().into_iter().collect();
    let mut events: HashMap<Uuid, Event> =
        store.events().get_many(&explicit).await?.into_iter().map(|e| (e.id, e)).collect();
    // Sightings without an event go to every event in scope that takes
    // attendance and whose window with grace covers them, whatever its state
    // now: an offline scanner uploads after the event ended.
    let mut implicit: Vec<(Uuid, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let unassigned = valid.iter().filter(|(_, _, s)| s.event_id.is_none()).map(|(_, _, s)| s.seen_at);
    if let (Some(from), Some(to)) = (unassigned.clone().min(), unassigned.max()) {
        for e in store.events().counting_between(from, to).await? {
            if in_scope(source, &e) {
                let window = crate::domain::EventWindow::new(e.starts_at, e.ends_at)
                    .map_err(|err| StoreError::Corrupt(format!("event {}: {err}", e.id)))?;
                let (opens, closes) = window.with_grace(e.policy.grace);
                implicit.push((e.id, opens, closes));
            }
            events.entry(e.id).or_insert(e);
        }
    }

    // Each sighting's user and events.
    let mut resolved = Vec::new();
    for (index, identifier, s) in valid {
        let offered = match s.event_id {
            Some(id) if id.is_nil() => {
                out.rejected.push(Rejection { index, reason: "eventId is not a valid event id".into() });
                continue;
            }
            Some(id) => match events.get(&id) {
                None => {
                    out.rejected.push(Rejection { index, reason: format!("no event has the id {id}") });
                    continue;
                }
                Some(e) if !in_scope(source, e) => {
                    out.rejected.push(Rejection { index, reason: format!("event {id} is not in this key's scope") });
                    continue;
                }
                Some(e) if !e.state.takes_attendance() => {
                    let reason = format!("event {id} is {}, not taking attendance", e.state.as_str().to_lowercase());
                    out.rejected.push(Rejection { index, reason });
                    continue;
                }
                Some(_) => vec![id],
            },
            None => implicit
                .iter()
                .filter(|(_, opens, closes)| (*opens..=*closes).contains(&s.seen_at))
                .map(|(id, _, _)| *id)
                .collect(),
        };
        let Some(&user) = users.get(&identifier) else {
            out.unknown_devices += 1;
            out.statuses[index] = SightingStatus::UnknownDevice;
            continue;
        };
        let sighting = Sighting { scanner, seen_at: s.seen_at, rssi: s.rssi };
        resolved.push(Resolved { index, user, sighting, events: offered });
    }
    out.rejected.sort_by_key(|r| r.index);
    out.accepted = (sightings.len() - out.rejected.len()) as u64;

    // Rules 1 and 6: window, RSSI, registration.
    let pairs: Vec<(Uuid, Uuid)> = resolved
        .iter()
        .flat_map(|r| r.events.iter().map(|e| (r.user, *e)))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let t1 = std::time::Instant::now();
    let registered: HashSet<(Uuid, Uuid)> = store.registrations().standing(&pairs).await?.into_iter().collect();
    let t_registered = t1.elapsed();
    let mut counted: BTreeMap<(Uuid, Uuid), Vec<(usize, Sighting)>> = BTreeMap::new();
    let mut walk_ins = HashSet::new();
    for r in &resolved {
        let mut best = SightingStatus::OutsideEvent;
        if r.events.is_empty() {
            out.outside_event += 1;
        }
        for event_id in &r.events {
            let Some(event) = events.get(event_id) else { continue };
            let window = crate::domain::EventWindow::new(event.starts_at, event.ends_at)
                .map_err(|e| StoreError::Corrupt(format!("event {event_id}: {e}")))?;
            let status = match classify(&event.policy, &window, &r.sighting) {
                Verdict::BelowRssi => {
                    out.below_rssi += 1;
                    SightingStatus::BelowRssi
                }
                Verdict::OutsideEvent => {
                    out.outside_event += 1;
                    SightingStatus::OutsideEvent
                }
                Verdict::Counted if !registered.contains(&(r.user, *event_id)) && event.policy.require_registration => {
                    out.unregistered += 1;
                    SightingStatus::Unregistered
                }
                Verdict::Counted => {
                    if !registered.contains(&(r.user, *event_id)) {
                        walk_ins.insert((r.user, *event_id));
                    }
                    counted.entry((*event_id, r.user)).or_default().push((r.index, r.sighting));
                    SightingStatus::Counted
                }
            };
            best = best.max(status);
        }
        out.statuses[r.index] = best;
    }

    // Rules 2–4: fold into the stored attendance, one row per (event, user).
    let pairs: Vec<(Uuid, Uuid)> = counted.keys().copied().collect();
    let t2 = std::time::Instant::now();
    let mut existing: HashMap<(Uuid, Uuid), AttendanceRecord> =
        store.attendance().rows(&pairs).await?.into_iter().map(|r| ((r.event_id, r.user_id), r)).collect();
    tracing::debug!(?t_resolve, ?t_registered, rows = ?t2.elapsed(), "batch reads");
    let (mut created, mut updated) = (Vec::new(), Vec::new());
    for ((event_id, user_id), items) in counted {
        let gap = events.get(&event_id).map(|e| e.policy.departure_gap).unwrap_or_default();
        let mut record = existing.remove(&(event_id, user_id));
        let before = record.as_ref().map(|r| r.attendance.clone());
        for (index, s) in items {
            let fresh = match &mut record {
                Some(r) => r.attendance.absorb(&s, gap),
                None => {
                    record = Some(AttendanceRecord {
                        event_id,
                        user_id,
                        attendance: Attendance::first(&s),
                        version: 0,
                        cursor: String::new(),
                    });
                    true
                }
            };
            if !fresh {
                out.duplicates += 1;
                if out.statuses[index] == SightingStatus::Counted {
                    out.statuses[index] = SightingStatus::Duplicate;
                }
            }
        }
        let Some(mut record) = record else { continue };
        match before {
            None => {
                record.version = 1;
                out.check_ins += 1;
                out.new_check_ins.push(CheckIn {
                    event_id,
                    user_id,
                    at: record.attendance.first_seen,
                    scanner: record.attendance.first_scanner,
                });
                created.push(record);
            }
            Some(before) if before != record.attendance => {
                record.version += 1;
                updated.push(record);
            }
            Some(_) => {}
        }
    }
    let logged: Vec<LoggedSighting> = resolved
        .iter()
        .map(|r| LoggedSighting {
            user: r.user,
            seen_at: r.sighting.seen_at,
            rssi: r.sighting.rssi,
            events: r.events.clone(),
        })
        .collect();
    let result = serde_json::to_string(&out).map_err(|e| StoreError::Corrupt(format!("batch result: {e}")))?;
    let batch = BatchRecord {
        id: batch_rid.clone(),
        scanner: match source {
            Source::Scanner { key_id, .. } => Some(*key_id),
            Source::Manual { .. } => None,
        },
        recorded_by: match source {
            Source::Manual { by } => Some(*by),
            Source::Scanner { .. } => None,
        },
        received_at: now,
        sent_at,
        sightings: logged,
        result,
    };
    let write = BatchWrite { batch, created, updated, walk_ins: walk_ins.into_iter().collect() };
    Ok((out, write))
}

fn in_scope(source: &Source, event: &Event) -> bool {
    match source {
        Source::Scanner { scope, .. } => scope.covers(event),
        Source::Manual { .. } => true,
    }
}

/// Derives an event's attendance again from the raw log (after a policy or
/// window change). Returns how many attendance rows it now has.
pub async fn recompute(store: &SurrealStore, event: &Event) -> Result<usize, IngestError> {
    let window = crate::domain::EventWindow::new(event.starts_at, event.ends_at)
        .map_err(|e| IngestError::Invalid(e.to_string()))?;
    let logged = store.attendance().logged_for_event(event.id).await?;
    let mut by_user: BTreeMap<Uuid, Vec<Sighting>> = BTreeMap::new();
    for (scanner, s) in logged {
        let user = s.user;
        by_user.entry(user).or_default().push(Sighting {
            scanner: scanner.unwrap_or_else(Uuid::nil),
            seen_at: s.seen_at,
            rssi: s.rssi,
        });
    }
    let pairs: Vec<(Uuid, Uuid)> = by_user.keys().map(|u| (*u, event.id)).collect();
    // Check-ins that stay keep their place in the event's check-in stream,
    // and their versions move on (an ingest that read the old row must not
    // pass its version check against the re-derived one).
    let kept = store.attendance().cursors(event.id).await?;
    let registered: HashSet<Uuid> = store.registrations().standing(&pairs).await?.into_iter().map(|(u, _)| u).collect();
    let rows: Vec<AttendanceRecord> = by_user
        .into_iter()
        .filter(|(user, _)| registered.contains(user) || !event.policy.require_registration)
        .filter_map(|(user_id, sightings)| {
            Attendance::fold(&event.policy, &window, &sightings).map(|attendance| {
                let (cursor, version) = kept.get(&user_id).cloned().unwrap_or_default();
                AttendanceRecord { event_id: event.id, user_id, attendance, version: version + 1, cursor }
            })
        })
        .collect();
    // Under walk-in rules, whoever now counts without a registration walks in.
    let walk_ins: Vec<(Uuid, Uuid)> =
        rows.iter().filter(|r| !registered.contains(&r.user_id)).map(|r| (r.user_id, event.id)).collect();
    let n = rows.len();
    store.attendance().replace_for_event(event.id, rows, &walk_ins, Utc::now()).await?;
    Ok(n)
}
