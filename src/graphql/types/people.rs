//! People: roles, users with the visibility rules for their private
//! fields, their devices, and the session a log-in returns.

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::*;
use crate::domain;
use crate::graphql::error::ApiError;
use crate::graphql::{Page, principal, state};
use crate::store;

/// A user's role.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "Role")]
pub enum RoleGql {
    Admin,
    Organizer,
    Attendee,
}

impl From<domain::Role> for RoleGql {
    fn from(r: domain::Role) -> Self {
        match r {
            domain::Role::Admin => RoleGql::Admin,
            domain::Role::Organizer => RoleGql::Organizer,
            domain::Role::Attendee => RoleGql::Attendee,
        }
    }
}

impl From<RoleGql> for domain::Role {
    fn from(r: RoleGql) -> Self {
        match r {
            RoleGql::Admin => domain::Role::Admin,
            RoleGql::Organizer => domain::Role::Organizer,
            RoleGql::Attendee => domain::Role::Attendee,
        }
    }
}

/// A person with an account, and whether it is the caller's own (see
/// [`User::caller`]).
pub struct User(pub store::User, Reach);

/// How the user was reached, which decides who sees their private fields
/// (e-mail, BLE UUID, devices): always the user themself and admins; an
/// organiser only when the user came through an event the organiser runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Through the directory, or as an event's organiser.
    Directory,
    /// Through an event the viewer was allowed to manage: its registrations,
    /// attendance or check-ins.
    ManagedEvent,
    /// The caller's own account, before the request carries its credential
    /// (`signUp`, `logIn`).
    Caller,
}

impl User {
    /// A user reached through the directory: organisers see only the public fields.
    pub fn new(user: store::User) -> Self {
        User(user, Reach::Directory)
    }

    /// A user reached through an event the viewer manages (the resolver that
    /// found them has checked that).
    pub fn in_managed_event(user: store::User) -> Self {
        User(user, Reach::ManagedEvent)
    }

    /// The caller's own account where the request carries no credential yet:
    /// the user of `signUp` and `logIn`, who sees their own private fields.
    pub fn caller(user: store::User) -> Self {
        User(user, Reach::Caller)
    }
}

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn role(&self) -> RoleGql {
        self.0.role.into()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// Visible to the user, admins, and organisers of an event the user is
    /// registered for or was seen at; `null` to others.
    async fn email(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        Ok(self.sees_private(ctx)?.then_some(self.0.email.as_str()))
    }

    /// The identifier the user's phone advertises: a tracking identifier, so
    /// visible only as `email` is; `null` to others.
    async fn ble_uuid(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        Ok(self.sees_private(ctx)?.then_some(self.0.ble_uuid.as_str()))
    }

    /// What the user's phone needs to advertise rotating identifiers
    /// (docs/identity.md). The user's own only: `null` to anyone else.
    async fn beacon(&self, ctx: &Context<'_>) -> Result<Option<crate::graphql::beacon::Beacon>> {
        crate::graphql::beacon::of_user(ctx, self.0.id, self.1 == Reach::Caller).await
    }

    /// Extra identifiers the user's devices are known by.
    #[graphql(complexity = "crate::graphql::list_cost(5, child_complexity)")]
    async fn devices(&self, ctx: &Context<'_>) -> Result<Vec<Device>> {
        if !self.sees_private(ctx)? {
            return Err(ApiError::forbidden().into());
        }
        let devices = state(ctx)?.store.users().devices(self.0.id).await?;
        Ok(devices.into_iter().map(Device).collect())
    }

    /// The user's attendance at every event; for the user and admins.
    #[graphql(complexity = "crate::graphql::list_cost(50, child_complexity)")]
    async fn attendance(&self, ctx: &Context<'_>) -> Result<Vec<crate::graphql::attendance::AttendanceRecord>> {
        crate::graphql::attendance::of_user(ctx, self.0.id).await
    }

    /// The user's registrations; for the user and admins.
    #[graphql(complexity = "crate::graphql::page_cost(first, child_complexity)")]
    async fn registrations(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Registration>> {
        let p = principal(ctx)?;
        let allowed = p.user().is_some_and(|u| u.id == self.0.id || u.role == domain::Role::Admin);
        if !allowed {
            return Err(ApiError::forbidden().into());
        }
        let page = Page::parse(first, after)?;
        let rows = state(ctx)?.store.registrations().for_user(self.0.id, page.after, page.fetch()).await?;
        Ok(page.connection(rows, |r| r.event_id, Registration))
    }
}

impl User {
    fn sees_private(&self, ctx: &Context<'_>) -> Result<bool> {
        let viewer = principal(ctx)?.user();
        Ok(self.1 == Reach::Caller
            || viewer.is_some_and(|u| {
                u.id == self.0.id
                    || u.role == domain::Role::Admin
                    || (self.1 == Reach::ManagedEvent && u.role == domain::Role::Organizer)
            }))
    }
}

/// An extra identifier a user's device is known by.
pub struct Device(pub store::Device);

#[Object]
impl Device {
    /// Matched exactly against what scanners report.
    async fn identifier(&self) -> &str {
        &self.0.identifier
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// A session token for a person.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user: User,
}
