//! Accounts: sign-up, log-in, the user directory and devices.

use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, Object, Result};
use chrono::Utc;
use uuid::Uuid;

use super::error::ApiError;
use super::types::{AuthPayload, Device, RoleGql, User};
use super::{ClientAddr, Page, parse_id, require_user, state};
use crate::accounts::create_account;
use crate::auth::{Refused, burn_verify_time, hash_password, verify_password};
use crate::domain::{BleUuid, DeviceIdentifier, Email, Password, PersonName, Role};
use crate::store;

#[derive(Default)]
pub struct AccountsQuery;

#[Object]
impl AccountsQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<User> {
        Ok(User::new(require_user(ctx)?.clone()))
    }

    /// Every user, in creation order. ADMIN only.
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, User>> {
        require_role(ctx, &[Role::Admin])?;
        let page = Page::parse(first, after)?;
        let rows = state(ctx)?.store.users().list(page.after, page.fetch()).await?;
        Ok(page.connection(rows, |u| u.id, User::new))
    }

    /// One user by id. Organisers and admins, or the user themself. An
    /// organiser sees the private fields only of people registered for one
    /// of their events.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> Result<Option<User>> {
        let id = parse_id("user", &id)?;
        let me = require_user(ctx)?;
        if me.id != id && !me.role.can_organize() {
            return Err(ApiError::forbidden().into());
        }
        let found = state(ctx)?.store.users().get(id).await?;
        reached(ctx, found).await
    }

    /// Looks a user up by e-mail (to register them, say). Organisers and
    /// admins; private fields as for `user`.
    async fn user_by_email(&self, ctx: &Context<'_>, email: String) -> Result<Option<User>> {
        require_role(ctx, &[Role::Admin, Role::Organizer])?;
        let email = Email::parse(&email)?;
        let found = state(ctx)?.store.users().by_email(email.as_str()).await?;
        reached(ctx, found).await
    }

    /// Looks a user up by the identifier a scanner heard: their BLE UUID or an
    /// extra device identifier. Organisers and admins; private fields as for `user`.
    async fn user_by_ble_uuid(&self, ctx: &Context<'_>, ble_uuid: String) -> Result<Option<User>> {
        require_role(ctx, &[Role::Admin, Role::Organizer])?;
        let key = match BleUuid::parse(&ble_uuid) {
            Ok(u) => u.to_canonical(),
            Err(_) => DeviceIdentifier::parse(&ble_uuid)?.as_str().to_owned(),
        };
        let found = state(ctx)?.store.users().by_identifier(&key).await?;
        reached(ctx, found).await
    }
}

/// A new account made by an admin.
#[derive(InputObject)]
pub struct CreateUserInput {
    pub email: String,
    pub name: String,
    /// Defaults to ATTENDEE.
    pub role: Option<RoleGql>,
    /// Without one the account cannot log in (e.g. a badge-only attendee).
    pub password: Option<String>,
    /// For badges handed out already; a random one is assigned otherwise.
    pub ble_uuid: Option<String>,
}

/// Changes to a user; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateUserInput {
    pub name: Option<String>,
    /// ADMIN only.
    pub role: Option<RoleGql>,
}

#[derive(Default)]
pub struct AccountsMutation;

#[Object]
impl AccountsMutation {
    /// Creates an ATTENDEE account and logs it in. A random BLE UUID is assigned.
    async fn sign_up(&self, ctx: &Context<'_>, email: String, name: String, password: String) -> Result<AuthPayload> {
        let email = Email::parse(&email)?;
        let name = PersonName::parse(&name)?;
        let password = Password::parse(&password)?;
        let st = state(ctx)?;
        let _core = st.logins.permit().await.map_err(refused)?;
        let user = create_account(&st.store, email, name, Role::Attendee, Some(password), None).await?;
        let (token, expires_at) = st.jwt.issue(user.id, user.role, user.token_version)?;
        Ok(AuthPayload { token, expires_at, user: User::caller(user) })
    }

