//! The ingest use cases: applying a sighting batch (`submitSightings`,
//! `recordAttendance`, the seed route `/batch-checkin`) here; erasing a
//! user's sightings, undoing a manual check-in and asking for an event's
//! attendance to be derived again from the raw log (`super::rederive` does
//! it) in `corrections`; batches a scanner sends again after the store lost
//! them in `restore`.
//!
//! Applying a batch: load its inputs in a fixed number of reads (the stored
//! result of the batch id; the identifiers; the events it names or that
//! cover its unassigned sightings; the registrations it touches), decide in
//! the pure `domain::ingest::plan`, then hand the plan to the process's
//! writer (`super::writer`), which folds it with whatever else is queued and
//! commits. A batch is applied exactly once per (scanner, batchId): its
//! stored result answers every retry, and a different body under the same
//! id is refused.
//!
//! "Scanner" there is the scanner's own identity when it sends one
//! (`x-rollcall-scanner-id`), so that a batch resent under a rotated key is
//! recognised; otherwise its API key. An identity is bound to the owner of the
//! first key that uploads with it (`store::ScannerIdentities`), and another
//! owner's key is refused it, so that nobody can pre-empt a scanner's batch
//! ids and have its real batches answered as replays. Batch ids are kept under
//! a digest of the identity, never the identity itself, so an identity chosen
//! to equal some key's id cannot reach that key's batches either.

mod corrections;
mod restore;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::identity::Resolver;
use super::rederive::Rederiver;
use super::scanner_notes::ScannerNotes;
use super::writer::{Committed, PlannedBatch, Scope, WriteError, Writer};
use crate::auth::ScannerScope;
use crate::domain::batch::{MAX_BATCH_SIZE, canonical_identifier, fallback_identifier, lookup};
use crate::domain::identity::Rotation;
use crate::domain::ingest::{self, BatchOutcome, EventRules, PlanInputs, SightingIn, candidate_pairs, event_reads};
use crate::domain::{CheckInSource, EventWindow};
use crate::store::{BatchRecord, Claim, Event, StoreError, StoredBatch, SurrealStore};

/// Who reports the sightings.
#[derive(Debug, Clone)]
pub enum Source {
    /// A scanner, by its API key.
    Scanner {
        key_id: Uuid,
        /// Who made the key (none: made at the command line).
        owner: Option<Uuid>,
        /// The scanner's own stable identity, if it sent one.
        identity: Option<Uuid>,
        scope: ScannerScope,
    },
    /// A check-in that a person made (by) for one event named in each
    /// sighting: an organiser's manual one, an attendee's door code, an
    /// attendee's phone report.
    Person { kind: CheckInSource, by: Uuid },
}

impl Source {
    /// An organiser's manual check-in.
    pub fn manual(by: Uuid) -> Self {
        Source::Person { kind: CheckInSource::Manual, by }
    }

    /// The id sightings are attributed to: the scanner's key, or the
    /// source's reserved reporter id (`CheckInSource`).
    fn scanner_id(&self) -> Uuid {
        match self {
            Source::Scanner { key_id, .. } => *key_id,
            Source::Person { kind, .. } => kind.reporter().unwrap_or_else(Uuid::nil),
        }
    }

    /// The reporter the raw log files the batch under: a scanner's key, a
    /// door code's or a phone's reserved id; none for manual check-ins (as
    /// they always were, so `undoManualCheckIn` finds them).
    fn logged_scanner(&self) -> Option<Uuid> {
        match self {
            Source::Scanner { key_id, .. } => Some(*key_id),
            Source::Person { kind, .. } => kind.reporter().filter(|id| !id.is_nil()),
        }
    }

