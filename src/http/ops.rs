//! Operational endpoints: liveness, readiness and metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::HttpState;

/// `GET /health`: the process is up. The shape is the deployed scanners'
/// (DESIGN.md, "Seed compatibility"): status, Unix-millisecond timestamp, version.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({
        "status": "healthy",
        "timestamp": chrono::Utc::now().timestamp_millis(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /ready`: the database answers; 503 otherwise, so a load balancer
/// stops sending traffic here.
pub async fn ready(State(state): State<HttpState>) -> Response {
    match state.app.store.ping(Duration::from_secs(2)).await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
        Err(err) => {
            tracing::warn!(error = ?err, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "reason": "database unreachable"})))
                .into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text format. With a metrics token, only for a
/// caller that presents it; in production, not at all without one.
pub async fn metrics(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let web = &state.app.web;
    match &web.metrics_token {
        Some(token) => {
            let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            let expected = format!("Bearer {token}");
            let ok = presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.as_bytes())));
            if !ok {
                return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "metrics token required\n")
                    .into_response();
            }
        }
        None if web.production() => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
        None => {}
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.app.metrics.render()).into_response()
}
