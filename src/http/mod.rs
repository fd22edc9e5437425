//! The HTTP surface (axum): `/graphql` (POST, GET, WebSocket), the
//! playground, the dashboard and console pages, `/health`, `/ready` and
//! `/metrics`.

mod compat;
mod export;
mod graphql;
mod ops;
mod pages;
mod playground;
mod ws;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::graphql::{RollcallSchema, build_schema};
use crate::state::AppState;

/// What the handlers share: the application state and the schema built on it.
#[derive(Clone)]
pub struct HttpState {
    /// Database, keys, limits, metrics.
    pub app: AppState,
    /// The executable schema.
    pub schema: RollcallSchema,
}

/// The whole router for `state`.
pub fn router(app: AppState) -> Router {
    let body_limit = app.limits.max_body_bytes;
    let state = HttpState { schema: build_schema(app.clone()), app };
    Router::new()
        .route("/", get(playground::page))
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/assets/graphiql/{file}", get(playground::asset))
        .route("/dashboard", get(pages::dashboard))
        .route("/console", get(pages::console))
        .route("/assets/dashboard/{file}", get(pages::asset_file))
        .route("/assets/console/{file}", get(pages::asset_file))
        .route("/assets/shared/{file}", get(pages::asset_file))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/events/{id}/attendance.csv", get(export::attendance_csv))
        .route("/active-events", get(compat::active_events))
        .route("/batch-checkin", axum::routing::post(compat::batch_checkin))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(CatchPanicLayer::custom(|_panic| {
            tracing::error!("a request handler panicked");
            graphql::error_response(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")
        }))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "not found\n").into_response()
}

/// Counts and times every request by method, route and status.
async fn count_requests(State(_): State<HttpState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("rollcall_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("rollcall_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}
