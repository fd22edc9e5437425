//! Ingest, the pure part: what a batch of sightings means, given what the
//! store holds. No I/O happens here; `crate::app::ingest` loads the inputs,
//! calls these functions and commits what they return.
//!
//! It runs in two steps, because the second needs what the first asks for:
//! 1. [`plan`] validates the batch, resolves each sighting's user and events,
//!    and applies rules 1 and 6 (window, RSSI, registration): the raw log
//!    entries to keep and the (event, user) pairs whose attendance it counts.
//! 2. [`Fold`] folds the counted sightings into attendance rows (rules 2–4):
//!    a pair without a row is a check-in; a sighting counted before is a
//!    duplicate. The writer folds many batches into one set of rows before
//!    it writes them, so a row is written once per commit, not per batch.
//!
//! **Duplicates without a list per row.** The same sighting (scanner,
//! user, `seenAt`) counts once. A row keeps, per scanner, the latest
//! `seenAt` it counted (its *mark*); a sighting after its scanner's mark is
//! new for certain. One at or before it is new unless the raw log already
//! holds it, which the writer looks up for just those sightings (scanners
//! upload in time order, so that is rare) and passes in as `known`. A row's
//! size depends on its scanners and stays, not on its sightings.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::batch::{canonical_identifier, check_sighting, fallback_identifier, lookup};

mod outcome;
mod raw;

use super::{Attendance, AttendancePolicy, CheckInSource, EventState, EventWindow, Sighting, Verdict, classify};
pub use outcome::{BatchOutcome, CheckIn, Rejection, SightingStatus};
pub use raw::{Assignment, RawSighting};

/// One sighting as uploaded.
#[derive(Debug, Clone)]
pub struct SightingIn {
    /// A BLE UUID, or (older scanners) any device identifier.
    pub identifier: String,
    pub seen_at: DateTime<Utc>,
    pub rssi: Option<i32>,
    /// The event it is for; without one, every event in scope whose window
    /// with grace covers `seen_at` (active or ended). The nil UUID stands for
    /// an id that did not parse (rejected with a reason).
    pub event_id: Option<Uuid>,
}

/// What ingest needs to know of an event.
#[derive(Debug, Clone)]
pub struct EventRules {
    pub id: Uuid,
    pub state: EventState,
    pub window: EventWindow,
    pub policy: AttendancePolicy,
    /// Whether the reporting scanner's key covers it.
    pub in_scope: bool,
}

impl EventRules {
    /// Whether `t` lies in the window with grace.
    pub fn covers(&self, t: DateTime<Utc>) -> bool {
        let (opens, closes) = self.window.with_grace(self.policy.grace);
        (opens..=closes).contains(&t)
    }
}

/// What [`plan`] reads: the batch, and what the store said about it.
pub struct PlanInputs<'a> {
    pub sightings: &'a [SightingIn],
    /// The reporter: a scanner's key id, or the reserved id of another
    /// source (`CheckInSource::reporter`).
    pub scanner: Uuid,
    /// Canonical identifier → user, for the identifiers that belong to someone.
    pub users: &'a HashMap<String, Uuid>,
    /// Rotating identifiers resolved, by batch index: the user, or `None`
    /// for an identifier of a slot too far from the sighting's (replayed).
    pub rotating: &'a HashMap<usize, Option<Uuid>>,
    /// The events named by the batch, and those whose window may cover its
    /// unassigned sightings.
    pub events: &'a HashMap<Uuid, EventRules>,
    /// Standing registrations among the (user, event) pairs it touches.
    pub registered: &'a HashSet<(Uuid, Uuid)>,
}

/// From, to.
pub type TimeRange = (DateTime<Utc>, DateTime<Utc>);

/// (event, user).
pub type Pair = (Uuid, Uuid);

/// Attendance rows by (event, user).
pub type Rows = Vec<(Pair, Attendance)>;

