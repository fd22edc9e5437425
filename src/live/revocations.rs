//! Key revocations from anywhere, relayed to this process's sockets: a key
//! revoked through another instance or the CLI closes its sockets here at
//! once, not at the next periodic recheck.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::store::SurrealStore;

/// Follows the store's revocations and sends each key's id on `revoked`,
/// reopening the stream when the database goes away, until aborted.
pub(super) async fn relay(store: SurrealStore, revoked: broadcast::Sender<Uuid>) {
    loop {
        match store.key_revocations().await {
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                while let Some(key) = stream.next().await {
                    let _ = revoked.send(key);
                }
                tracing::warn!("the key revocation stream ended; reopening it");
            }
            Err(e) => tracing::warn!(error = %e, "cannot follow key revocations; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
