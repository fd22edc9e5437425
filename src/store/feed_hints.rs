//! The change feed's hints: one `LIVE SELECT` on each table with a feed
//! (`change_feed::FEED_TABLES`), whose notifications say "read the feed
//! now". Only a hint: on a cluster of several SurrealDB nodes a live query
//! hears only the writes made through its own node, and it carries no data.
//!
//! **Ending them.** The SDK (3.3.5) gives a live query's stream a fresh
//! session of its own (`Stream::new(... .into())`), with no namespace
//! selected and no credentials, and kills the query under that session
//! when the stream is dropped. So that kill always fails ("Specify a
//! namespace" embedded, "Anonymous access not allowed" on a server), and the
//! query stays registered in the database (the test below, with a plain
//! drop in place of `close`, finds it still there). [`FeedHints::close`]
//! therefore kills each query itself, through the connection that opened
//! it, before the streams are dropped. The SDK's failed attempt that
//! follows is filtered out of the default log (`telemetry::init_logging`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use surrealdb::method::QueryStream;
use surrealdb::types::{RecordId, SurrealValue};

use super::StoreError;
use super::engine::Conn;

/// What a hint's notification carries; only its arrival matters.
#[derive(Debug, SurrealValue)]
struct Written {
    id: RecordId,
}

type Hints = QueryStream<surrealdb::Notification<Written>>;

/// A hint each time a commit writes one of `tables`. Ends when any of its
/// live queries ends (the database dropped it, or the connection went).
pub struct FeedHints {
    db: Arc<Conn>,
    live: Vec<(surrealdb::types::Uuid, Hints)>,
    ended: bool,
}

impl FeedHints {
    /// Opens one live query per table on `db`. If one cannot be opened,
    /// those already opened are ended again.
    pub(super) async fn open(db: Arc<Conn>, tables: &[&str]) -> Result<Self, StoreError> {
        let mut hints = Self { db, live: Vec::with_capacity(tables.len()), ended: false };
        for table in tables {
            match hints.open_one(table).await {
                Ok(live) => hints.live.push(live),
                Err(e) => {
                    hints.close().await;
                    return Err(e);
                }
            }
        }
        Ok(hints)
    }

    async fn open_one(&self, table: &str) -> Result<(surrealdb::types::Uuid, Hints), StoreError> {
        // Registering a live query writes: instances starting together may conflict.
        let (id, stream) = super::retry_on_conflict(|| async {
            let mut res = self.db.query(format!("LIVE SELECT id FROM {table}")).await?;
            let stream = res.stream::<surrealdb::Notification<Written>>(0)?;
            // The statement's value is the query's id, which `KILL` takes.
            let id: Option<surrealdb::types::Uuid> = res.take(0)?;
            Ok((id, stream))
        })
        .await?;
        let id = id.ok_or_else(|| StoreError::Corrupt(format!("LIVE SELECT on {table} returned no id")))?;
        Ok((id, stream))
    }

    /// Ends the live queries in the database, then drops their streams.
    pub async fn close(self) {
        for (id, _) in &self.live {
            let killed = async { self.db.query("KILL $id").bind(("id", *id)).await?.check() };
            if let Err(e) = killed.await {
                tracing::debug!(error = %e, %id, "could not end a change-feed hint's live query");
            }
        }
    }
}

impl Stream for FeedHints {
    type Item = ();

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let mut hinted = false;
        for (_, stream) in &mut this.live {
            loop {
                match stream.poll_next_unpin(cx) {
                    // A notification or an error: either way, read the feed.
                    Poll::Ready(Some(_)) => hinted = true,
                    Poll::Ready(None) => {
                        this.ended = true;
                        return Poll::Ready(None);
                    }
                    Poll::Pending => break,
                }
            }
        }
        if hinted { Poll::Ready(Some(())) } else { Poll::Pending }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::SurrealStore;
    use futures_util::StreamExt;

    /// The live queries registered on `table`, from the table's own info.
    async fn lives(store: &SurrealStore, table: &str) -> usize {
        let mut res = store.raw().query(format!("INFO FOR TABLE {table}")).await.unwrap();
        let info: Option<serde_json::Value> =
            res.take::<Option<surrealdb::types::Value>>(0).unwrap().map(|v| v.into_json_value());
        info.and_then(|i| i.get("lives").and_then(|l| l.as_object()).map(|l| l.len())).unwrap_or(0)
    }

    #[tokio::test]
    async fn a_write_hints_and_closing_ends_the_live_queries_in_the_database() {
        let store = SurrealStore::memory().await.unwrap();
        let mut hints = store.feed_hints().await.unwrap();
        assert_eq!(lives(&store, "checkin_seq").await, 1);
        store.raw().query("UPSERT checkin_seq:t SET n = 1").await.unwrap().check().unwrap();
        let hint = tokio::time::timeout(std::time::Duration::from_secs(5), hints.next()).await;
        assert_eq!(hint.unwrap(), Some(()), "a write to a table with a feed is a hint");

        hints.close().await;
        for table in super::super::change_feed::FEED_TABLES {
            assert_eq!(lives(&store, table).await, 0, "{table} keeps a live query after close");
        }
    }
}