    fn covers(&self, event: &Event) -> bool {
        match self {
            Source::Scanner { scope, .. } => scope.covers(event),
            Source::Person { .. } => true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("a batch holds at most {MAX_BATCH_SIZE} sightings; this one has {0}")]
    TooLarge(usize),
    #[error("{0}")]
    Invalid(String),
    /// The writer kept losing races with other instances' commits; the
    /// scanner should retry (with the same batchId, so nothing doubles).
    #[error("the batch kept conflicting with concurrent batches; retry it")]
    Contended,
    /// The batch id was applied already, with different sightings.
    #[error(
        "this batchId was already applied with different sightings; a new batch needs a new batchId \
         (a retry must resend the same sightings)"
    )]
    ReusedBatchId,
    /// The server is stopping.
    #[error("the server is shutting down; retry the batch")]
    Unavailable,
    /// The scanner's identity is bound to another owner's keys.
    #[error(
        "this scanner's identity {0} (the x-rollcall-scanner-id header) belongs to another owner's API keys: \
         use a key of the owner it was first used with, or have that owner (or an admin) release it \
         (releaseScannerIdentity)"
    )]
    ForeignIdentity(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<WriteError> for IngestError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Contended => IngestError::Contended,
            WriteError::Stopped => IngestError::Unavailable,
            WriteError::Store(e) => IngestError::Store(e),
        }
    }
}

/// The ingest use cases over one store and the process's writer; cheap to
/// clone.
#[derive(Clone)]
pub struct Ingest {
    store: SurrealStore,
    writer: Writer,
    rederiver: Rederiver,
    notes: ScannerNotes,
    /// Rotating identifiers' resolution table.
    pub rotating: Resolver,
    /// Events already derived again for a batch the store had lost.
    restored: restore::Restored,
}

impl Ingest {
    /// Starts the writer over `store`; rotating identifiers change every
    /// `slot_secs`; on an embedded store, changed attendance rows are
    /// written at most every `row_flush` (`None`: with each commit).
    pub fn start(store: SurrealStore, slot_secs: i64, row_flush: Option<std::time::Duration>) -> Self {
        let writer = Writer::start(store.clone(), row_flush);
        let rederiver = Rederiver::start(store.clone(), writer.clone());
        let rotating = Resolver::new(store.clone(), slot_secs);
        let notes = ScannerNotes::start(store.clone());
        Self { store, writer, rederiver, notes, rotating, restored: Default::default() }
    }

    /// Stops the background tasks (before the store closes).
    pub async fn stop(&self) {
        self.rederiver.stop().await;
        self.writer.stop().await;
        self.notes.stop().await;
    }

    /// Applies a batch; see the module doc. `resent`: the scanner sends it
    /// again because the store's epoch changed since it was acknowledged.
    pub async fn submit(
        &self,
        source: &Source,
        batch_id: Uuid,
        sent_at: Option<DateTime<Utc>>,
        sightings: Vec<SightingIn>,
        resent: bool,
    ) -> Result<BatchOutcome, IngestError> {
        if sightings.len() > MAX_BATCH_SIZE {
            return Err(IngestError::TooLarge(sightings.len()));
        }
        let id = BatchRecord::id_for(self.batch_namespace(source).await?, batch_id);
        let digest = digest(&sightings);
        // A batch id being applied right now by a concurrent retry is
        // answered once that commit is stored: at most two rounds.
        for _ in 0..3 {
            if let Some(stored) = self.store.batches().stored(&id).await? {
                return replayed(&stored, &digest);
            }
            let planned = self.plan(source, id.clone(), sent_at, &digest, &sightings).await?;
            if resent {
                self.restoring(&planned).await?;
            }
            match self.writer.commit(planned).await? {
                Committed::Applied(outcome) => {
                    if resent {
                        restore::restored(source, batch_id);
                    }
                    self.note_scanner(source, batch_id, &outcome);
                    return Ok(outcome);
                }
                Committed::AlreadyApplied => continue,
            }
        }
        Err(IngestError::Contended)
    }

