//! Health, readiness, metrics and the playground.

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_has_the_seed_shape() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    let obj = body.as_object().unwrap();
    assert_eq!(obj.len(), 3, "exactly status, timestamp, version: {body}");
    assert_eq!(body["status"], "healthy");
    let ts = body["timestamp"].as_i64().unwrap();
    assert!((ts - chrono::Utc::now().timestamp_millis()).abs() < 60_000, "Unix milliseconds");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn ready_checks_the_database() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "ready");
}

#[tokio::test]
async fn metrics_count_requests_and_operations() {
    let app = spawn_app().await;
    app.sign_up("m@example.org", "M").await;
    app.http.get(app.url("/health")).send().await.unwrap();
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("rollcall_http_requests_total{"), "{text}");
    assert!(text.contains("route=\"/health\""), "{text}");
    assert!(text.contains("rollcall_graphql_operation_duration_seconds"), "{text}");
}

#[tokio::test]
async fn the_playground_is_served_from_the_binary() {
    let app = spawn_app().await;
    for path in ["/", "/graphql"] {
        let resp =
            app.http.get(app.url(path)).header("accept", "text/html,application/xhtml+xml").send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let html = resp.text().await.unwrap();
        assert!(html.contains("GraphiQL"), "{path}");
        for src in html.split("src=\"").skip(1).chain(html.split("href=\"").skip(1)) {
            let url = &src[..src.find('"').unwrap()];
            assert!(url.starts_with('/'), "{path} loads {url} from elsewhere: it must work offline");
            let asset = app.http.get(app.url(url)).send().await.unwrap();
            assert_eq!(asset.status().as_u16(), 200, "{url}");
            assert!(asset.bytes().await.unwrap().len() > 1000, "{url}");
        }
    }
    let resp = app.http.get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400, "no query and no HTML: say what is missing");
    assert_eq!(app.http.get(app.url("/nope")).send().await.unwrap().status().as_u16(), 404);
}
