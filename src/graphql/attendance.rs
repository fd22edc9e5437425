//! Sightings in, attendance out: `submitSightings`, manual check-ins,
//! attendance lists and the event report.

use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::door::CheckInSourceGql;
use super::error::ApiError;
use super::events::managed_event;
use super::types::{Event, User};
use super::{Page, ScannerIdentity, parse_id, principal, require_user, state};
use crate::app::{IngestError, Scope, Source, reports, single_check_in};
use crate::auth::Principal;
use crate::domain::ingest::{BatchOutcome, SightingIn};
use crate::domain::{AttendancePolicy, CheckInSource, Role};
use crate::store::AttendanceRecord as Record;

/// One sighting as a scanner heard it.
#[derive(InputObject)]
pub struct SightingInput {
    /// The identifier heard: a user's BLE UUID, or an extra device identifier.
    pub ble_uuid: String,
    pub seen_at: DateTime<Utc>,
    /// Signal strength in dBm (-127 to 20).
    pub rssi: Option<i32>,
    /// The event it is for; without it, every event in the key's scope
    /// whose window with grace covers `seenAt` and that is active or has
    /// ended (a late upload still counts).
    pub event_id: Option<ID>,
}

/// A batch of sightings. `batchId` is fixed when the scanner seals the batch,
/// so a retry sends the same id and is applied once.
#[derive(InputObject)]
pub struct SightingBatchInput {
    pub batch_id: Uuid,
    /// When the scanner sent it, by its clock (to spot clock skew).
    pub sent_at: Option<DateTime<Utc>>,
    /// At most 5,000.
    pub sightings: Vec<SightingInput>,
    /// Sent again because `storeEpoch` changed since the server acknowledged
    /// it (the store was not stopped cleanly and may have lost it). If the
    /// store has it, the answer is `replayed: true`; if not, it is stored
    /// again and the events it counts for are derived again from the raw log.
    #[graphql(default)]
    pub resent: bool,
}

/// A sighting refused by validation; the rest of the batch still applied.
#[derive(SimpleObject)]
pub struct RejectedSighting {
    /// Its position in `sightings`, from 0.
    pub index: i32,
    pub reason: String,
}

/// What a batch did. Counts other than `accepted` and `unknownDevices` are
/// per (sighting, event) pair: a sighting can be offered to several events.
#[derive(SimpleObject)]
pub struct SightingBatchResult {
    /// Sightings that passed validation.
    pub accepted: i64,
    /// New check-ins: first counted sighting of a user at an event.
    pub check_ins: i64,
    /// Already counted before (same scanner, identifier and time).
    pub duplicates: i64,
    /// Identifiers that belong to nobody; nothing about them is stored.
    pub unknown_devices: i64,
    /// Users not registered for an event that requires registration.
    pub unregistered: i64,
    /// Outside the event's window (with grace), or no event in scope then.
    pub outside_event: i64,
    /// Weaker than the event's minRssi.
    pub below_rssi: i64,
    /// Rotating identifiers heard outside their time slot (copied and played
    /// later; see docs/identity.md): not counted.
    pub replayed_identifiers: i64,
    /// Of a kind of identifier the event does not count (its `identity` policy).
    pub identity_not_accepted: i64,
    pub rejected: Vec<RejectedSighting>,
    /// True when this batch was applied before and this is its stored result.
    pub replayed: bool,
    /// The store's epoch: it changes when the store starts after an unclean
    /// stop (a crash, a kill, a power cut) and may have lost batches it had
    /// acknowledged. A scanner keeps acknowledged batches for a while, asks
    /// `storedBatches` which of those acknowledged under another epoch the
    /// store no longer has, and sends those again with `resent: true`. Null
    /// on a SurrealDB server or TiKV, whose restarts Rollcall cannot see.
    pub store_epoch: Option<String>,
}

impl From<BatchOutcome> for SightingBatchResult {
    fn from(o: BatchOutcome) -> Self {
        Self {
            accepted: o.accepted as i64,
            check_ins: o.check_ins as i64,
            duplicates: o.duplicates as i64,
            unknown_devices: o.unknown_devices as i64,
            unregistered: o.unregistered as i64,
            outside_event: o.outside_event as i64,
            below_rssi: o.below_rssi as i64,
            replayed_identifiers: o.replayed_identifiers as i64,
            identity_not_accepted: o.identity_not_accepted as i64,
            rejected: o
                .rejected
                .into_iter()
                .map(|r| RejectedSighting { index: r.index as i32, reason: r.reason })
                .collect(),
            replayed: o.replayed,
            store_epoch: None,
        }
    }
}

