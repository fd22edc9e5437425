//! Schema extensions applied to every operation: stable error codes and
//! per-operation metrics.

use std::sync::Arc;
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest, NextSubscribe,
};
use async_graphql::parser::types::{ExecutableDocument, OperationDefinition, OperationType, Selection, SelectionSet};
use async_graphql::{Response, ServerError, ServerResult, Value, Variables};
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

/// Counts operations and times them, labelled `<type>:<first root field>`
/// (`mutation:submitSightings`). The operation's name is the client's to
/// choose, so as a label it would add a series per request forever; root
/// fields are the schema's, so the set of labels is bounded. Execution only
/// starts after validation, so every field seen here exists.
pub struct RequestMetrics;

impl ExtensionFactory for RequestMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestMetricsExtension::default())
    }
}

#[derive(Default)]
struct RequestMetricsExtension {
    /// Each operation of the document: its name and its label.
    operations: std::sync::Mutex<Vec<(Option<String>, String)>>,
}

/// `<type>:<first root field>` of an operation.
fn label(op: &OperationDefinition) -> String {
    let kind = match op.ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    };
    let field = op.selection_set.node.items.iter().find_map(|item| match &item.node {
        Selection::Field(f) => Some(f.node.name.node.as_str()),
        _ => None,
    });
    format!("{kind}:{}", field.unwrap_or("fragment"))
}

#[async_trait::async_trait]
impl Extension for RequestMetricsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let ops = doc.operations.iter().map(|(name, op)| (name.map(|n| n.to_string()), label(&op.node))).collect();
        *self.operations.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = ops;
        Ok(doc)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let started = Instant::now();
        let resp = next.run(ctx, operation_name).await;
        let operation = {
            let ops = self.operations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ops.iter()
                .find(|(name, _)| operation_name.is_none() || name.as_deref() == operation_name)
                .map_or_else(|| "unknown".to_owned(), |(_, label)| label.clone())
        };
        let outcome = if resp.errors.is_empty() { "ok" } else { "error" };
        metrics::counter!("rollcall_graphql_operations_total", "operation" => operation.clone(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!("rollcall_graphql_operation_duration_seconds", "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        resp
    }
}

/// Refuses a document that asks for more than one password hash: each
/// `logIn` or `signUp` costs one, so aliasing them 500 times in one request
/// would buy 500 hashes for the price of one request. Counted over the whole
/// document, fragments included, before anything runs.
pub struct OneHashPerRequest;

/// The root fields that hash a password.
const HASHING_FIELDS: [&str; 3] = ["logIn", "signUp", "changePassword"];

impl ExtensionFactory for OneHashPerRequest {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OneHashPerRequest)
    }
}

#[async_trait::async_trait]
impl Extension for OneHashPerRequest {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let sets = doc.operations.iter().map(|(_, op)| &op.node.selection_set.node);
        let fragments = doc.fragments.values().map(|f| &f.node.selection_set.node);
        let hashes: usize = sets.chain(fragments).map(count_hashing).sum();
        if hashes > 1 {
            return Err(ServerError::new("send one logIn, signUp or changePassword per request", None));
        }
        Ok(doc)
    }
}

/// `logIn` and `signUp` fields in `set` and the inline fragments within it.
fn count_hashing(set: &SelectionSet) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(f) if HASHING_FIELDS.contains(&f.node.name.node.as_str()) => 1,
            Selection::Field(f) => count_hashing(&f.node.selection_set.node),
            Selection::InlineFragment(f) => count_hashing(&f.node.selection_set.node),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}
