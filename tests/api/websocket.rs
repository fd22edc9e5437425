//! The WebSocket protocol over a real socket: the handshake in both
//! subprotocols, every close code of graphql-transport-ws, the limits, and
//! sockets closed when their credential expires or is revoked.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rollcall::config::{DbArgs, ServeArgs};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{TestApp, spawn_app, spawn_with};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A GraphQL WebSocket client for tests, speaking either subprotocol.
pub struct WsClient {
    pub ws: Socket,
    pub protocol: &'static str,
}

impl WsClient {
    pub async fn connect(app: &TestApp, protocol: &'static str) -> WsClient {
        let mut req = format!("ws://{}/graphql", app.addr).into_client_request().unwrap();
        req.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.expect("upgrade accepted");
        assert_eq!(resp.headers()["sec-websocket-protocol"], protocol);
        WsClient { ws, protocol }
    }

    /// Connects and completes the handshake with `payload`.
    pub async fn signed_in(app: &TestApp, protocol: &'static str, payload: Value) -> WsClient {
        let mut c = WsClient::connect(app, protocol).await;
        c.send(json!({ "type": "connection_init", "payload": payload })).await;
        let ack = c.recv().await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        c
    }

    pub async fn bearer(app: &TestApp, token: &str) -> WsClient {
        WsClient::signed_in(app, "graphql-transport-ws", json!({ "authorization": format!("Bearer {token}") })).await
    }

    pub async fn send(&mut self, msg: Value) {
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.protocol == "graphql-ws" { "start" } else { "subscribe" };
        self.send(json!({ "type": kind, "id": id, "payload": { "query": query, "variables": variables } })).await;
    }

    /// The next protocol message, answering and skipping keepalives.
    pub async fn recv(&mut self) -> Value {
        self.recv_within(Duration::from_secs(10)).await.expect("a message in time")
    }

    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            match msg {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    match v["type"].as_str() {
                        Some("ping") => self.send(json!({ "type": "pong" })).await,
                        Some("ka") => {}
                        _ => return Some(v),
                    }
                }
                Some(Ok(Message::Close(frame))) => panic!("socket closed: {frame:?}"),
                Some(Ok(_)) => {}
                other => panic!("socket failed: {other:?}"),
            }
        }
    }

    /// Waits for the server to close the socket; its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await.expect("closed in time") {
                Some(Ok(Message::Close(Some(frame)))) => return (frame.code.into(), frame.reason.to_string()),
                Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket failed before a close frame: {e}"),
            }
        }
    }
}

const ME: &str = "subscription($e: ID!) { eventStats(eventId: $e) { checkedIn } }";

async fn token_of(app: &TestApp) -> String {
    app.sign_up("ada@example.org", "Ada").await.token
}

#[tokio::test]
async fn connection_init_with_a_token_is_acknowledged_in_both_protocols() {
    let app = spawn_app().await;
    let token = token_of(&app).await;
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut c = WsClient::signed_in(&app, protocol, json!({ "authorization": format!("Bearer {token}") })).await;
        // A query over the socket: one result, then complete.
        c.subscribe("q", "{ me { name } }", json!({})).await;
        let next = c.recv().await;
        assert_eq!(next["type"], if protocol == "graphql-ws" { "data" } else { "next" }, "{next}");
        assert_eq!(next["payload"]["data"]["me"]["name"], "Ada");
        assert_eq!(c.recv().await, json!({ "type": "complete", "id": "q" }));
    }
}

#[tokio::test]
async fn a_bad_credential_closes_with_4403() {
    let app = spawn_app().await;
    let mut c = WsClient::connect(&app, "graphql-transport-ws").await;
    c.send(json!({ "type": "connection_init", "payload": { "authorization": "Bearer forged.token.here" } })).await;
    let (code, reason) = c.closed().await;
    assert_eq!(code, 4403);
    assert!(reason.contains("invalid token"), "{reason}");
    let mut c = WsClient::connect(&app, "graphql-transport-ws").await;
    c.send(json!({ "type": "connection_init", "payload": { "apiKey": "rck_nope" } })).await;
    assert_eq!(c.closed().await.0, 4403);
}

#[tokio::test]
async fn no_connection_init_in_time_closes_with_4408() {
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.live.init_timeout_secs = 1;
    let app = spawn_with(args).await;
    let mut c = WsClient::connect(&app, "graphql-transport-ws").await;
    let (code, reason) = c.closed().await;
    assert_eq!((code, reason.as_str()), (4408, "Connection initialisation timeout"));
}

#[tokio::test]
async fn subscribing_before_the_handshake_closes_with_4401() {
    let app = spawn_app().await;
    let mut c = WsClient::connect(&app, "graphql-transport-ws").await;
    c.subscribe("1", "{ __typename }", json!({})).await;
    assert_eq!(c.closed().await.0, 4401);
}

#[tokio::test]
async fn a_malformed_message_closes_with_4400() {
    let app = spawn_app().await;
    for bad in ["not json", r#"{"type":"what"}"#, r#"{"type":"subscribe","id":"1"}"#] {
        let mut c = WsClient::connect(&app, "graphql-transport-ws").await;
        c.ws.send(Message::text(bad)).await.unwrap();
        let (code, reason) = c.closed().await;
        assert_eq!(code, 4400, "{bad}: {reason}");
        assert!(reason.len() <= 123, "{} bytes", reason.len());
    }
}

