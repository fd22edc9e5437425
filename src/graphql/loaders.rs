//! Batched lookups for fields that every node of a page resolves: a page of
//! 500 registrations asks for 500 users at once, and this turns that into
//! one read (async-graphql's `DataLoader` gathers the keys requested in the
//! same moment, then calls [`Users::load`] once).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_graphql::dataloader::{DataLoader, Loader};
use uuid::Uuid;

use crate::store::{StoreError, SurrealStore, User};

/// Users by id, one store read per batch.
pub struct Users {
    store: SurrealStore,
    reads: AtomicU64,
}

impl Users {
    /// A loader over `store`, without a cache: a user changed by a mutation
    /// is read again by the next request.
    pub fn loader(store: SurrealStore) -> Arc<DataLoader<Users>> {
        Arc::new(DataLoader::new(Users { store, reads: AtomicU64::new(0) }, tokio::spawn))
    }

    /// Store reads made so far (one per batch).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

impl Loader<Uuid> for Users {
    type Value = User;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, User>, Self::Error> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("rollcall_user_batch_reads_total").increment(1);
        let users = self.store.users().get_many(keys).await.map_err(Arc::new)?;
        Ok(users.into_iter().map(|u| (u.id, u)).collect())
    }
}
