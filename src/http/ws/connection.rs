//! One upgraded socket: the handshake, its subscriptions and its writes,
//! until it closes (see the module above for the protocol's rules).
//!
//! Over 400 lines, and kept whole: it is one state machine, a `select!`
//! loop and the handlers of what it selects, all on the one `Connection`.
//! Who the socket speaks for is `session.rs`; a resumed subscription's
//! hand-over to its group is `handover.rs`.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::parser::types::OperationType;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{FutureExt, SinkExt, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_stream::StreamMap;

use super::handover;
use super::protocol::{ClientMessage, Close, Outgoing, Protocol, render, spliced};
use super::session::Session;
use crate::graphql::ClientAddr;
use crate::graphql::shared::SharedSubscription;
use crate::http::HttpState;
use crate::http::admission::{Allowance, Ticket};
use crate::http::graphql::{operation_type, timed_out};
use crate::live::{CursorProbe, Frame, MemberItem};
use crate::state::AppState;

/// How often a live socket's credential is checked again (for revocations
/// and deletions made by another instance).
const RECHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Most results queued before one write to the socket.
const MAX_WRITE_BATCH: usize = 64;
/// What an operation's stream yields.
pub(super) enum Outcome {
    /// A result executed for this socket alone.
    Response(Box<async_graphql::Response>),
    /// A result rendered once for the subscription's group.
    Shared(Arc<Frame>),
    /// No more results.
    End,
}

/// An operation's results, then [`Outcome::End`].
type Results = Pin<Box<dyn Stream<Item = Outcome> + Send>>;

pub(super) struct Connection {
    state: HttpState,
    socket: WebSocket,
    protocol: Protocol,
    session: Option<Session>,
    subscriptions: StreamMap<String, Results>,
    /// Subscriptions that have sent a result (a later error is a `next`).
    started: HashSet<String>,
    last_heard: Instant,
    /// When the credential was last checked again.
    last_recheck: Instant,
    /// This socket's place under the process's caps.
    ticket: Ticket,
    /// Operations it may still start.
    allowance: Allowance,
}

impl Connection {
    pub(super) fn new(state: HttpState, socket: WebSocket, protocol: Protocol, ticket: Ticket) -> Self {
        let allowance = state.admission.allowance();
        Connection {
            state,
            socket,
            protocol,
            session: None,
            subscriptions: StreamMap::new(),
            started: HashSet::new(),
            last_heard: Instant::now(),
            last_recheck: Instant::now(),
            ticket,
            allowance,
        }
    }

    fn app(&self) -> &AppState {
        &self.state.app
    }

    fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.app().live_limits.send_timeout_secs.max(1))
    }

    /// Serves the socket until it closes. By reference, not by value: an
    /// `async fn` keeps a by-value argument twice in its future.
    pub(super) async fn run(&mut self) {
        let close = match self.serve().await {
            Ok(close) => close,
            // The client went away or stopped taking messages: nothing to tell it.
            Err(Gone) => return,
        };
        let frame = CloseFrame { code: close.code, reason: Utf8Bytes::from(close.reason) };
        // Short: the server may be stopping, and the client may not be reading.
        let wait = self.send_timeout().min(Duration::from_secs(2));
        let _ = tokio::time::timeout(wait, self.socket.send(Message::Close(Some(frame)))).await;
    }

    async fn serve(&mut self) -> Result<Close, Gone> {
        let limits = self.app().live_limits.clone();
        let keepalive = Duration::from_secs(limits.keepalive_secs.max(1));
        let mut ticks = self.app().live.keepalive(keepalive);
        let mut revocations = self.app().live.revocations();
        let mut stopping = self.app().live.stopping();
        // The handshake's deadline until it is done; then the token's expiry.
        let mut deadline = Some(Box::pin(tokio::time::sleep(Duration::from_secs(limits.init_timeout_secs))));
        loop {
            tokio::select! {
                msg = self.socket.recv() => {
                    let msg = match msg {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => return Ok(Self::read_error(e)),
                        None => return Err(Gone),
                    };
                    self.last_heard = Instant::now();
                    let handshaking = self.session.is_none();
                    // Boxed, here and below: the database calls behind them are
                    // large futures, and an idle socket's task would otherwise
                    // carry their space all its life.
                    if let Some(close) = Box::pin(self.on_message(msg)).await? {
                        return Ok(close);
                    }
                    if handshaking && let Some(session) = &self.session {
                        deadline = session.expires.map(|at| Box::pin(sleep_until(at)));
                    }
                }
                Some((id, outcome)) = self.subscriptions.next(), if !self.subscriptions.is_empty() => {
                    self.on_result(id, outcome).await?;
                    // Whatever else is ready goes out in the same write.
                    for _ in 0..MAX_WRITE_BATCH {
                        let Some(Some((id, outcome))) = self.subscriptions.next().now_or_never() else { break };
                        self.on_result(id, outcome).await?;
                    }
                    self.flush().await?;
                }
                () = until(&mut deadline) => {
                    return Ok(if self.session.is_none() {
                        Close::new(4408, "Connection initialisation timeout")
                    } else {
                        Close::new(4403, "Forbidden: token expired")
                    });
                }
                Ok(()) = ticks.changed() => {
                    if self.last_heard.elapsed() > keepalive * 3 {
                        tracing::debug!("closing a half-open WebSocket");
                        return Err(Gone);
                    }
                    let msg = match self.protocol {
                        Protocol::TransportWs => r#"{"type":"ping"}"#,
                        Protocol::Legacy => r#"{"type":"ka"}"#,
                    };
                    self.send(Message::Text(Utf8Bytes::from_static(msg))).await?;
                    // A WebSocket-level ping too: browsers answer it by themselves.
                    self.send(Message::Ping(Default::default())).await?;
                    if self.session.is_some() && self.last_recheck.elapsed() >= RECHECK_INTERVAL {
                        self.last_recheck = Instant::now();
                        if let Some(close) = Box::pin(self.recheck()).await {
                            return Ok(close);
                        }
                    }
                }
                revoked = revocations.recv(), if self.session.as_ref().is_some_and(|s| s.key.is_some()) => {
                    let mine = self.session.as_ref().and_then(|s| s.key);
                    match revoked {
                        Ok(key) if Some(key) == mine => return Ok(Close::new(4403, "Forbidden: API key revoked")),
                        Ok(_) => {}
                        // Missed some: check the key itself.
                        Err(_) => if let Some(close) = Box::pin(self.recheck()).await { return Ok(close) },
                    }
                }
                _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                    return Ok(Close::new(1001, "server shutting down"));
                }
            }
        }
    }

    fn read_error(e: axum::Error) -> Close {
        let text = e.to_string();
        if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
            Close::new(1009, "message too big")
        } else {
            Close::new(4400, "unreadable WebSocket message")
        }
    }

    async fn on_message(&mut self, msg: Message) -> Result<Option<Close>, Gone> {
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => return Ok(Some(Close::new(4400, "Invalid message: binary frames are not used"))),
            Message::Ping(_) | Message::Pong(_) => return Ok(None),
            Message::Close(_) => return Err(Gone),
        };
        let msg: ClientMessage = match serde_json::from_str(text.as_str()) {
            Ok(m) => m,
            Err(e) => return Ok(Some(Close::new(4400, format!("Invalid message: {e}")))),
        };
        match msg {
            ClientMessage::ConnectionInit { payload } => {
                if self.session.is_some() {
                    return Ok(Some(Close::new(4429, "Too many initialisation requests")));
                }
                match Session::open(&self.state.app, payload.unwrap_or(Value::Null)).await {
                    Ok(session) => {
                        if let Some(who) = session.principal_id()
                            && !self.ticket.sign_in(who)
                        {
                            metrics::counter!("rollcall_ws_refused_total", "reason" => "principal").increment(1);
                            return Ok(Some(Close::new(1008, "too many live connections for this account")));
                        }
                        self.session = Some(session);
                        self.send_json(&json!({"type": "connection_ack"})).await?;
                        Ok(None)
                    }
                    Err(close) => {
                        if self.protocol == Protocol::Legacy {
                            let error = json!({"type": "connection_error", "payload": {"message": close.reason}});
                            self.send_json(&error).await?;
                        }
                        Ok(Some(close))
                    }
                }
            }
            ClientMessage::Ping { payload } => {
                let mut pong = json!({"type": "pong"});
                if let Some(p) = payload {
                    pong["payload"] = p;
                }
                self.send_json(&pong).await?;
                Ok(None)
            }
            ClientMessage::Pong {} => Ok(None),
            ClientMessage::Subscribe { id, payload } => self.subscribe(id, payload).await,
            ClientMessage::Complete { id } => {
                self.subscriptions.remove(&id);
                self.started.remove(&id);
                if self.protocol == Protocol::Legacy {
                    self.send_json(&json!({"type": "complete", "id": id})).await?;
                }
                Ok(None)
            }
            ClientMessage::ConnectionTerminate {} => Ok(Some(Close::new(1000, "terminated"))),
        }
    }

    async fn subscribe(&mut self, id: String, payload: Value) -> Result<Option<Close>, Gone> {
        let Some(session) = &self.session else {
            return Ok(Some(Close::new(4401, "Unauthorized")));
        };
        if self.subscriptions.contains_key(&id) {
            return Ok(Some(Close::new(4409, format!("Subscriber for {id} already exists"))));
        }
        let request: async_graphql::Request = match serde_json::from_value(payload) {
            Ok(r) => r,
            Err(e) => return Ok(Some(Close::new(4400, format!("Invalid subscribe payload: {e}")))),
        };
        let refusal = if self.subscriptions.len() >= self.app().live_limits.max_subscriptions {
            Some(format!("this socket already holds {} subscriptions; complete one first", self.subscriptions.len()))
        } else if !self.allowance.take() {
            Some(format!(
                "this socket started more than {} operations in a minute; slow down",
                self.app().live_limits.max_operations_per_minute
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            let error = json!([{ "message": message, "extensions": {"code": "RATE_LIMITED"} }]);
            self.send_json(&json!({"type": "error", "id": id, "payload": error})).await?;
            return Ok(None);
        }
        let end = futures_util::stream::once(async { Outcome::End });
        let stream: Results = match SharedSubscription::of(&request, &session.principal) {
            Some(shared) => {
                let (schema, principal) = (self.state.schema.clone(), session.principal.clone());
                // One that resumes after a cursor replays on its own; the
                // group runs the same subscription live.
                let (live, replay) = match &shared.resume {
                    None => (request, None),
                    Some(var) => {
                        let live = handover::live_request(&request, var);
                        let probe = Arc::new(CursorProbe::default());
                        let own = request.data(principal.clone()).data(ClientAddr(self.ticket.address()));
                        (live, Some((schema.execute_stream(own.data(probe.clone())).boxed(), probe)))
                    }
                };
                let members = self.app().live.groups().join(shared.key.clone(), shared.kind, move |probe| {
                    schema.execute_stream(live.data(principal).data(probe)).map(render)
                });
                let lag = Arc::new(shared);
                match replay {
                    Some((replay, probe)) => Box::pin(handover::resumed(replay, probe, members, lag).chain(end)),
                    None => Box::pin(
                        members
                            .map(move |item| match item {
                                MemberItem::Frame(frame) => Outcome::Shared(frame),
                                MemberItem::Lagged { last_cursor } => {
                                    Outcome::Response(Box::new(lag.lagged(last_cursor)))
                                }
                            })
                            .chain(end),
                    ),
                }
            }
            None if operation_type(&request) == Some(OperationType::Query) => {
                // A query answers once, within the same time limit as over HTTP.
                let request = request.data(session.principal.clone()).data(ClientAddr(self.ticket.address()));
                let (schema, limit) = (self.state.schema.clone(), self.app().limits.request_timeout());
                let answer = futures_util::stream::once(async move {
                    let response = tokio::time::timeout(limit, schema.execute(request))
                        .await
                        .unwrap_or_else(|_| async_graphql::Response::from_errors(vec![timed_out(limit)]));
                    Outcome::Response(Box::new(response))
                });
                Box::pin(answer.chain(end))
            }
            None => {
                let request = request.data(session.principal.clone()).data(ClientAddr(self.ticket.address()));
                let results = self.state.schema.execute_stream(request);
                Box::pin(results.map(|r| Outcome::Response(Box::new(r))).chain(end))
            }
        };
        self.subscriptions.insert(id, stream);
        Ok(None)
    }

    async fn on_result(&mut self, id: String, outcome: Outcome) -> Result<(), Gone> {
        let kind = match self.protocol {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        };
        let started = self.started.contains(&id);
        let text = match outcome {
            Outcome::End => {
                // No more results: the operation is complete.
                self.subscriptions.remove(&id);
                self.started.remove(&id);
                return self.send_json(&json!({"type": "complete", "id": id})).await;
            }
            Outcome::Response(response)
                if !started && response.is_err() && response.data == async_graphql::Value::Null =>
            {
                // Refused before it started (validation, permissions): one
                // `error`, which ends the operation.
                self.subscriptions.remove(&id);
                let payload = serde_json::to_value(&response.errors).unwrap_or(Value::Null);
                return self.send_json(&json!({"type": "error", "id": id, "payload": payload})).await;
            }
            Outcome::Shared(frame) if !started && frame.refusal.is_some() => {
                self.subscriptions.remove(&id);
                let errors = frame.refusal.as_deref().unwrap_or("[]");
                return self.send(Message::Text(spliced("error", &id, errors).into())).await;
            }
            Outcome::Response(response) => {
                metrics::counter!("rollcall_ws_own_results_total").increment(1);
                serde_json::to_string(&Outgoing { kind, id: &id, payload: &response })
                    .unwrap_or_else(|_| r#"{"type":"error","payload":[{"message":"internal error"}]}"#.to_owned())
            }
            Outcome::Shared(frame) => {
                self.app().live.groups().delivered();
                spliced(kind, &id, &frame.payload)
            }
        };
        if !started {
            self.started.insert(id);
        }
        // Queued; the caller flushes once it has taken every ready result.
        let timeout = self.send_timeout();
        Self::bounded(timeout, self.socket.feed(Message::Text(text.into()))).await
    }

    /// Checks the socket's credential again: a deleted user, a revoked key.
    async fn recheck(&mut self) -> Option<Close> {
        self.session.as_ref()?.recheck(&self.state.app).await
    }

    async fn send_json(&mut self, value: &Value) -> Result<(), Gone> {
        self.send(Message::Text(value.to_string().into())).await
    }

    async fn send(&mut self, msg: Message) -> Result<(), Gone> {
        let timeout = self.send_timeout();
        Self::bounded(timeout, self.socket.send(msg)).await
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        let timeout = self.send_timeout();
        Self::bounded(timeout, self.socket.flush()).await
    }

    async fn bounded(
        timeout: Duration,
        fut: impl std::future::Future<Output = Result<(), axum::Error>>,
    ) -> Result<(), Gone> {
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                tracing::info!("dropping a WebSocket client that stopped reading");
                Err(Gone)
            }
        }
    }
}