/// A sighting's canonical identifier, user and the events it is offered to.
type Assigned<'a> = (String, Uuid, Vec<&'a EventRules>);

/// A batch's counted sightings, per (event, user), with their batch index.
pub type Counted = BTreeMap<(Uuid, Uuid), Vec<(usize, Sighting)>>;

/// What [`plan`] decides.
pub struct Plan {
    /// The outcome so far (counts of rules 1 and 6; check-ins and duplicates
    /// come from the fold).
    pub outcome: BatchOutcome,
    /// The raw log entries to keep.
    pub raw: Vec<RawSighting>,
    /// Counted sightings per (event, user).
    pub counted: Counted,
    /// (user, event) pairs counted without a registration: walk-ins.
    pub walk_ins: Vec<(Uuid, Uuid)>,
}

/// The canonical identifiers a batch needs resolved (the first read), with
/// their fallbacks (an iBeacon's bare UUID).
pub fn identifiers(sightings: &[SightingIn]) -> Vec<String> {
    let mut set: HashSet<String> = HashSet::new();
    for s in sightings {
        let id = canonical_identifier(&s.identifier);
        set.extend(fallback_identifier(&id));
        set.insert(id);
    }
    set.into_iter().collect()
}

/// The events a batch names, and the time range of its unassigned sightings
/// (the second read).
pub fn event_reads(sightings: &[SightingIn]) -> (Vec<Uuid>, Option<TimeRange>) {
    let named: HashSet<Uuid> = sightings.iter().filter_map(|s| s.event_id).filter(|e| !e.is_nil()).collect();
    let mut unassigned = sightings.iter().filter(|s| s.event_id.is_none()).map(|s| s.seen_at);
    let range = unassigned.next().map(|first| unassigned.fold((first, first), |(lo, hi), t| (lo.min(t), hi.max(t))));
    (named.into_iter().collect(), range)
}

/// Validates a batch and applies rules 1 and 6; see the module doc.
/// `registered` may be asked for before this runs: [`candidate_pairs`].
pub fn plan(inputs: &PlanInputs<'_>, now: DateTime<Utc>) -> Plan {
    let sightings = inputs.sightings;
    let mut out = BatchOutcome { statuses: vec![SightingStatus::Rejected; sightings.len()], ..Default::default() };
    let mut raw = Vec::new();
    let mut counted: Counted = BTreeMap::new();
    let mut walk_ins = HashSet::new();
    let source = CheckInSource::of(inputs.scanner);
    for (index, s) in sightings.iter().enumerate() {
        if inputs.rotating.get(&index) == Some(&None) && check_sighting(&s.identifier, s.seen_at, s.rssi, now).is_ok() {
            // A rotating identifier copied from another slot: nobody's now.
            out.replayed_identifiers += 1;
            out.statuses[index] = SightingStatus::UnknownDevice;
            continue;
        }
        let (identifier, user, offered) = match assign(inputs, index, s, now) {
            Ok(Some(a)) => a,
            Ok(None) => {
                out.unknown_devices += 1;
                out.statuses[index] = SightingStatus::UnknownDevice;
                continue;
            }
            Err(reason) => {
                out.rejected.push(Rejection { index, reason });
                continue;
            }
        };
        // The raw log keeps milliseconds; so does everything derived from it.
        let seen_at = DateTime::<Utc>::from_timestamp_millis(s.seen_at.timestamp_millis()).unwrap_or(s.seen_at);
        let sighting = Sighting { scanner: inputs.scanner, seen_at, rssi: s.rssi };
        // Resolved, and not by a static identifier: by a rotating one.
        let rotating = lookup(inputs.users, &identifier).is_none();
        let mut best = SightingStatus::OutsideEvent;
        if offered.is_empty() {
            out.outside_event += 1;
        }
        for event in &offered {
            let registered = inputs.registered.contains(&(user, event.id));
            // The identity policy judges scanners; phone reports count where accepted.
            if !event.policy.counts(source, rotating) {
                out.identity_not_accepted += 1;
                best = best.max(SightingStatus::IdentityNotAccepted);
                continue;
            }
            let status = match classify(&event.policy, &event.window, &sighting) {
                Verdict::BelowRssi => {
                    out.below_rssi += 1;
                    SightingStatus::BelowRssi
                }
                Verdict::OutsideEvent => {
                    out.outside_event += 1;
                    SightingStatus::OutsideEvent
                }
                Verdict::Counted if !registered && event.policy.require_registration => {
                    out.unregistered += 1;
                    SightingStatus::Unregistered
                }
                Verdict::Counted => {
                    if !registered {
                        walk_ins.insert((user, event.id));
                    }
                    counted.entry((event.id, user)).or_default().push((index, sighting));
                    SightingStatus::Counted
                }
            };
            best = best.max(status);
        }
        out.statuses[index] = best;
        raw.push(RawSighting {
            identifier,
            user,
            seen_at,
            rssi: s.rssi,
            assignment: s.event_id.map_or(Assignment::Implicit, Assignment::Explicit),
            rotating,
        });
    }
    out.accepted = (sightings.len() - out.rejected.len()) as u64;
    Plan { outcome: out, raw, counted, walk_ins: walk_ins.into_iter().collect() }
}

