//! Registrations: attendees signing up for events, or organisers doing it
//! for them.

use async_graphql::{Context, ID, Object, Result};
use chrono::Utc;

use super::error::ApiError;
use super::types::Registration;
use super::{parse_id, principal, require_user, state};
use crate::store;

#[derive(Default)]
pub struct RegistrationsMutation;

#[Object]
impl RegistrationsMutation {
    /// Registers you (or, for the event's organiser or an admin, `userId`)
    /// for an event. Registering again is harmless; after a cancellation it
    /// reinstates the registration.
    async fn register_for_event(&self, ctx: &Context<'_>, event_id: ID, user_id: Option<ID>) -> Result<Registration> {
        let (event, user) = target(ctx, &event_id, user_id.as_ref()).await?;
        if !event.state.accepts_registrations() {
            return Err(ApiError::Conflict(format!(
                "registration is closed: the event is {}",
                event.state.as_str().to_lowercase()
            ))
            .into());
        }
        let reg = state(ctx)?.store.registrations().register(user, event.id, false, Utc::now()).await?;
        Ok(Registration(reg))
    }

    /// Cancels your registration (or, for the event's organiser or an admin,
    /// that of `userId`).
    async fn cancel_registration(&self, ctx: &Context<'_>, event_id: ID, user_id: Option<ID>) -> Result<Registration> {
        let (event, user) = target(ctx, &event_id, user_id.as_ref()).await?;
        let reg = state(ctx)?
            .store
            .registrations()
            .cancel(user, event.id, Utc::now())
            .await?
            .ok_or_else(|| ApiError::not_found("registration"))?;
        Ok(Registration(reg))
    }
}

/// The event and the user a registration change is for, after checking the
/// caller may make it.
async fn target(ctx: &Context<'_>, event_id: &ID, user_id: Option<&ID>) -> Result<(store::Event, uuid::Uuid)> {
    let me = require_user(ctx)?;
    let event_id = parse_id("event", event_id)?;
    let st = state(ctx)?;
    let event = st.store.events().get(event_id).await?.ok_or_else(|| ApiError::not_found("event"))?;
    let user = match user_id {
        None => me.id,
        Some(id) => {
            let id = parse_id("user", id)?;
            if id != me.id && !principal(ctx)?.manages(&event) {
                return Err(ApiError::Forbidden(
                    "only the event's organizer or an admin can register someone else".into(),
                )
                .into());
            }
            if st.store.users().get(id).await?.is_none() {
                return Err(ApiError::not_found("user").into());
            }
            id
        }
    };
    Ok((event, user))
}
