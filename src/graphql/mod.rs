//! The GraphQL schema: roots split by aggregate and merged, limits, error
//! codes. This module knows nothing of HTTP; `http` carries requests to it
//! with the caller's [`Principal`] attached as request data.

mod accounts;
mod api_keys;
pub mod attendance;
mod beacon;
mod door;
pub mod error;
mod events;
mod extensions;
mod imports;
mod key_types;
mod live;
pub mod loaders;
mod registrations;
mod scanners;
pub mod shared;
mod types;

use async_graphql::connection::Connection;
use async_graphql::{Context, MergedObject, Schema};
use uuid::Uuid;

pub use error::ApiError;

use crate::auth::Principal;
use crate::state::AppState;

#[derive(MergedObject, Default)]
pub struct Query(
    accounts::AccountsQuery,
    events::EventsQuery,
    attendance::AttendanceQuery,
    door::DoorQuery,
    api_keys::ApiKeysQuery,
    scanners::ScannersQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    accounts::AccountsMutation,
    events::EventsMutation,
    registrations::RegistrationsMutation,
    attendance::AttendanceMutation,
    door::DoorMutation,
    beacon::BeaconMutation,
    api_keys::ApiKeysMutation,
    imports::ImportsMutation,
);

pub use live::LiveSubscription as Subscription;

pub type RollcallSchema = Schema<Query, Mutation, Subscription>;

/// Builds the schema around `state`, with the configured limits.
pub fn build_schema(state: AppState) -> RollcallSchema {
    let limits = state.limits.clone();
    let introspection = state.web.introspection_on();
    let builder = Schema::build(Query::default(), Mutation::default(), Subscription);
    let builder = if introspection { builder } else { builder.disable_introspection() };
    builder
        .data(state)
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .limit_recursive_depth(limits.max_depth.max(32))
        .extension(extensions::ErrorCodes)
        .extension(extensions::RequestMetrics)
        .extension(extensions::OneHashPerRequest)
        .finish()
}

/// The SDL, as `rollcall schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    Schema::build(Query::default(), Mutation::default(), Subscription).finish().sdl()
}

/// The address the request came from (request data; `None` when unknown).
/// Behind a load balancer it is the balancer's, unless the balancer is a
/// `--trusted-proxy` (see `http::client`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

/// The scanner's own stable identity, from the `x-rollcall-scanner-id`
/// header (request data; `None` when it sent none). It survives key
/// rotation; see `app::ingest`.
#[derive(Debug, Clone, Copy)]
pub struct ScannerIdentity(pub Option<uuid::Uuid>);

/// The header that carries [`ScannerIdentity`].
pub const SCANNER_ID_HEADER: &str = "x-rollcall-scanner-id";

pub(crate) fn state<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a AppState> {
    ctx.data::<AppState>()
}

pub(crate) fn principal<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Principal> {
    ctx.data::<Principal>()
}

/// The signed-in person, or `UNAUTHENTICATED` (`FORBIDDEN` for a scanner:
/// it is authenticated, just not as a person).
pub(crate) fn require_user<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a crate::store::User> {
    match principal(ctx)? {
        Principal::User(u) => Ok(u),
        Principal::Scanner { .. } => {
            Err(ApiError::Forbidden("this needs a person's login, not an API key".into()).into())
        }
        Principal::Anonymous => Err(ApiError::unauthenticated().into()),
    }
}

/// The user `id`, through the batching loader (see `loaders`).
pub(crate) async fn load_user(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<crate::store::User>> {
    state(ctx)?.users.load_one(id).await.map_err(|e| ApiError::Internal(anyhow::anyhow!(e)).into())
}

/// Parses a GraphQL `ID` that should hold one of our UUIDs.
pub(crate) fn parse_id(what: &str, id: &async_graphql::ID) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id.as_str())
        .map_err(|_| ApiError::validation(format!("`{}` is not a valid {what} id", id.as_str())))
}

/// The complexity of a page of `first` rows (the default page when absent),
/// each costing `child`: what a query may ask of the database is counted by
/// rows, not by fields, so nesting lists multiplies.
pub(crate) fn page_cost(first: Option<i32>, child: usize) -> usize {
    list_cost(first.map_or(Page::DEFAULT, |n| usize::try_from(n).unwrap_or(0).min(Page::MAX)), child)
}

/// The complexity of a list without paging (the active events, the API keys,
/// a user's devices), counted as `rows` rows: about as many as such a list
/// holds.
pub(crate) fn list_cost(rows: usize, child: usize) -> usize {
    rows.max(1).saturating_mul(child).saturating_add(1)
}

/// Cursor pagination arguments, checked.
pub(crate) struct Page {
    /// Rows to return.
    pub limit: usize,
    /// Return rows after this id.
    pub after: Option<Uuid>,
}

impl Page {
    pub const DEFAULT: usize = 50;
    pub const MAX: usize = 500;

    pub fn parse(first: Option<i32>, after: Option<String>) -> Result<Self, ApiError> {
        let limit = match first {
            None => Self::DEFAULT,
            Some(n) if n >= 0 && n as usize <= Self::MAX => n as usize,
            Some(_) => return Err(ApiError::validation(format!("`first` must be between 0 and {}", Self::MAX))),
        };
        let after = after
            .map(|c| Uuid::parse_str(&c).map_err(|_| ApiError::validation("`after` is not a cursor from this list")))
            .transpose()?;
        Ok(Self { limit, after })
    }

    /// How many rows to fetch: one more than the page, to learn if there is a next page.
    pub fn fetch(&self) -> usize {
        self.limit + 1
    }

    pub fn connection<T, N: async_graphql::OutputType>(
        &self,
        rows: Vec<T>,
        id: impl Fn(&T) -> Uuid,
        node: impl Fn(T) -> N,
    ) -> Connection<String, N> {
        types::edges(rows, self.limit, self.after.is_some(), id, node)
    }
}
