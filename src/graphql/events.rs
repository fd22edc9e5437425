//! Events: creation, editing, the life cycle and listing.

use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, Object, Result};
use chrono::{DateTime, Utc};

use super::accounts::require_role;
use super::error::ApiError;
use super::types::{AttendancePolicyInput, Event, EventStateGql};
use super::{Page, parse_id, principal, state};
use crate::auth::Principal;
use crate::domain::{AttendancePolicy, EventState, EventWindow, Role, Text};
use crate::store::{self, EventChanges, EventFilter, NewEvent};

/// Which events to list; all conditions must hold.
#[derive(InputObject, Default)]
pub struct EventFilterInput {
    pub state: Option<EventStateGql>,
    /// Only events run by this organiser.
    pub organizer_id: Option<ID>,
    /// Only events that end at or after this instant.
    pub ends_after: Option<DateTime<Utc>>,
    /// Only events that start at or before this instant.
    pub starts_before: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct EventsQuery;

#[Object]
impl EventsQuery {
    /// Events in creation order. Any signed-in user.
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilterInput>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Event>> {
        super::require_user(ctx)?;
        let f = filter.unwrap_or_default();
        let filter = EventFilter {
            state: f.state.map(EventState::from),
            organizer: f.organizer_id.as_ref().map(|id| parse_id("user", id)).transpose()?,
            ends_after: f.ends_after,
            starts_before: f.starts_before,
        };
        let page = Page::parse(first, after)?;
        let rows = state(ctx)?.store.events().list(&filter, page.after, page.fetch()).await?;
        Ok(page.connection(rows, |e| e.id, Event))
    }

    /// One event. Any signed-in user, or a scanner whose key covers it.
    async fn event(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Event>> {
        let id = parse_id("event", &id)?;
        let event = state(ctx)?.store.events().get(id).await?;
        match principal(ctx)? {
            Principal::Anonymous => Err(ApiError::unauthenticated().into()),
            Principal::Scanner { scope, .. } => Ok(event.filter(|e| scope.covers(e)).map(Event)),
            Principal::User(_) => Ok(event.map(Event)),
        }
    }

    /// Events taking attendance now. For a scanner, only those its key covers.
    #[graphql(complexity = "super::list_cost(50, child_complexity)")]
    async fn active_events(&self, ctx: &Context<'_>) -> Result<Vec<Event>> {
        let active = state(ctx)?.store.events().active().await?;
        match principal(ctx)? {
            Principal::Anonymous => Err(ApiError::unauthenticated().into()),
            Principal::Scanner { scope, .. } => Ok(active.into_iter().filter(|e| scope.covers(e)).map(Event).collect()),
            Principal::User(_) => Ok(active.into_iter().map(Event).collect()),
        }
    }
}

/// A new event.
#[derive(InputObject)]
pub struct CreateEventInput {
    pub name: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Defaults: minRssi -90, departureGap 300 s, grace 900 s, requireRegistration true.
    pub policy: Option<AttendancePolicyInput>,
    /// ADMIN only: make someone else the organiser.
    pub organizer_id: Option<ID>,
}

/// Changes to an event; omitted fields stay as they are. An empty string
/// clears `description` or `location`.
#[derive(InputObject, Default)]
pub struct UpdateEventInput {
    pub name: Option<String>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub policy: Option<AttendancePolicyInput>,
}

#[derive(Default)]
pub struct EventsMutation;

#[Object]
impl EventsMutation {
    /// Creates an event in the SCHEDULED state. ORGANIZER or ADMIN.
    async fn create_event(&self, ctx: &Context<'_>, input: CreateEventInput) -> Result<Event> {
        let me = require_role(ctx, &[Role::Admin, Role::Organizer])?;
        let organizer = match &input.organizer_id {
            Some(id) if me.role == Role::Admin => {
                let id = parse_id("user", id)?;
                let st = state(ctx)?;
                let user = st.store.users().get(id).await?.ok_or_else(|| ApiError::not_found("organizer"))?;
                if !user.role.can_organize() {
                    return Err(ApiError::validation("the organizer must have the ORGANIZER or ADMIN role").into());
                }
                id
            }
            Some(_) => {
                return Err(ApiError::Forbidden("only an admin can create events for someone else".into()).into());
            }
            None => me.id,
        };
        let new = NewEvent {
            name: Text::parse("name", &input.name, 200)?.into_inner(),
            description: optional_text("description", input.description.as_deref(), 5000)?,
            location: optional_text("location", input.location.as_deref(), 500)?,
            window: EventWindow::new(input.starts_at, input.ends_at)?,
            organizer,
            policy: input.policy.unwrap_or_default().apply(AttendancePolicy::default())?,
        };
        Ok(Event(state(ctx)?.store.events().create(new, Utc::now()).await?))
    }