    /// Whose batch ids a batch's id is one of: the scanner's identity (as a
    /// digest, see the module doc) when it sent one its key may use, else
    /// the key (or nil, for manual check-ins).
    async fn batch_namespace(&self, source: &Source) -> Result<Uuid, IngestError> {
        let Source::Scanner { key_id, owner, identity: Some(identity), .. } = source else {
            return Ok(source.scanner_id());
        };
        match self.store.scanner_identities().claim(*identity, *owner, *key_id, Utc::now()).await? {
            Claim::Granted => Ok(identity_namespace(*identity)),
            Claim::Refused => {
                tracing::warn!(key = %key_id, %identity, "refused a batch: the scanner identity belongs to another owner");
                Err(IngestError::ForeignIdentity(*identity))
            }
        }
    }

    /// Loads a batch's inputs and plans it.
    async fn plan(
        &self,
        source: &Source,
        id: surrealdb::types::RecordId,
        sent_at: Option<DateTime<Utc>>,
        digest: &str,
        sightings: &[SightingIn],
    ) -> Result<PlannedBatch, IngestError> {
        let now = Utc::now();
        let directory = self.store.directory().await?;
        let users = directory.owners(ingest::identifiers(sightings)).await?;
        let (named, unassigned) = event_reads(sightings);
        let mut events: HashMap<Uuid, EventRules> = HashMap::new();
        for e in self.store.events().get_many(&named).await? {
            events.insert(e.id, rules(source, &e)?);
        }
        if let Some((from, to)) = unassigned {
            for e in self.store.events().counting_between(from, to).await? {
                events.insert(e.id, rules(source, &e)?);
            }
        }
        let rotating = self.resolve_rotating(sightings, &users, now).await?;
        let pairs = candidate_pairs(sightings, &users, &rotating, &events);
        let registered: HashSet<(Uuid, Uuid)> = directory.standing(&pairs).await?.into_iter().collect();
        let inputs = PlanInputs {
            sightings,
            scanner: source.scanner_id(),
            users: &users,
            rotating: &rotating,
            events: &events,
            registered: &registered,
        };
        let mut plan = ingest::plan(&inputs, now);
        plan.outcome.rejected.sort_by_key(|r| r.index);
        Ok(PlannedBatch {
            id,
            scanner: source.logged_scanner(),
            recorded_by: match source {
                Source::Person { by, .. } => Some(*by),
                Source::Scanner { .. } => None,
            },
            received_at: now,
            sent_at,
            digest: digest.to_owned(),
            raw: plan.raw,
            counted: plan.counted,
            walk_ins: plan.walk_ins,
            outcome: plan.outcome,
            events,
        })
    }

    /// Resolves the sightings whose identifier belongs to nobody statically
    /// and is a UUID (or an iBeacon's) against the rotating identifiers: by
    /// batch index, `Some(user)`, or `None` for a replayed one. A batch of
    /// static identifiers only costs nothing here.
    async fn resolve_rotating(
        &self,
        sightings: &[SightingIn],
        users: &HashMap<String, Uuid>,
        now: DateTime<Utc>,
    ) -> Result<HashMap<usize, Option<Uuid>>, IngestError> {
        let mut asked = Vec::new();
        let mut queries = Vec::new();
        for (index, s) in sightings.iter().enumerate() {
            let id = canonical_identifier(&s.identifier);
            if lookup(users, &id).is_some() {
                continue;
            }
            let uuid = Uuid::parse_str(&id).ok().or_else(|| fallback_identifier(&id).and_then(|f| f.parse().ok()));
            if let Some(uuid) = uuid {
                asked.push(index);
                queries.push((uuid, s.seen_at));
            }
        }
        if queries.is_empty() {
            return Ok(HashMap::new());
        }
        let answers = self.rotating.resolve(&queries, now).await?;
        Ok(asked
            .into_iter()
            .zip(answers)
            .filter_map(|(index, r)| match r {
                Rotation::Valid(user) => Some((index, Some(user))),
                Rotation::Replayed => Some((index, None)),
                Rotation::Unknown => None,
            })
            .collect())
    }

