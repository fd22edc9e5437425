//! A transaction's response as a result, and retrying work that meets a
//! concurrent transaction.

use std::time::Duration;

use surrealdb::types::RecordId;

use super::Conn;
use super::StoreError;

/// Why a transaction's response failed, if it did. Statements after the
/// failing one only report that the transaction failed; the cause is the
/// other error.
pub(super) fn transaction_failure(mut res: surrealdb::IndexedResults) -> Option<surrealdb::Error> {
    let mut errors: Vec<(usize, surrealdb::Error)> = res.take_errors().into_iter().collect();
    errors.sort_by_key(|(i, _)| *i);
    errors.iter().find(|(_, e)| !e.message().contains("failed transaction")).or(errors.first()).map(|(_, e)| e.clone())
}

/// A transaction's response as a result: its cause when it failed (what
/// [`retry_on_conflict`] looks at), not the first statement's "not
/// executed".
fn transaction_result(res: surrealdb::IndexedResults) -> Result<(), StoreError> {
    transaction_failure(res).map_or(Ok(()), |e| Err(StoreError::from(e)))
}

/// Runs `sql`, one transaction about the record `$id`, again while it meets
/// a concurrent write ([`retry_on_conflict`]); for idempotent ones.
pub(super) async fn retried_transaction(db: &Conn, sql: &'static str, id: RecordId) -> Result<(), StoreError> {
    retry_on_conflict(|| async { transaction_result(db.query(sql).bind(("id", id.clone())).await?) }).await
}

/// Runs the transaction `query` builds, again while it meets a concurrent
/// write ([`retry_on_write_conflict`]), and returns its real cause when it
/// fails.
pub(super) async fn retried_write<'r>(query: impl Fn() -> super::engine::ConnQuery<'r>) -> Result<(), StoreError> {
    retry_on_write_conflict(|| async { transaction_result(query().await?) }).await
}

/// Whether `err` says a concurrent transaction got there first: a record
/// that already exists, a unique index, or the engine's write conflict
/// ("... can be retried").
fn is_conflict(err: &StoreError) -> bool {
    match err {
        StoreError::Conflict { .. } => true,
        StoreError::Db(e) => e.is_already_exists() || e.message().contains("can be retried"),
        _ => false,
    }
}

/// Whether `err` is the engine's write conflict with a concurrent
/// transaction, and not a value some other record already holds.
fn is_write_conflict(err: &StoreError) -> bool {
    matches!(err, StoreError::Db(e) if e.message().contains("can be retried"))
}

/// Runs `op` again, after a short pause, while it fails on a conflict with a
/// concurrent transaction (up to 20 times); for idempotent work that may
/// meet another transaction (start-up work of several instances, deletions
/// racing ingest).
pub(crate) async fn retry_on_conflict<T, F, Fut>(op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    retry_when(is_conflict, op).await
}

/// [`retry_on_conflict`] for work whose "already exists" is the caller's
/// answer, not a race: only the engine's write conflicts are tried again.
async fn retry_on_write_conflict<T, F, Fut>(op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    retry_when(is_write_conflict, op).await
}

async fn retry_when<T, F, Fut>(retryable: fn(&StoreError) -> bool, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0u32;
    loop {
        match op().await {
            Err(e) if retryable(&e) && attempt < 20 => {
                attempt += 1;
                let pause = rand::random::<u64>() % (10 * u64::from(attempt)) + 5;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            other => return other,
        }
    }
}