    /// Exchanges e-mail and password for a token.
    /// Too many failures for the account or from the address lock it out for
    /// a while (RATE_LIMITED, with the wait in the message).
    async fn log_in(&self, ctx: &Context<'_>, email: String, password: String) -> Result<AuthPayload> {
        let st = state(ctx)?;
        let address = ctx.data_opt::<ClientAddr>().and_then(|c| c.0);
        // An e-mail that does not parse names no account: it is refused as
        // input before anything is hashed or counted, so that every failure
        // the gate keeps (for up to 15 minutes) is under an e-mail of
        // bounded length.
        let email = Email::parse(&email)?;
        let account = email.as_str();
        st.logins.check(account, address).map_err(refused)?;
        let core = st.logins.permit().await.map_err(refused)?;
        let user = st.store.users().by_email(account).await?;
        let ok = match user.as_ref().and_then(|u| u.password_hash.as_deref()) {
            Some(phc) => verify_password(&password, phc).await,
            None => {
                burn_verify_time(&password).await;
                false
            }
        };
        drop(core);
        let user = match (ok, user) {
            (true, Some(user)) => {
                st.logins.succeeded(account);
                user
            }
            _ => {
                st.logins.failed(account, address);
                return Err(ApiError::Unauthenticated("invalid e-mail or password".into()).into());
            }
        };
        let (token, expires_at) = st.jwt.issue(user.id, user.role, user.token_version)?;
        Ok(AuthPayload { token, expires_at, user: User::caller(user) })
    }

    /// Ends every session of the signed-in user: all their tokens, on every
    /// device, stop working at once (and their live sockets close at the
    /// next recheck).
    async fn log_out(&self, ctx: &Context<'_>) -> Result<bool> {
        let me = require_user(ctx)?;
        state(ctx)?.store.users().end_sessions(me.id, None).await?.ok_or_else(|| ApiError::not_found("user"))?;
        Ok(true)
    }

    /// Changes the signed-in user's password. Every older token stops
    /// working; the answer carries a new one for this device. Failures count
    /// towards the log-in lockout, as `logIn`'s do.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<AuthPayload> {
        let me = require_user(ctx)?;
        let st = state(ctx)?;
        let new_password = Password::parse(&new_password)?;
        let address = ctx.data_opt::<ClientAddr>().and_then(|c| c.0);
        st.logins.check(&me.email, address).map_err(refused)?;
        let core = st.logins.permit().await.map_err(refused)?;
        let ok = match me.password_hash.as_deref() {
            Some(phc) => verify_password(&current_password, phc).await,
            None => false,
        };
        if !ok {
            st.logins.failed(&me.email, address);
            return Err(ApiError::Unauthenticated("the current password is not right".into()).into());
        }
        let hash = hash_password(&new_password).await?;
        drop(core);
        st.logins.succeeded(&me.email);
        let user =
            st.store.users().end_sessions(me.id, Some(hash)).await?.ok_or_else(|| ApiError::not_found("user"))?;
        let (token, expires_at) = st.jwt.issue(user.id, user.role, user.token_version)?;
        Ok(AuthPayload { token, expires_at, user: User::caller(user) })
    }

    /// Creates a user directly, with any role and optionally a given BLE UUID. ADMIN only.
    async fn create_user(&self, ctx: &Context<'_>, input: CreateUserInput) -> Result<User> {
        require_role(ctx, &[Role::Admin])?;
        let email = Email::parse(&input.email)?;
        let name = PersonName::parse(&input.name)?;
        let password = input.password.as_deref().map(Password::parse).transpose()?;
        let ble = input.ble_uuid.as_deref().map(BleUuid::parse).transpose()?;
        let role = input.role.map_or(Role::Attendee, Role::from);
        Ok(User::new(create_account(&state(ctx)?.store, email, name, role, password, ble).await?))
    }

    /// Changes a user's name (the user or an admin) or role (admin only).
    async fn update_user(&self, ctx: &Context<'_>, id: ID, input: UpdateUserInput) -> Result<User> {
        let id = parse_id("user", &id)?;
        let me = require_user(ctx)?;
        let is_admin = me.role == Role::Admin;
        if !(is_admin || (me.id == id && input.role.is_none())) {
            return Err(ApiError::forbidden().into());
        }
        let name = input.name.as_deref().map(PersonName::parse).transpose()?;
        let users = state(ctx)?.store.users();
        if users.get(id).await?.is_none() {
            return Err(ApiError::not_found("user").into());
        }
        let updated = users
            .update(id, name.map(|n| n.as_str().to_owned()), input.role.map(Role::from))
            .await?
            .ok_or_else(|| ApiError::not_found("user"))?;
        Ok(User::new(updated))
    }

    /// Deletes a user with their devices, registrations and attendance, and
    /// erases their sightings from the raw log, for good. ADMIN only.
    async fn delete_user(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let me = require_role(ctx, &[Role::Admin])?;
        let id = parse_id("user", &id)?;
        if me.id == id {
            return Err(ApiError::Conflict("you cannot delete your own account".into()).into());
        }
        if !state(ctx)?.ingest.erase_user(id).await? {
            return Err(ApiError::not_found("user").into());
        }
        Ok(true)
    }

    /// Gives a user a new random BLE UUID; the old one stops matching at once.
    /// Without `userId`, your own. Admins may rotate anyone's.
    async fn rotate_ble_uuid(&self, ctx: &Context<'_>, user_id: Option<ID>) -> Result<User> {
        let target = self_or_admin(ctx, user_id.as_ref())?;
        let updated = state(ctx)?
            .store
            .users()
            .set_ble_uuid(target, BleUuid::random().to_canonical())
            .await?
            .ok_or_else(|| ApiError::not_found("user"))?;
        Ok(User::new(updated))
    }

    /// Adds an extra identifier (a MAC address, an advertised name) that a
    /// user's device is known by. Admins for anyone; organisers for people
    /// registered for one of their events. Not attendees, not even for
    /// themselves: claiming someone else's MAC address or a common advertised
    /// name would count you wherever that device is heard. Without `userId`,
    /// your own.
    async fn add_device_identifier(
        &self,
        ctx: &Context<'_>,
        identifier: String,
        user_id: Option<ID>,
    ) -> Result<Device> {
        let me = require_user(ctx)?;
        let target = user_id.as_ref().map(|id| parse_id("user", id)).transpose()?.unwrap_or(me.id);
        let identifier = DeviceIdentifier::parse(&identifier)?;
        let st = state(ctx)?;
        let allowed = match me.role {
            Role::Admin => true,
            Role::Organizer => st.store.registrations().with_organizer(target, me.id).await?,
            Role::Attendee => false,
        };
        if !allowed {
            return Err(ApiError::Forbidden(
                "device identifiers are attached by an admin, or by an organiser for people registered for their events"
                    .into(),
            )
            .into());
        }
        if st.store.users().get(target).await?.is_none() {
            return Err(ApiError::not_found("user").into());
        }
        if st.store.users().by_identifier(identifier.as_str()).await?.is_some() {
            return Err(ApiError::Conflict("this device identifier is already in use".into()).into());
        }
        Ok(Device(st.store.users().add_device(target, identifier.as_str().to_owned(), Utc::now()).await?))
    }

    /// Removes an extra device identifier. Without `userId`, your own.
    async fn remove_device_identifier(
        &self,
        ctx: &Context<'_>,
        identifier: String,
        user_id: Option<ID>,
    ) -> Result<bool> {
        let target = self_or_admin(ctx, user_id.as_ref())?;
        let identifier = DeviceIdentifier::parse(&identifier)?;
        if !state(ctx)?.store.users().remove_device(target, identifier.as_str().to_owned()).await? {
            return Err(ApiError::not_found("device identifier").into());
        }
        Ok(true)
    }
}

