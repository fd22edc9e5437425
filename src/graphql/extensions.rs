//! Schema extensions applied to every operation: stable error codes and
//! per-operation metrics.

use std::sync::Arc;
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextRequest, NextSubscribe,
};
use async_graphql::{Response, ServerError, Value};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

/// Gives every error an `extensions.code`.
///
/// Resolver errors already carry one (see `error.rs`). Errors raised by the
/// GraphQL engine itself (syntax, unknown fields, bad argument types, the
/// depth and complexity limits) are the client's: `VALIDATION`. Anything else
/// without a code is a bug of ours: it is logged and shown as
/// "internal error".
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExtension)
    }
}

struct ErrorCodesExtension;

#[async_trait::async_trait]
impl Extension for ErrorCodesExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut resp = next.run(ctx).await;
        for err in &mut resp.errors {
            classify(err);
        }
        resp
    }

    /// Operations over a WebSocket (subscriptions, and queries sent there)
    /// do not pass through `request`: their results are coded here.
    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        Box::pin(next.run(ctx, stream).map(|mut resp| {
            for err in &mut resp.errors {
                classify(err);
            }
            resp
        }))
    }
}

fn has_code(err: &ServerError) -> bool {
    err.extensions.as_ref().is_some_and(|e| e.get("code").is_some())
}

/// Sets the code of an engine error that has none.
pub(crate) fn classify(err: &mut ServerError) {
    if has_code(err) {
        return;
    }
    let client_fault = err.path.is_empty()
        || err.message.starts_with("Failed to parse")
        || err.message.starts_with("Invalid value")
        || err.message.contains("Internal error: Failed to parse");
    let code = if client_fault {
        "VALIDATION"
    } else {
        tracing::error!(message = %err.message, path = ?err.path, "uncoded resolver error");
        err.message = "internal error".into();
        "INTERNAL"
    };
    err.extensions.get_or_insert_with(Default::default).set("code", Value::from(code));
}

/// Counts operations and times them, by operation name and type.
pub struct RequestMetrics;

impl ExtensionFactory for RequestMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestMetricsExtension)
    }
}

struct RequestMetricsExtension;

#[async_trait::async_trait]
impl Extension for RequestMetricsExtension {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let started = Instant::now();
        let resp = next.run(ctx, operation_name).await;
        let operation = operation_name.unwrap_or("anonymous").to_owned();
        let outcome = if resp.errors.is_empty() { "ok" } else { "error" };
        metrics::counter!("rollcall_graphql_operations_total", "operation" => operation.clone(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!("rollcall_graphql_operation_duration_seconds", "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        resp
    }
}