/// Waits for the deadline, if there is one; forever otherwise.
async fn until(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(d) => d.await,
        None => std::future::pending().await,
    }
}

/// The client is gone, or cannot be written to.
struct Gone;

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an `async fn` of one argument returns.
    fn future_size<A, F: std::future::Future>(_: fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A socket's task holds its `run` future for its whole life, idle or
    /// not: keep what it carries between messages small (database calls are
    /// boxed, and only while they run).
    #[test]
    fn an_idle_socket_task_is_small() {
        let run = future_size(Connection::run);
        let serve = {
            fn size<A, B, F>(_: fn(A, B) -> F) -> usize {
                std::mem::size_of::<F>()
            }
            size(super::super::Pending::serve)
        };
        let connection = std::mem::size_of::<Connection>();
        println!(
            "Connection {connection} bytes (boxed), its run future {run} bytes, the socket's future {serve} bytes"
        );
        assert!(run < 2 * 1024, "the socket task's future grew to {run} bytes");
        // The connection is boxed, not in the future (an `async fn` taking
        // it by value would hold it twice).
        assert!(serve < run + 256, "the socket's future ({serve} bytes) holds more than the loop ({run} bytes)");
        // Every socket holds the handlers' state: one pointer.
        assert_eq!(std::mem::size_of::<HttpState>(), std::mem::size_of::<usize>());
    }
}