    /// Edits an event. Its organiser or an ADMIN.
    async fn update_event(&self, ctx: &Context<'_>, id: ID, input: UpdateEventInput) -> Result<Event> {
        let event = managed_event(ctx, &id).await?;
        let changes = EventChanges {
            name: match &input.name {
                Some(n) => Text::parse("name", n, 200)?.into_inner(),
                None => event.name.clone(),
            },
            description: match &input.description {
                Some(d) => optional_text("description", Some(d), 5000)?,
                None => event.description.clone(),
            },
            location: match &input.location {
                Some(l) => optional_text("location", Some(l), 500)?,
                None => event.location.clone(),
            },
            window: EventWindow::new(
                input.starts_at.unwrap_or(event.starts_at),
                input.ends_at.unwrap_or(event.ends_at),
            )?,
            policy: match &input.policy {
                Some(p) => p.apply(event.policy)?,
                None => event.policy,
            },
        };
        let rules_changed = changes.policy != event.policy
            || changes.window.starts_at() != event.starts_at
            || changes.window.ends_at() != event.ends_at;
        let st = state(ctx)?;
        // Attendance follows the rules: a change asks, in the same
        // transaction, for it to be derived again from the raw log, in the
        // background (`event { rederivation }` shows how far it has got).
        let updated = st.store.events().update(&event, changes, rules_changed, Utc::now()).await?;
        if rules_changed {
            st.ingest.rederivation_requested();
        }
        Ok(Event(updated))
    }

    /// Deletes an event and its registrations. Its organiser or an ADMIN.
    async fn delete_event(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let event = managed_event(ctx, &id).await?;
        let st = state(ctx)?;
        st.store.events().delete(event.id).await?;
        st.ingest.forget_event(event.id).await;
        Ok(true)
    }

    /// Starts taking attendance. Its organiser or an ADMIN.
    async fn activate_event(&self, ctx: &Context<'_>, id: ID) -> Result<Event> {
        transition(ctx, &id, EventState::activate).await
    }

    /// Stops taking attendance for good. Its organiser or an ADMIN.
    async fn end_event(&self, ctx: &Context<'_>, id: ID) -> Result<Event> {
        transition(ctx, &id, EventState::end).await
    }

    /// Calls an event off. Its organiser or an ADMIN.
    async fn cancel_event(&self, ctx: &Context<'_>, id: ID) -> Result<Event> {
        transition(ctx, &id, EventState::cancel).await
    }
}

/// The event `id`, if the caller manages it: `NOT_FOUND` or `FORBIDDEN` otherwise.
pub(crate) async fn managed_event(ctx: &Context<'_>, id: &ID) -> Result<store::Event> {
    let me = require_role(ctx, &[Role::Admin, Role::Organizer])?;
    let id = parse_id("event", id)?;
    let event = state(ctx)?.store.events().get(id).await?.ok_or_else(|| ApiError::not_found("event"))?;
    if me.role != Role::Admin && event.organizer_id != me.id {
        return Err(ApiError::Forbidden("only the event's organizer or an admin can do this".into()).into());
    }
    Ok(event)
}

async fn transition(
    ctx: &Context<'_>,
    id: &ID,
    step: fn(EventState) -> Result<EventState, crate::domain::DomainError>,
) -> Result<Event> {
    let event = managed_event(ctx, id).await?;
    let next = step(event.state)?;
    if next == event.state {
        return Ok(Event(event));
    }
    let updated = state(ctx)?
        .store
        .events()
        .set_state(event.id, next, Utc::now())
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    Ok(Event(updated))
}

/// `None` for absent or blank text, else the checked text.
fn optional_text(field: &str, raw: Option<&str>, max: usize) -> Result<Option<String>, crate::domain::DomainError> {
    match raw {
        Some(s) if !s.trim().is_empty() => Text::parse(field, s, max).map(|t| Some(t.into_inner())),
        _ => Ok(None),
    }
}
