//! GraphQL object types: thin views over the store's records, with the
//! visibility rules for each field; [`people`] and [`events`].

mod events;
mod people;

pub use events::*;
pub use people::*;

use async_graphql::connection::{Connection, Edge};
use uuid::Uuid;

/// Builds a connection page from rows fetched with [`Page::fetch`].
pub(crate) fn edges<T, N>(
    rows: Vec<T>,
    limit: usize,
    has_previous: bool,
    id: impl Fn(&T) -> Uuid,
    node: impl Fn(T) -> N,
) -> Connection<String, N>
where
    N: async_graphql::OutputType,
{
    let has_next = rows.len() > limit;
    let mut conn = Connection::new(has_previous, has_next);
    conn.edges.extend(rows.into_iter().take(limit).map(|r| Edge::new(id(&r).to_string(), node(r))));
    conn
}
