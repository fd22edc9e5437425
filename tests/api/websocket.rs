//! The WebSocket endpoint is wired in: the handshake, credentials in
//! `connection_init`, and a refused credential closing the socket. (The
//! subscriptions themselves, and the protocol's exact close codes, come with
//! the live-updates work.)

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{TestApp, spawn_app};

async fn connect(
    app: &TestApp,
    protocol: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = format!("ws://{}/graphql", app.addr).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.expect("upgrade accepted");
    assert_eq!(resp.headers()["sec-websocket-protocol"], protocol);
    ws
}

async fn next_message(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Option<Message> {
    tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .expect("server answered in time")
        .map(|m| m.unwrap())
}

#[tokio::test]
async fn connection_init_with_a_token_is_acknowledged() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut ws = connect(&app, protocol).await;
        let init =
            json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", ada.token) } });
        ws.send(Message::text(init.to_string())).await.unwrap();
        let Some(Message::Text(text)) = next_message(&mut ws).await else { panic!("expected a text frame") };
        let msg: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(msg["type"], "connection_ack", "{protocol}: {msg}");
    }
}

#[tokio::test]
async fn a_bad_credential_in_connection_init_closes_the_socket() {
    let app = spawn_app().await;
    let mut ws = connect(&app, "graphql-transport-ws").await;
    let init = json!({ "type": "connection_init", "payload": { "authorization": "Bearer forged.token.here" } });
    ws.send(Message::text(init.to_string())).await.unwrap();
    match next_message(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert!(frame.reason.contains("invalid token"), "{frame:?}"),
        other => panic!("expected a close frame, got {other:?}"),
    }
}