/// A user found by a directory lookup, as the caller may see them: with
/// private fields for the user, an admin, or an organiser the user is
/// registered with; else only the public ones.
async fn reached(ctx: &Context<'_>, found: Option<store::User>) -> Result<Option<User>> {
    let Some(user) = found else { return Ok(None) };
    let me = require_user(ctx)?;
    let managed = me.role == Role::Organizer
        && me.id != user.id
        && state(ctx)?.store.registrations().with_organizer(user.id, me.id).await?;
    Ok(Some(if managed { User::in_managed_event(user) } else { User::new(user) }))
}

/// A log-in the gate would not try, as the client sees it.
fn refused(r: Refused) -> ApiError {
    ApiError::RateLimited(r.to_string())
}

/// The signed-in user if their role is one of `roles`.
pub(crate) fn require_role<'a>(ctx: &Context<'a>, roles: &[Role]) -> Result<&'a store::User> {
    let me = require_user(ctx)?;
    if roles.contains(&me.role) { Ok(me) } else { Err(ApiError::forbidden().into()) }
}

/// `user_id` if the caller is that user or an admin; the caller when absent.
fn self_or_admin(ctx: &Context<'_>, user_id: Option<&ID>) -> Result<Uuid> {
    let me = require_user(ctx)?;
    match user_id {
        None => Ok(me.id),
        Some(id) => {
            let id = parse_id("user", id)?;
            if id == me.id || me.role == Role::Admin { Ok(id) } else { Err(ApiError::forbidden().into()) }
        }
    }
}