/// The (user, event) pairs whose registration [`plan`] needs to know.
pub fn candidate_pairs(
    sightings: &[SightingIn],
    users: &HashMap<String, Uuid>,
    rotating: &HashMap<usize, Option<Uuid>>,
    events: &HashMap<Uuid, EventRules>,
) -> Vec<(Uuid, Uuid)> {
    let mut pairs = HashSet::new();
    for (index, s) in sightings.iter().enumerate() {
        let user =
            lookup(users, &canonical_identifier(&s.identifier)).or_else(|| rotating.get(&index).copied().flatten());
        let Some(user) = user else { continue };
        match s.event_id {
            Some(e) => {
                pairs.insert((user, e));
            }
            None => pairs.extend(events.values().filter(|e| e.in_scope && e.covers(s.seen_at)).map(|e| (user, e.id))),
        }
    }
    pairs.into_iter().collect()
}

/// A sighting's identifier, user and events; `None` for an unknown device,
/// or the reason it is rejected.
fn assign<'a>(
    inputs: &PlanInputs<'a>,
    index: usize,
    s: &SightingIn,
    now: DateTime<Utc>,
) -> Result<Option<Assigned<'a>>, String> {
    check_sighting(&s.identifier, s.seen_at, s.rssi, now)?;
    let offered: Vec<&EventRules> = match s.event_id {
        Some(id) if id.is_nil() => return Err("eventId is not a valid event id".into()),
        Some(id) => match inputs.events.get(&id) {
            None => return Err(format!("no event has the id {id}")),
            Some(e) if !e.in_scope => return Err(format!("event {id} is not in this key's scope")),
            Some(e) if !e.state.takes_attendance() => {
                return Err(format!("event {id} is {}, not taking attendance", e.state.as_str().to_lowercase()));
            }
            Some(e) => vec![e],
        },
        // Unassigned: every event in scope that takes attendance and whose
        // window covers it, whatever its state now (late uploads count).
        None => {
            let mut es: Vec<&EventRules> = inputs
                .events
                .values()
                .filter(|e| e.in_scope && e.state.takes_attendance() && e.covers(s.seen_at))
                .collect();
            es.sort_by_key(|e| e.id);
            es
        }
    };
    let identifier = canonical_identifier(&s.identifier);
    let user = lookup(inputs.users, &identifier).or_else(|| inputs.rotating.get(&index).copied().flatten());
    Ok(user.map(|u| (identifier, u, offered)))
}