/// The scanner (an API key) making the request; a person is refused with
/// `refusal`.
fn scanner_source(ctx: &Context<'_>, refusal: &str) -> Result<Source> {
    match principal(ctx)? {
        Principal::Scanner { key, scope } => Ok(Source::Scanner {
            key_id: key.id,
            owner: key.created_by,
            identity: ctx.data_opt::<ScannerIdentity>().and_then(|i| i.0),
            scope: scope.clone(),
        }),
        Principal::User(_) => Err(ApiError::Forbidden(refusal.into()).into()),
        Principal::Anonymous => Err(ApiError::unauthenticated().into()),
    }
}

/// What the store has of a scanner's batches.
#[derive(SimpleObject)]
pub struct StoredBatches {
    /// The store's epoch (see `SightingBatchResult.storeEpoch`).
    pub store_epoch: Option<String>,
    /// Of the batch ids asked about, those the store does not have.
    pub missing: Vec<Uuid>,
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::TooLarge(_) | IngestError::Invalid(_) => ApiError::Validation(e.to_string()),
            IngestError::Contended => ApiError::RateLimited(e.to_string()),
            IngestError::Unavailable => ApiError::Unavailable(e.to_string()),
            IngestError::ReusedBatchId => ApiError::Conflict(e.to_string()),
            IngestError::ForeignIdentity(_) => ApiError::Forbidden(e.to_string()),
            IngestError::Store(e) => e.into(),
        }
    }
}

impl From<IngestError> for async_graphql::Error {
    fn from(e: IngestError) -> Self {
        ApiError::from(e).into()
    }
}

/// A period of continuous presence.
#[derive(SimpleObject)]
pub struct Stay {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// One user's attendance at one event.
pub struct AttendanceRecord {
    pub record: Record,
    /// The event's departure gap when the caller already has the event, so a
    /// list does not fetch it again for every row's `presentNow`.
    pub departure_gap: Option<Duration>,
}

#[Object]
impl AttendanceRecord {
    async fn user(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        Ok(super::load_user(ctx, self.record.user_id).await?.map(User::in_managed_event))
    }

    async fn event(&self, ctx: &Context<'_>) -> Result<Option<Event>> {
        Ok(state(ctx)?.store.events().get(self.record.event_id).await?.map(Event))
    }

    /// Whether the check-in was recorded by an organiser (`recordAttendance`)
    /// rather than heard by a scanner; `undoManualCheckIn` can take it back.
    /// (`source: MANUAL`.)
    async fn manual(&self) -> bool {
        CheckInSource::of(self.record.attendance.first_scanner) == CheckInSource::Manual
    }

    /// Where the check-in (the earliest counted sighting) came from.
    async fn source(&self) -> CheckInSourceGql {
        CheckInSource::of(self.record.attendance.first_scanner).into()
    }

    /// The check-in: the earliest counted sighting.
    async fn checked_in_at(&self) -> DateTime<Utc> {
        self.record.attendance.first_seen
    }

    async fn first_seen(&self) -> DateTime<Utc> {
        self.record.attendance.first_seen
    }

    async fn last_seen(&self) -> DateTime<Utc> {
        self.record.attendance.last_seen
    }

    async fn stays(&self) -> Vec<Stay> {
        self.record.attendance.stays.iter().map(|s| Stay { from: s.from, to: s.to }).collect()
    }

    /// Total time present, in seconds: the sum of the stays.
    async fn dwell_seconds(&self) -> i64 {
        self.record.attendance.dwell().num_seconds()
    }

    /// How many distinct sightings counted.
    async fn sightings(&self) -> i64 {
        self.record.attendance.sightings as i64
    }

    async fn best_rssi(&self) -> Option<i32> {
        self.record.attendance.best_rssi
    }

