//! Subscriptions: an event's check-ins as they happen, and its counters.

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, ID, Object, Result, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use uuid::Uuid;

use super::door::CheckInSourceGql;
use super::error::ApiError;
use super::events::managed_event;
use super::types::User;
use super::{parse_id, principal, require_user, state};
use crate::auth::Principal;
use crate::live::{self, CursorProbe};

#[derive(Default)]
pub struct LiveSubscription;

#[Subscription(name = "Subscription")]
impl LiveSubscription {
    /// The event's check-ins as they happen. With `after` (an earlier item's
    /// cursor), first replays the check-ins after it, in order, then goes
    /// live, with nothing missed or repeated in between; `after: ""` replays
    /// them all from the start. Without `after`, starts live.
    ///
    /// A subscriber that falls too far behind receives an error with code
    /// `LAGGED` and `extensions.lastCursor`, and the subscription completes:
    /// subscribe again with that cursor to carry on.
    ///
    /// For the event's organiser, an admin, or a scanner key covering it.
    async fn check_ins(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<CheckIn>> + use<>> {
        let event = watched_event(ctx, &event_id).await?;
        if let Some(after) = &after {
            check_cursor(after)?;
        }
        let (start, stream) = state(ctx)?.live.check_ins(event, after).await?;
        // Rendered once for a group of sockets: tell the group where each
        // item stands, so a member that falls behind knows where to resume.
        let probe = ctx.data_opt::<Arc<CursorProbe>>().cloned();
        if let Some(probe) = &probe {
            probe.started_after(event, &start);
        }
        Ok(stream.map(move |item| match item {
            Ok(c) => {
                if let Some(probe) = &probe {
                    probe.rendering(&c.cursor);
                }
                Ok(CheckIn(c))
            }
            Err(why) => Err(interrupted_error(why)),
        }))
    }

    /// The caller's own check-ins as they happen, at every event (or only
    /// at `eventId`): what an attendee's app shows as "you're checked in".
    /// Live only: what happened before is in `me { attendance }`.
    ///
    /// Like `checkIns`, a subscriber that falls too far behind receives an
    /// error with code `LAGGED`, and the subscription completes.
    ///
    /// For any signed-in person.
    async fn my_check_ins(
        &self,
        ctx: &Context<'_>,
        event_id: Option<ID>,
    ) -> Result<impl Stream<Item = Result<CheckIn>> + use<>> {
        let user = require_user(ctx)?.id;
        let event = event_id.map(|id| parse_id("event", &id)).transpose()?;
        let stream = state(ctx)?.live.user_check_ins(user, event);
        Ok(stream.map(|item| match item {
            Ok(c) => Ok(CheckIn(c)),
            Err(why) => Err(interrupted_error(why)),
        }))
    }

    /// The event's counters: the current ones at once, then on each change,
    /// at most four times a second.
    async fn event_stats(&self, ctx: &Context<'_>, event_id: ID) -> Result<impl Stream<Item = EventStats> + use<>> {
        let event = watched_event(ctx, &event_id).await?;
        Ok(state(ctx)?.live.stats(event).await?.map(EventStats::from))
    }
}

/// The event `id`, if the caller may watch it live: its organiser, an admin,
/// or a scanner whose key covers it.
async fn watched_event(ctx: &Context<'_>, id: &ID) -> Result<Uuid> {
    if let Principal::Scanner { scope, .. } = principal(ctx)? {
        let event_id = parse_id("event", id)?;
        let event = state(ctx)?.store.events().get(event_id).await?.ok_or_else(|| ApiError::not_found("event"))?;
        if !scope.covers(&event) {
            return Err(ApiError::Forbidden("this API key does not cover that event".into()).into());
        }
        return Ok(event.id);
    }
    Ok(managed_event(ctx, id).await?.id)
}

/// A cursor is one an item carried: digits (or, for check-ins from before
/// cursors, `0-<time>-<user>`); `""` means from the start.
fn check_cursor(raw: &str) -> Result<(), ApiError> {
    let digits = !raw.is_empty() && raw.len() <= 20 && raw.bytes().all(|b| b.is_ascii_digit());
    let legacy =
        raw.starts_with("0-") && raw.len() <= 64 && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if raw.is_empty() || digits || legacy {
        Ok(())
    } else {
        Err(ApiError::validation(format!("`{raw}` is not a check-in cursor")))
    }
}

pub(crate) fn interrupted_error(why: live::Interrupted) -> async_graphql::Error {
    let (code, message, last) = match why {
        live::Interrupted::Lagged { last_cursor } => (
            "LAGGED",
            "this subscription fell too far behind and was stopped; subscribe again with `after: lastCursor`",
            last_cursor,
        ),
        live::Interrupted::Unavailable { last_cursor } => (
            "UNAVAILABLE",
            "the check-ins could not be read just now; subscribe again with `after: lastCursor`",
            last_cursor,
        ),
    };
    async_graphql::Error::new(message).extend_with(|_, e| {
        e.set("code", code);
        e.set("lastCursor", last.as_str());
    })
}

/// A check-in, as it happened.
pub struct CheckIn(Arc<live::CheckIn>);

#[Object]
impl CheckIn {
    /// Resume after this item with `checkIns(after: cursor)`.
    async fn cursor(&self) -> &str {
        &self.0.cursor
    }

    async fn event_id(&self) -> ID {
        ID(self.0.event.to_string())
    }

    async fn user(&self) -> User {
        User::in_managed_event(self.0.user.clone())
    }

    /// The time of the first counted sighting.
    async fn checked_in_at(&self) -> DateTime<Utc> {
        self.0.checked_in_at
    }

    /// The name of the scanner's API key; `null` for a check-in from any
    /// other source.
    async fn scanner(&self) -> Option<&str> {
        self.0.scanner.as_deref()
    }

    /// Where the check-in came from, as its attendance row said when the
    /// check-in was published.
    async fn source(&self) -> CheckInSourceGql {
        self.0.source.into()
    }
}

/// An event's counters at one moment.
#[derive(SimpleObject)]
pub struct EventStats {
    pub event_id: ID,
    /// Standing registrations.
    pub registered: i64,
    /// People with a check-in.
    pub checked_in: i64,
    /// People seen less than the event's departure gap ago.
    pub present_now: i64,
    /// When these were counted.
    pub at: DateTime<Utc>,
}

impl From<live::EventStats> for EventStats {
    fn from(s: live::EventStats) -> Self {
        EventStats {
            event_id: ID(s.event.to_string()),
            registered: s.registered as i64,
            checked_in: s.checked_in as i64,
            present_now: s.present_now as i64,
            at: s.at,
        }
    }
}