/// Rules 2–4 over many batches: folds counted sightings into attendance
/// rows, batch after batch, and says per batch what was new.
pub struct Fold {
    /// The rows as they stand: read from the store, then folded into.
    rows: HashMap<(Uuid, Uuid), Attendance>,
    /// The pairs whose rows this fold created (check-ins).
    created: HashSet<(Uuid, Uuid)>,
    /// The pairs whose rows changed.
    changed: HashSet<(Uuid, Uuid)>,
    /// Sightings at or before their scanner's mark that the raw log holds:
    /// (event, user, scanner, seenAt in ms).
    known: HashSet<(Uuid, Uuid, Uuid, i64)>,
}

/// The sightings of (event, user) that the raw log must be asked about:
/// at or before their scanner's mark on the stored row.
pub fn below_marks<'a>(
    rows: &'a HashMap<(Uuid, Uuid), Attendance>,
    counted: impl IntoIterator<Item = (&'a (Uuid, Uuid), &'a Vec<(usize, Sighting)>)>,
) -> Vec<((Uuid, Uuid), Sighting)> {
    let mut out = Vec::new();
    for (pair, items) in counted {
        let Some(row) = rows.get(pair) else { continue };
        out.extend(items.iter().filter(|(_, s)| !row.above_mark(s)).map(|(_, s)| (*pair, *s)));
    }
    out
}

impl Fold {
    /// Starts from the stored rows and the raw log's answer for
    /// [`below_marks`].
    pub fn new(rows: HashMap<(Uuid, Uuid), Attendance>, known: HashSet<(Uuid, Uuid, Uuid, i64)>) -> Self {
        Self { rows, created: HashSet::new(), changed: HashSet::new(), known }
    }

    /// Folds one batch's counted sightings in, updating its outcome
    /// (`check_ins`, `duplicates`, statuses, `new_check_ins`).
    pub fn apply(&mut self, counted: &Counted, gap_of: impl Fn(Uuid) -> chrono::Duration, out: &mut BatchOutcome) {
        for (&(event, user), items) in counted {
            let gap = gap_of(event);
            let mut fresh_row = false;
            for (index, s) in items {
                let key = (event, user, s.scanner, s.seen_at.timestamp_millis());
                let new = match self.rows.get_mut(&(event, user)) {
                    None => {
                        self.rows.insert((event, user), Attendance::first(s));
                        self.created.insert((event, user));
                        fresh_row = true;
                        true
                    }
                    Some(row) => {
                        let new = row.above_mark(s) || !self.known.contains(&key);
                        let best = row.best_rssi;
                        row.absorb(s, gap, new);
                        // A repeat can still report a stronger RSSI.
                        if row.best_rssi != best {
                            self.changed.insert((event, user));
                        }
                        new
                    }
                };
                // Folded now: a repeat later in this fold is a duplicate.
                self.known.insert(key);
                if new {
                    self.changed.insert((event, user));
                } else {
                    out.duplicates += 1;
                    if out.statuses[*index] == SightingStatus::Counted {
                        out.statuses[*index] = SightingStatus::Duplicate;
                    }
                }
            }
            if fresh_row && let Some(row) = self.rows.get(&(event, user)) {
                out.check_ins += 1;
                out.new_check_ins.push(CheckIn {
                    event_id: event,
                    user_id: user,
                    at: row.first_seen,
                    scanner: row.first_scanner,
                });
            }
        }
    }

    /// The rows to create (check-ins) and to update, as folded.
    pub fn finish(mut self) -> (Rows, Rows) {
        let (mut created, mut updated) = (Vec::new(), Vec::new());
        for pair in self.changed {
            let Some(row) = self.rows.remove(&pair) else { continue };
            if self.created.contains(&pair) { created.push((pair, row)) } else { updated.push((pair, row)) }
        }
        created.sort_by_key(|(p, a)| (p.0, a.first_seen, p.1));
        (created, updated)
    }
}

#[cfg(test)]
mod tests;