    /// Seen less than the event's departureGap ago.
    async fn present_now(&self, ctx: &Context<'_>) -> Result<bool> {
        let gap = match self.departure_gap {
            Some(gap) => gap,
            None => {
                let event = state(ctx)?.store.events().get(self.record.event_id).await?;
                event.map_or(AttendancePolicy::default().departure_gap, |e| e.policy.departure_gap)
            }
        };
        Ok(self.record.attendance.present_at(Utc::now(), gap))
    }
}

/// Arrivals (check-ins) in one 5-minute bucket.
#[derive(SimpleObject)]
pub struct ArrivalBucket {
    pub start: DateTime<Utc>,
    pub count: i64,
}

/// How an event went.
#[derive(SimpleObject)]
pub struct EventReport {
    /// Standing registrations (walk-ins included).
    pub registered: i64,
    /// Users with a check-in.
    pub checked_in: i64,
    /// Registered users with no check-in.
    pub no_shows: i64,
    /// Registered by walking in to an event open to walk-ins.
    pub walk_ins: i64,
    /// Registered users who checked in, over registered users (0 when none).
    pub attendance_rate: f64,
    pub median_dwell_seconds: i64,
    pub mean_dwell_seconds: i64,
    /// Check-ins per 5-minute bucket, in time order, empty buckets omitted.
    pub arrivals: Vec<ArrivalBucket>,
}

#[derive(Default)]
pub struct AttendanceQuery;

#[Object]
impl AttendanceQuery {
    /// Which of these batches (their `batchId`s, as this scanner sent them)
    /// the store does not have, and its epoch. API keys only; at most 5,000
    /// ids; none asks only for the epoch. After `storeEpoch` changed, a
    /// scanner asks this about the batches it kept, and sends again, with
    /// `resent: true`, only the missing ones.
    async fn stored_batches(&self, ctx: &Context<'_>, batch_ids: Vec<Uuid>) -> Result<StoredBatches> {
        let source = scanner_source(ctx, "a scanner asks about its own batches, with its API key")?;
        let st = state(ctx)?;
        let missing = st.ingest.missing_batches(&source, &batch_ids).await?;
        Ok(StoredBatches { store_epoch: st.store.epoch().map(str::to_owned), missing })
    }

    /// An event's attendance, one row per user with a check-in, by user id.
    /// The event's organiser or an admin.
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
    async fn attendance(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, AttendanceRecord>> {
        let event = managed_event(ctx, &event_id).await?;
        let page = Page::parse(first, after)?;
        let st = state(ctx)?;
        st.ingest.settle(Scope::Event(event.id)).await;
        let rows = st.store.attendance().for_event(event.id, page.after, page.fetch()).await?;
        let gap = Some(event.policy.departure_gap);
        Ok(page.connection(rows, |r| r.user_id, |record| AttendanceRecord { record, departure_gap: gap }))
    }

    /// Registered, checked in, no-shows, walk-ins, dwell and arrivals.
    /// The event's organiser or an admin.
    async fn event_report(&self, ctx: &Context<'_>, event_id: ID) -> Result<EventReport> {
        let event = managed_event(ctx, &event_id).await?;
        Ok(reports::event_report(&state(ctx)?.ingest, event.id).await?.into())
    }
}

impl From<reports::Report> for EventReport {
    fn from(r: reports::Report) -> Self {
        EventReport {
            registered: r.registered,
            checked_in: r.checked_in,
            no_shows: r.no_shows,
            walk_ins: r.walk_ins,
            attendance_rate: r.attendance_rate,
            median_dwell_seconds: r.median_dwell_seconds,
            mean_dwell_seconds: r.mean_dwell_seconds,
            arrivals: r.arrivals.into_iter().map(|(start, count)| ArrivalBucket { start, count }).collect(),
        }
    }
}

#[derive(Default)]
pub struct AttendanceMutation;

#[Object]
impl AttendanceMutation {
    /// Uploads a batch of sightings. API keys only; sightings for events
    /// outside the key's scope are rejected. A retried batch (same batchId)
    /// returns its stored result with `replayed: true` and changes nothing.
    async fn submit_sightings(&self, ctx: &Context<'_>, batch: SightingBatchInput) -> Result<SightingBatchResult> {
        let source = scanner_source(ctx, "sightings are uploaded with a scanner's API key")?;
        let mut sightings = Vec::with_capacity(batch.sightings.len());
        for s in batch.sightings {
            // An event id that is not even a UUID is that sighting's problem, not the batch's.
            let event_id = match s.event_id.as_ref().map(|id| Uuid::parse_str(id.as_str())) {
                Some(Ok(id)) => Some(id),
                Some(Err(_)) => Some(Uuid::nil()),
                None => None,
            };
            sightings.push(SightingIn { identifier: s.ble_uuid, seen_at: s.seen_at, rssi: s.rssi, event_id });
        }
        let st = state(ctx)?;
        let outcome = st.ingest.submit(&source, batch.batch_id, batch.sent_at, sightings, batch.resent).await?;
        record_metrics(&outcome);
        Ok(SightingBatchResult { store_epoch: st.store.epoch().map(str::to_owned), ..outcome.into() })
    }

