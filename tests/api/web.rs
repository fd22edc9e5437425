//! The web surface: the production profile, security headers, CORS, and
//! GraphQL over HTTP as its specification (and its audit suite) says.

use rollcall::config::{DbArgs, ServeArgs};
use serde_json::{Value, json};

use crate::helpers::{Auth, spawn_app, spawn_with};

#[tokio::test]
async fn production_hides_the_playground_introspection_and_metrics() {
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.web.profile = rollcall::config::Profile::Production;
    let app = spawn_with(args).await;
    let html = app.http.get(app.url("/")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(html.status().as_u16(), 404);
    assert_eq!(html.headers()["strict-transport-security"], "max-age=31536000");
    let gql = app.http.get(app.url("/graphql")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(gql.status().as_u16(), 400, "no playground in place of a query");
    let (_, body) = app.post_gql(&Auth::None, "{ __schema { types { name } } }", json!({})).await;
    assert!(body["data"]["__schema"].is_null(), "no schema for strangers: {body}");
    assert_eq!(app.http.get(app.url("/metrics")).send().await.unwrap().status().as_u16(), 404);
    // Ordinary queries are unaffected.
    assert_eq!(app.ok(&Auth::None, "{ __typename }", json!({})).await["__typename"], "Query");

    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.web.profile = rollcall::config::Profile::Production;
    args.web.metrics_token = Some("scrape-me".into());
    args.web.playground = true;
    let app = spawn_with(args).await;
    assert_eq!(app.http.get(app.url("/metrics")).send().await.unwrap().status().as_u16(), 401);
    let ok = app.http.get(app.url("/metrics")).bearer_auth("scrape-me").send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let html = app.http.get(app.url("/")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(html.status().as_u16(), 200, "asked for");
}

#[tokio::test]
async fn every_response_carries_security_headers() {
    let app = spawn_app().await;
    for path in ["/health", "/graphql?query=%7B__typename%7D", "/console", "/nope"] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert!(h.get("strict-transport-security").is_none(), "not in development: {path}");
    }
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.web.cors_origins = vec!["https://admin.example.org".into()];
    let app = spawn_with(args).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let ok = preflight("https://admin.example.org").await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://admin.example.org");
    let allowed = ok.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // An actual call from the allowed origin.
    let resp = app
        .http
        .post(app.url("/graphql"))
        .header("origin", "https://admin.example.org")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://admin.example.org");
    // No origins configured: no CORS headers at all.
    let plain = spawn_app().await;
    let resp = plain
        .http
        .post(plain.url("/graphql"))
        .header("origin", "https://admin.example.org")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn graphql_over_http_media_types_and_status_codes() {
    let app = spawn_app().await;
    let post = |accept: Option<&'static str>, content_type: Option<&'static str>, body: &'static str| {
        let mut req = app.http.post(app.url("/graphql")).body(body);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        if let Some(c) = content_type {
            req = req.header("content-type", c);
        }
        req.send()
    };
    const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
    let ok = r#"{"query": "{ __typename }"}"#;
    let invalid = r#"{"query": "{ nope }"}"#;
    let unparsable = r#"{"query": "{"}"#;
    // Asking for application/graphql-response+json: 200 when it ran, 400 when it could not.
    let r = post(Some(GRAPHQL_RESPONSE), Some("application/json"), ok).await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()), (200, GRAPHQL_RESPONSE));
    for body in [invalid, unparsable] {
        let r = post(Some(GRAPHQL_RESPONSE), Some("application/json"), body).await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        assert_eq!(r.headers()["content-type"], GRAPHQL_RESPONSE);
        let body: Value = r.json().await.unwrap();
        assert!(body.get("data").is_none_or(Value::is_null), "{body}");
    }
    // Asking for application/json, or for nothing: 200 and application/json, as legacy clients expect.
    for accept in [Some("application/json"), None] {
        for body in [ok, invalid] {
            let r = post(accept, Some("application/json"), body).await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{accept:?} {body}");
            assert_eq!(r.headers()["content-type"], "application/json");
        }
    }
    // A resolver's error is not a request error: 200 either way.
    let r = post(Some(GRAPHQL_RESPONSE), Some("application/json"), r#"{"query": "{ me { id } }"}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Null variables, operationName and extensions are allowed.
    let nulls = r#"{"query": "{ __typename }", "variables": null, "operationName": null, "extensions": null}"#;
    assert_eq!(post(None, Some("application/json"), nulls).await.unwrap().status().as_u16(), 200);
    // Without a JSON content type: 415.
    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let r = post(None, content_type, ok).await.unwrap();
        assert_eq!(r.status().as_u16(), 415, "{content_type:?}");
    }
    assert_eq!(post(None, Some("application/json; charset=utf-8"), ok).await.unwrap().status().as_u16(), 200);
}

/// The GraphQL-over-HTTP specification's own audit suite (vendored in
/// `tests/fixtures/graphql-http`), run with Node against the real server:
/// every MUST, and all SHOULDs but at most one.
#[tokio::test]
async fn the_graphql_over_http_audit_suite_passes() {
    let app = spawn_app().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/graphql-http/audit.mjs");
    let out = tokio::process::Command::new("node")
        .arg(script)
        .arg(app.url("/graphql"))
        .output()
        .await
        .expect("node runs (the tests need Node.js, as the console's do)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let count = |level: &str| -> (u32, u32) {
        let line = text.lines().find(|l| l.starts_with(level)).unwrap_or_else(|| panic!("no {level} line: {text}"));
        let n: Vec<u32> = line.split_whitespace().skip(1).map(|n| n.parse().unwrap()).collect();
        (n[0], n[1])
    };
    let (must, musts) = count("MUST");
    let (should, shoulds) = count("SHOULD");
    println!("graphql-http audit: MUST {must}/{musts}, SHOULD {should}/{shoulds}");
    assert_eq!(must, musts, "{text}");
    assert!(should + 1 >= shoulds, "{text}");
}
