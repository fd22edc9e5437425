//! The HTTP surface (axum): `/graphql` (POST, GET, WebSocket), the
//! playground, the dashboard and console pages, `/health`, `/ready` and
//! `/metrics`.

mod admission;
pub mod client;
mod compat;
mod export;
mod graphql;
mod ops;
mod pages;
mod playground;
mod ws;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::config::WebArgs;
use crate::graphql::{RollcallSchema, build_schema};
use crate::state::AppState;

/// What the handlers share: the application state and the schema built on
/// it. One allocation behind an `Arc`: every request and every live socket
/// holds a copy, and a socket holds its copy for as long as it stays open.
#[derive(Clone)]
pub struct HttpState(std::sync::Arc<Shared>);

/// What [`HttpState`] points to.
pub struct Shared {
    /// Database, keys, limits, metrics.
    pub app: AppState,
    /// The executable schema.
    pub schema: RollcallSchema,
    /// The WebSocket caps of this process.
    pub admission: std::sync::Arc<admission::Admission>,
}

impl std::ops::Deref for HttpState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The whole router for `state`.
pub fn router(app: AppState) -> Router {
    let body_limit = app.limits.max_body_bytes;
    let admission = admission::Admission::new(&app.live_limits);
    let web = app.web.clone();
    let state = HttpState(std::sync::Arc::new(Shared { schema: build_schema(app.clone()), admission, app }));
    let router = Router::new();
    let router = if web.playground_on() {
        router.route("/", get(playground::page)).route("/assets/graphiql/{file}", get(playground::asset))
    } else {
        router
    };
    router
        .route("/graphql", get(graphql::get).post(graphql::post))
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
        .layer(middleware::from_fn_with_state(web.clone(), security_headers))
        .layer(middleware::from_fn(close_after_unread_body))
        .layer(middleware::from_fn_with_state(web.clone(), client::resolve))
        .layer(cors(&web))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Headers every response carries: no MIME sniffing, no framing by other
/// sites (clickjacking), no referrer leaking event ids; HSTS in production,
/// where TLS is expected in front.
async fn security_headers(State(web): State<Arc<WebArgs>>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static("frame-ancestors 'none'"));
    if web.production() {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    resp
}

/// A 413 leaves the request's body unread, so the connection cannot carry
/// another request: say `Connection: close`, or a client keeps it and sends
/// its next request into a connection the server has closed (which the fuzz
/// saw as an answer that never came, under load).
async fn close_after_unread_body(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Cross-origin access for the configured origins only (none by default):
/// `/graphql` and the CSV export, with the credential headers the API reads.
fn cors(web: &WebArgs) -> CorsLayer {
    let origins: Vec<HeaderValue> =
        web.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
    if origins.is_empty() {
        return CorsLayer::new();
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("x-api-key"),
        ])
        .max_age(std::time::Duration::from_secs(600))
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