    /// An organiser's manual check-in (or extra sighting) of a user, at `at`
    /// (default now). Goes through the same rules as scanners' sightings.
    async fn record_attendance(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        user_id: ID,
        at: Option<DateTime<Utc>>,
    ) -> Result<AttendanceRecord> {
        let event = managed_event(ctx, &event_id).await?;
        let me = require_user(ctx)?;
        let user_id = parse_id("user", &user_id)?;
        let st = state(ctx)?;
        let user = st.store.users().get(user_id).await?.ok_or_else(|| ApiError::not_found("user"))?;
        let sighting = SightingIn {
            identifier: user.ble_uuid.clone(),
            seen_at: at.unwrap_or_else(Utc::now),
            rssi: None,
            event_id: Some(event.id),
        };
        let outcome = st.ingest.submit(&Source::manual(me.id), Uuid::now_v7(), None, vec![sighting], false).await?;
        record_metrics(&outcome);
        single_check_in(&outcome)
            .map_err(|reason| ApiError::Validation(format!("the user was not checked in: {reason}")))?;
        st.ingest.settle(Scope::Event(event.id)).await;
        let record =
            st.store.attendance().get(event.id, user_id).await?.ok_or_else(|| ApiError::not_found("attendance"))?;
        Ok(AttendanceRecord { record, departure_gap: Some(event.policy.departure_gap) })
    }

    /// Takes back the manual check-ins (`recordAttendance`) of a user at an
    /// event: they leave the raw log and the event's attendance is derived
    /// again, so what scanners heard still counts. `NOT_FOUND` if there were
    /// none. The event's organiser or an admin.
    async fn undo_manual_check_in(&self, ctx: &Context<'_>, event_id: ID, user_id: ID) -> Result<bool> {
        let event = managed_event(ctx, &event_id).await?;
        let user = parse_id("user", &user_id)?;
        if !state(ctx)?.ingest.undo_manual(&event, user).await? {
            return Err(ApiError::NotFound("no manual check-in of this user at this event".into()).into());
        }
        Ok(true)
    }

    /// Derives an event's attendance again from the raw sighting log (done
    /// automatically, in the background, when its window or policy changes)
    /// and waits up to a minute for it. Returns the number of users with
    /// attendance, or null if it is still running (follow it on
    /// `event { rederivation }`). The event's organiser or an admin.
    async fn recompute_attendance(&self, ctx: &Context<'_>, event_id: ID) -> Result<Option<i64>> {
        let event = managed_event(ctx, &event_id).await?;
        let wait = std::time::Duration::from_secs(60);
        Ok(state(ctx)?.ingest.recompute(&event, wait).await?.map(|n| n as i64))
    }
}

fn record_metrics(o: &BatchOutcome) {
    if o.replayed {
        metrics::counter!("rollcall_ingest_batches_total", "replayed" => "true").increment(1);
        return;
    }
    metrics::counter!("rollcall_ingest_batches_total", "replayed" => "false").increment(1);
    metrics::counter!("rollcall_ingest_sightings_total").increment(o.accepted);
    metrics::counter!("rollcall_ingest_check_ins_total").increment(o.check_ins);
}

/// `User.attendance`: for the user and admins.
pub async fn of_user(ctx: &Context<'_>, user: Uuid) -> Result<Vec<AttendanceRecord>> {
    let me = require_user(ctx)?;
    if me.id != user && me.role != Role::Admin {
        return Err(ApiError::forbidden().into());
    }
    let st = state(ctx)?;
    st.ingest.settle(Scope::User(user)).await;
    let rows = st.store.attendance().for_user(user).await?;
    Ok(rows.into_iter().map(|record| AttendanceRecord { record, departure_gap: None }).collect())
}