#[tokio::test]
async fn a_second_connection_init_closes_with_4429() {
    let app = spawn_app().await;
    let token = token_of(&app).await;
    let mut c = WsClient::bearer(&app, &token).await;
    c.send(json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(c.closed().await.0, 4429);
}

#[tokio::test]
async fn a_subscription_id_in_use_closes_with_4409() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let event = app.create_event(&org, "Expo").await;
    let mut c = WsClient::bearer(&app, &org.token).await;
    c.subscribe("same", ME, json!({ "e": event })).await;
    assert_eq!(c.recv().await["payload"]["data"]["eventStats"]["checkedIn"], 0);
    c.subscribe("same", ME, json!({ "e": event })).await;
    let (code, reason) = c.closed().await;
    assert_eq!((code, reason.as_str()), (4409, "Subscriber for same already exists"));
}

#[tokio::test]
async fn a_long_subscription_id_is_cut_to_a_legal_close_reason() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let event = app.create_event(&org, "Expo").await;
    let mut c = WsClient::bearer(&app, &org.token).await;
    let id = "é".repeat(100);
    c.subscribe(&id, ME, json!({ "e": event })).await;
    c.recv().await;
    c.subscribe(&id, ME, json!({ "e": event })).await;
    let (code, reason) = c.closed().await;
    assert_eq!(code, 4409);
    assert!(reason.len() <= 123, "{} bytes", reason.len());
}

#[tokio::test]
async fn a_message_over_the_size_limit_ends_the_socket() {
    let app = spawn_app().await;
    let token = token_of(&app).await;
    let mut c = WsClient::bearer(&app, &token).await;
    let huge = format!("{{ me {{ name }} }} #{}", "x".repeat(70 * 1024));
    c.subscribe("big", &huge, json!({})).await;
    let (code, _) = c.closed().await;
    assert_eq!(code, 1009);
    // The server is fine.
    let mut c = WsClient::bearer(&app, &token).await;
    c.subscribe("q", "{ me { name } }", json!({})).await;
    assert_eq!(c.recv().await["payload"]["data"]["me"]["name"], "Ada");
}

#[tokio::test]
async fn one_socket_holds_a_bounded_number_of_subscriptions() {
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.live.max_subscriptions = 2;
    let app = spawn_with(args).await;
    let org = app.organizer("org@example.org").await;
    let event = app.create_event(&org, "Expo").await;
    let mut c = WsClient::bearer(&app, &org.token).await;
    for id in ["a", "b"] {
        c.subscribe(id, ME, json!({ "e": event })).await;
        c.recv().await;
    }
    c.subscribe("c", ME, json!({ "e": event })).await;
    let err = c.recv().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["id"], "c");
    assert_eq!(err["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    // Completing one makes room.
    c.send(json!({ "type": "complete", "id": "a" })).await;
    c.subscribe("c", ME, json!({ "e": event })).await;
    assert_eq!(c.recv().await["id"], "c");
}

#[tokio::test]
async fn revoking_a_key_closes_the_sockets_that_use_it() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let (key_id, secret) = app.api_key(&org, "door", None).await;
    let (_, other) = app.api_key(&org, "side door", None).await;
    let mut revoked = WsClient::signed_in(&app, "graphql-transport-ws", json!({ "apiKey": secret })).await;
    let mut kept = WsClient::signed_in(&app, "graphql-transport-ws", json!({ "apiKey": other })).await;
    app.ok(&org.auth(), "mutation($id: ID!) { revokeApiKey(id: $id) { id } }", json!({ "id": key_id })).await;
    let (code, reason) = revoked.closed().await;
    assert_eq!((code, reason.as_str()), (4403, "Forbidden: API key revoked"));
    kept.subscribe("q", "{ activeEvents { id } }", json!({})).await;
    assert_eq!(kept.recv().await["type"], "next");
}

#[tokio::test]
async fn an_expiring_token_closes_its_socket() {
    let secret = "a test secret that is at least 32 bytes long";
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.jwt_secret = Some(secret.into());
    let app = spawn_with(args).await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    // A token for Ada from the same secret that lives two seconds.
    let short = rollcall::auth::JwtKeys::new(secret.as_bytes(), chrono::Duration::seconds(2)).unwrap();
    let (token, _) = short.issue(ada.id.parse().unwrap(), rollcall::domain::Role::Attendee, 0).unwrap();
    let mut c = WsClient::bearer(&app, &token).await;
    c.subscribe("q", "{ me { name } }", json!({})).await;
    assert_eq!(c.recv().await["payload"]["data"]["me"]["name"], "Ada");
    assert_eq!(c.recv().await["type"], "complete");
    let (code, reason) = c.closed().await;
    assert_eq!((code, reason.as_str()), (4403, "Forbidden: token expired"));
}

#[tokio::test]
async fn an_unknown_subprotocol_is_refused() {
    let app = spawn_app().await;
    let mut req = format!("ws://{}/graphql", app.addr).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "chat".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.expect_err("refused");
    assert!(err.to_string().contains("400"), "{err}");
}

#[tokio::test]
async fn errors_over_the_socket_carry_codes_too() {
    let app = spawn_app().await;
    let token = token_of(&app).await;
    let mut c = WsClient::bearer(&app, &token).await;
    c.subscribe("q", "{ nope }", json!({})).await;
    let err = c.recv().await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["payload"][0]["extensions"]["code"], "VALIDATION", "{err}");
}