    /// Records the scanner's last batch: bookkeeping, in the background,
    /// never failing the batch (`super::scanner_notes`).
    fn note_scanner(&self, source: &Source, batch_id: Uuid, outcome: &BatchOutcome) {
        if let Source::Scanner { key_id, .. } = source {
            self.notes.note(*key_id, batch_id, outcome.unknown_devices);
        }
    }

    /// The store it ingests into.
    pub fn store(&self) -> &SurrealStore {
        &self.store
    }

    /// Writes the attendance rows held back in `scope` (see
    /// `app::writer`), so that a read of them that follows sees every batch
    /// acknowledged so far.
    pub async fn settle(&self, scope: Scope) {
        self.writer.settle(scope).await;
    }

    /// Lets go of the rows held for an event whose stored rows were deleted.
    pub async fn forget_event(&self, event: Uuid) {
        self.writer.forget(Scope::Event(event)).await;
    }

    /// Tells the worker that a job was asked for.
    pub fn rederivation_requested(&self) {
        self.rederiver.wake();
    }
}

/// Why a check-in of one sighting for one event (manual, door code, phone
/// report) did not count, in words for the person who made it; `Ok` when it
/// counted (new, or a repeat of one that did).
pub fn single_check_in(outcome: &BatchOutcome) -> Result<(), String> {
    if let Some(r) = outcome.rejected.first() {
        return Err(r.reason.clone());
    }
    if outcome.outside_event > 0 {
        return Err("that time is outside the event's window (with grace)".into());
    }
    if outcome.unregistered > 0 {
        return Err("not registered for this event, which requires registration".into());
    }
    if outcome.below_rssi > 0 {
        return Err("the signal was weaker than the event's minRssi".into());
    }
    if outcome.identity_not_accepted > 0 {
        return Err("this event does not count check-ins of this kind".into());
    }
    Ok(())
}

/// What ingest needs of an event, as this source sees it.
fn rules(source: &Source, e: &Event) -> Result<EventRules, StoreError> {
    event_rules(e, source.covers(e))
}

/// What counting needs of an event; `in_scope`: whether the sightings'
/// scanner covers it.
pub(crate) fn event_rules(e: &Event, in_scope: bool) -> Result<EventRules, StoreError> {
    let window = EventWindow::new(e.starts_at, e.ends_at)
        .map_err(|err| StoreError::Corrupt(format!("event {}: {err}", e.id)))?;
    Ok(EventRules { id: e.id, state: e.state, window, policy: e.policy, in_scope })
}

/// The namespace a scanner identity's batch ids are kept under: a digest of
/// the identity, apart from every key id.
fn identity_namespace(identity: Uuid) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest =
        Sha256::new().chain_update(b"rollcall scanner identity\0").chain_update(identity.as_bytes()).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// A digest of what a batch carries (its sightings, in order; not `sentAt`,
/// which a retry may renew), to tell a retry from another batch that reuses
/// the id.
fn digest(sightings: &[SightingIn]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for s in sightings {
        h.update(canonical_identifier(&s.identifier).as_bytes());
        h.update([0]);
        h.update(s.seen_at.timestamp_micros().to_be_bytes());
        match s.rssi {
            Some(r) => h.update([&[1u8][..], &r.to_be_bytes()].concat()),
            None => h.update([0u8]),
        }
        match s.event_id {
            Some(e) => h.update([&[1u8][..], e.as_bytes()].concat()),
            None => h.update([0u8]),
        }
    }
    hex::encode(h.finalize())
}

fn replayed(stored: &StoredBatch, digest: &str) -> Result<BatchOutcome, IngestError> {
    // Batches stored before digests were kept have none: they replay as before.
    if stored.digest.as_deref().is_some_and(|d| d != digest) {
        return Err(IngestError::ReusedBatchId);
    }
    let mut outcome: BatchOutcome =
        serde_json::from_str(&stored.result).map_err(|e| StoreError::Corrupt(format!("stored batch result: {e}")))?;
    outcome.replayed = true;
    outcome.new_check_ins.clear();
    Ok(outcome)
}
