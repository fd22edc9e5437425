//! Scanner API keys: issued once, listed without their secret, revoked.

use async_graphql::{Context, ID, Object, Result};
use chrono::Utc;

use super::accounts::require_role;
use super::error::ApiError;
use super::types::{ApiKey, CreatedApiKey};
use super::{parse_id, state};
use crate::auth::ApiKeySecret;
use crate::domain::{Role, Text};

#[derive(Default)]
pub struct ApiKeysQuery;

#[Object]
impl ApiKeysQuery {
    /// API keys: all of them for an admin, your own for an organiser.
    async fn api_keys(&self, ctx: &Context<'_>) -> Result<Vec<ApiKey>> {
        let me = require_role(ctx, &[Role::Admin, Role::Organizer])?;
        let by = (me.role != Role::Admin).then_some(me.id);
        Ok(state(ctx)?.store.api_keys().list(by).await?.into_iter().map(ApiKey).collect())
    }
}

#[derive(Default)]
pub struct ApiKeysMutation;

#[Object]
impl ApiKeysMutation {
    /// Issues a key for a scanner. The secret is in the result and is never
    /// shown again. `scopes` lists the event ids the key may report for:
    /// without it, an admin's key covers every event and an organiser's
    /// covers every event they run.
    async fn create_api_key(&self, ctx: &Context<'_>, name: String, scopes: Option<Vec<ID>>) -> Result<CreatedApiKey> {
        let me = require_role(ctx, &[Role::Admin, Role::Organizer])?;
        let name = Text::parse("name", &name, 200)?.into_inner();
        let st = state(ctx)?;
        let mut events = Vec::new();
        for id in scopes.unwrap_or_default() {
            let id = parse_id("event", &id)?;
            let event = st.store.events().get(id).await?.ok_or_else(|| ApiError::not_found("event in scopes"))?;
            if me.role != Role::Admin && event.organizer_id != me.id {
                return Err(ApiError::Forbidden("a key can only be scoped to events you organize".into()).into());
            }
            if !events.contains(&id) {
                events.push(id);
            }
        }
        let all_events = me.role == Role::Admin && events.is_empty();
        let secret = ApiKeySecret::generate();
        let key = st
            .store
            .api_keys()
            .create(name, secret.display_prefix(), secret.hash(), all_events, events, Some(me.id), Utc::now())
            .await?;
        Ok(CreatedApiKey { api_key: ApiKey(key), secret: secret.expose().to_owned() })
    }

    /// Revokes a key; requests with it fail from now on. An admin, or the
    /// organiser who made it.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> Result<ApiKey> {
        let me = require_role(ctx, &[Role::Admin, Role::Organizer])?;
        let id = parse_id("API key", &id)?;
        let keys = state(ctx)?.store.api_keys();
        let key = keys.get(id).await?.ok_or_else(|| ApiError::not_found("API key"))?;
        if me.role != Role::Admin && key.created_by != Some(me.id) {
            return Err(ApiError::forbidden().into());
        }
        let key = keys.revoke(id, Utc::now()).await?.ok_or_else(|| ApiError::not_found("API key"))?;
        Ok(ApiKey(key))
    }
}
