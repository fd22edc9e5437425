//! What scanners ask for and what organisers see of them: the identifiers
//! a scanner may upload for an event (`registeredDevices`), and the fleet
//! (`scanners`).

use async_graphql::{Context, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::accounts::require_role;
use super::error::ApiError;
use super::events::managed_event;
use super::key_types::ApiKey;
use super::{parse_id, principal, state};
use crate::auth::{Principal, ScannerScope};
use crate::domain::Role;
use crate::store;

/// Most identifiers in one page of `registeredDevices`.
const MAX_DEVICES_PAGE: usize = 5000;
/// A scanner not heard from for this long is `stale`, unless asked otherwise.
const DEFAULT_STALE_SECS: i32 = 300;

/// One page of the identifiers that may be counted for an event.
#[derive(SimpleObject)]
pub struct RegisteredDevices {
    /// Changes whenever the set changes: send it back as `knownVersion` to
    /// ask "changed since?" cheaply.
    pub version: String,
    /// False when `knownVersion` is this version: then `identifiers` is empty.
    pub changed: bool,
    /// Canonical identifiers (BLE UUIDs in lower case, device identifiers as
    /// stored), in order.
    pub identifiers: Vec<String>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// How many identifiers there are in all.
    pub total: i32,
}

/// A scanner, as the fleet view shows it: its key and how it is doing.
pub struct Scanner {
    key: store::ApiKey,
    stale_after: chrono::Duration,
    now: DateTime<Utc>,
    /// Another fresh scanner that shares an event with it hears adverts.
    neighbour_hears: bool,
}

/// Whether two keys may report for a common event (the same rule as
/// `ScannerScope::covers`, as far as the keys alone tell).
fn overlap(a: &store::ApiKey, b: &store::ApiKey) -> bool {
    let own = |k: &store::ApiKey| !k.all_events && k.events.is_empty();
    a.all_events
        || b.all_events
        || a.events.iter().any(|e| b.events.contains(e))
        || (own(a) && own(b) && a.created_by == b.created_by)
}

fn adverts(key: &store::ApiKey) -> Option<i64> {
    key.heartbeat.as_ref().and_then(|h| h.health.as_ref()).and_then(|h| h.adverts_per_minute)
}

impl Scanner {
    fn heard_at(&self) -> Option<DateTime<Utc>> {
        heard_at(&self.key)
    }

    fn is_stale(&self) -> bool {
        self.heard_at().is_none_or(|t| self.now - t > self.stale_after)
    }
}

fn heard_at(k: &store::ApiKey) -> Option<DateTime<Utc>> {
    [k.heartbeat.as_ref().map(|h| h.at), k.last_batch_at, k.last_used_at].into_iter().flatten().max()
}

#[Object]
impl Scanner {
    async fn api_key(&self) -> ApiKey {
        ApiKey(self.key.clone())
    }

    async fn name(&self) -> &str {
        &self.key.name
    }

    /// The last time the server heard from it: a heartbeat, a batch or any request.
    async fn last_heard_at(&self) -> Option<DateTime<Utc>> {
        self.heard_at()
    }

    /// When its last sighting batch was applied, and its id.
    async fn last_batch_at(&self) -> Option<DateTime<Utc>> {
        self.key.last_batch_at
    }

    async fn last_batch_id(&self) -> Option<&str> {
        self.key.last_batch_id.as_deref()
    }

    /// Sightings waiting in its outbox, at its last heartbeat.
    async fn outbox_depth(&self) -> Option<i64> {
        self.key.heartbeat.as_ref().map(|h| h.outbox_depth)
    }

    /// Its clock minus the server's at its last heartbeat, in milliseconds.
    async fn clock_skew_ms(&self) -> Option<i64> {
        self.key.heartbeat.as_ref().map(|h| h.clock_skew_ms)
    }

    /// Its software version, from its last heartbeat.
    async fn version(&self) -> Option<&str> {
        self.key.heartbeat.as_ref().map(|h| h.version.as_str())
    }

    /// Not heard from for longer than `staleAfterSeconds` (or never).
    async fn stale(&self) -> bool {
        self.is_stale()
    }

    /// Connected but deaf: its last heartbeat heard no advert in a minute
    /// while another fresh scanner at a common event did. A dead radio, not
    /// an empty room.
    async fn silent(&self) -> bool {
        !self.is_stale() && adverts(&self.key) == Some(0) && self.neighbour_hears
    }

    /// BLE adverts it heard in the minute before its last heartbeat.
    async fn adverts_per_minute(&self) -> Option<i64> {
        adverts(&self.key)
    }

    /// Whether its key was revoked.
    async fn revoked(&self) -> bool {
        self.key.revoked_at.is_some()
    }
}

#[derive(Default)]
pub struct ScannersQuery;

#[Object]
impl ScannersQuery {
    /// The identifiers a scanner may upload for an event: its standing
    /// registrations' BLE UUIDs and device identifiers (everyone's when it
    /// takes walk-ins). Scanner keys whose scope covers the event, its
    /// organiser and admins. Paged by `after`; `knownVersion` makes an
    /// unchanged set cost one short answer.
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
    async fn registered_devices(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        first: Option<i32>,
        after: Option<String>,
        known_version: Option<String>,
    ) -> Result<RegisteredDevices> {
        let id = parse_id("event", &event_id)?;
        let st = state(ctx)?;
        let event = st.store.events().get(id).await?.ok_or_else(|| ApiError::not_found("event"))?;
        let allowed = match principal(ctx)? {
            Principal::Scanner { scope, .. } => scope.covers(&event),
            Principal::User(u) => u.role == Role::Admin || u.id == event.organizer_id,
            Principal::Anonymous => return Err(ApiError::unauthenticated().into()),
        };
        if !allowed {
            return Err(ApiError::forbidden().into());
        }
        let first = match first {
            None => MAX_DEVICES_PAGE,
            Some(n) if (1..=MAX_DEVICES_PAGE as i32).contains(&n) => n as usize,
            Some(_) => return Err(ApiError::validation(format!("first must be 1 to {MAX_DEVICES_PAGE}")).into()),
        };
        let all = st.store.users().identifiers_for_event(id, !event.policy.require_registration).await?;
        let mut h = Sha256::new();
        for i in &all {
            h.update(i.as_bytes());
            h.update([0]);
        }
        let version = hex::encode(&h.finalize()[..12]);
        let total = i32::try_from(all.len()).unwrap_or(i32::MAX);
        if known_version.as_deref() == Some(version.as_str()) {
            return Ok(RegisteredDevices {
                version,
                changed: false,
                identifiers: Vec::new(),
                next_cursor: None,
                total,
            });
        }
        let start = match &after {
            Some(a) => all.partition_point(|i| i.as_str() <= a.as_str()),
            None => 0,
        };
        let identifiers: Vec<String> = all[start..].iter().take(first).cloned().collect();
        let next_cursor = (start + identifiers.len() < all.len()).then(|| identifiers.last().cloned()).flatten();
        Ok(RegisteredDevices { version, changed: true, identifiers, next_cursor, total })
    }

    /// The scanner fleet: every key (an admin) or your own (an organiser),
    /// with its last heartbeat and batch. `stale` when not heard from for
    /// `staleAfterSeconds` (default 300). With `eventId` (an event you
    /// manage), only the unrevoked keys that may report for it.
    #[graphql(complexity = "super::list_cost(50, child_complexity)")]
    async fn scanners(
        &self,
        ctx: &Context<'_>,
        stale_after_seconds: Option<i32>,
        event_id: Option<ID>,
    ) -> Result<Vec<Scanner>> {
        let me = require_role(ctx, &[Role::Admin, Role::Organizer])?;
        let event = match &event_id {
            Some(id) => Some(managed_event(ctx, id).await?),
            None => None,
        };
        let secs = stale_after_seconds.unwrap_or(DEFAULT_STALE_SECS);
        if !(1..=7 * 24 * 3600).contains(&secs) {
            return Err(ApiError::validation("staleAfterSeconds must be 1 to 604800 (a week)").into());
        }
        let by = (me.role != Role::Admin).then_some(me.id);
        let now = Utc::now();
        let stale_after = chrono::Duration::seconds(i64::from(secs));
        let keys = state(ctx)?.store.api_keys().list(by).await?;
        let fresh = |k: &store::ApiKey| heard_at(k).is_some_and(|t| now - t <= stale_after);
        let hearing: Vec<&store::ApiKey> =
            keys.iter().filter(|k| fresh(k) && k.revoked_at.is_none() && adverts(k).unwrap_or(0) > 0).collect();
        let neighbour = |k: &store::ApiKey| hearing.iter().any(|o| o.id != k.id && overlap(k, o));
        let flags: Vec<bool> = keys.iter().map(neighbour).collect();
        let for_event =
            |k: &store::ApiKey| event.as_ref().is_none_or(|e| k.revoked_at.is_none() && ScannerScope::of(k).covers(e));
        Ok(keys
            .into_iter()
            .zip(flags)
            .filter(|(key, _)| for_event(key))
            .map(|(key, neighbour_hears)| Scanner { key, stale_after, now, neighbour_hears })
            .collect())
    }
}
