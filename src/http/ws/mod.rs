//! GraphQL over WebSocket: the `graphql-transport-ws` protocol, and the
//! legacy `graphql-ws` (subscriptions-transport-ws) one.
//!
//! Written here rather than taken from async-graphql's `GraphQLWebSocket`,
//! which cannot close with the protocol's codes (it closes a refused
//! `connection_init` with 1002, never times out a silent handshake, and
//! replaces a subscription on a duplicate id), nor end a socket whose
//! credential expires or is revoked. Each socket is one task:
//!
//! - `connection_init` must come within the configured time (4408); a second
//!   one closes with 4429; a refused credential with 4403; `subscribe`
//!   before the handshake with 4401; a malformed message with 4400; a
//!   subscription id in use with 4409. Close reasons stay under 123 bytes.
//! - Messages over the size limit end the socket (1009); each socket holds at
//!   most so many subscriptions.
//! - The server pings every keepalive interval; a socket that sends nothing
//!   for three intervals is half-open and is dropped, as is one that cannot
//!   take a message within the send timeout.
//! - A token closes the socket when it expires (4403); a key when it is
//!   revoked, here or by another instance or the CLI (at once, through the
//!   store's revocation stream); a deleted or demoted user at the next
//!   recheck; the server stopping closes every socket with 1001.
//!
//! Subscriptions that would receive identical results (see
//! `graphql::shared`) join a group that executes once: the socket gets the
//! group's rendered payload and splices its own subscription id into the
//! message. Anything else executes for this socket alone.
//!
//! An idle socket is kept small, since there may be tens of thousands:
//! 1 KiB read buffer, a write buffer that is written out past 2 KiB, no
//! timer of its own but the token's expiry (keepalive and rechecks run on
//! the process's one ticker), and nothing of a database call held between
//! messages.

mod connection;
mod handover;
mod protocol;
mod session;

use axum::extract::FromRequestParts;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};

use self::connection::Connection;
use self::protocol::{LEGACY_WS, Protocol, TRANSPORT_WS};
use super::HttpState;
use super::admission::{Refusal, Ticket};
use super::graphql::error_response;
use crate::graphql::ClientAddr;
use crate::live::SocketGuard;

/// Upgrades `GET /graphql` to a GraphQL WebSocket.
pub async fn upgrade(state: HttpState, parts: &mut axum::http::request::Parts) -> Response {
    let upgrade = match WebSocketUpgrade::from_request_parts(parts, &state).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let limits = state.app.live_limits.clone();
    let upgrade = upgrade
        .protocols([TRANSPORT_WS, LEGACY_WS])
        // Small buffers: tungstenite's defaults allocate 128 KiB per socket
        // up front, which is most of an idle subscriber's cost. Its write
        // buffer keeps the capacity it once grew to, so it is written out as
        // soon as it passes 2 KiB (several results per write in a burst).
        .read_buffer_size(1024)
        .write_buffer_size(2 * 1024)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes);
    let protocol = match upgrade.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(TRANSPORT_WS) => Protocol::TransportWs,
        Some(LEGACY_WS) => Protocol::Legacy,
        _ => {
            return error_response(
                axum::http::StatusCode::BAD_REQUEST,
                "VALIDATION",
                "ask for the WebSocket subprotocol graphql-transport-ws (or the legacy graphql-ws)",
            );
        }
    };
    let address = parts.extensions.get::<ClientAddr>().and_then(|c| c.0);
    let ticket = match state.admission.admit(address) {
        Ok(t) => t,
        Err(Refusal::Full) => {
            metrics::counter!("rollcall_ws_refused_total", "reason" => "full").increment(1);
            let mut resp = error_response(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "this server holds as many live connections as it will; try again shortly",
            );
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
            return resp;
        }
        Err(Refusal::Address) => {
            metrics::counter!("rollcall_ws_refused_total", "reason" => "address").increment(1);
            return error_response(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "too many live connections from your address; close some first",
            );
        }
    };
    let guard = state.app.live.socket_opened();
    let pending = Box::new(Pending { state, protocol, ticket, guard });
    upgrade.on_upgrade(move |socket| (*pending).serve(socket))
}

/// What a socket needs once the upgrade is done.
///
/// Kept small on purpose, and so is the future [`Pending::serve`] returns:
/// axum spawns one task per socket whose state holds the callback and its
/// future for the socket's whole life, so every byte here is multiplied by
/// the number of open sockets. The callback captures one box; the
/// connection lives in another; the task holds the loop's own state.
struct Pending {
    state: HttpState,
    protocol: Protocol,
    ticket: Ticket,
    guard: SocketGuard,
}

impl Pending {
    fn serve(self, socket: WebSocket) -> impl std::future::Future<Output = ()> + Send + 'static {
        let Pending { state, protocol, ticket, guard } = self;
        let mut connection = Box::new(Connection::new(state, socket, protocol, ticket));
        async move {
            // The connection (and its hold on the store) ends before the guard.
            connection.run().await;
            drop(connection);
            drop(guard);
        }
    }
}
