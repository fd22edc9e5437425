//! The wire of both GraphQL WebSocket protocols: which one a client asked
//! for, the messages it sends, how a socket is closed, and the text of the
//! messages the server sends (serialised, or spliced around a payload a
//! whole group shares).

use serde::Deserialize;
use serde_json::Value;

use crate::live::Rendered;

/// Close reasons stay under the 123 bytes the WebSocket protocol allows.
pub(super) const MAX_REASON: usize = 120;

pub(super) const TRANSPORT_WS: &str = "graphql-transport-ws";
pub(super) const LEGACY_WS: &str = "graphql-ws";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// `graphql-transport-ws` (the graphql-ws library).
    TransportWs,
    /// `graphql-ws` (the older subscriptions-transport-ws).
    Legacy,
}

/// A message from the client, of either protocol.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {},
    #[serde(alias = "start")]
    Subscribe {
        id: String,
        payload: Value,
    },
    #[serde(alias = "stop")]
    Complete {
        id: String,
    },
    ConnectionTerminate {},
}

/// Why a socket ends.
pub(super) struct Close {
    pub(super) code: u16,
    pub(super) reason: String,
}

impl Close {
    pub(super) fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON {
            let mut cut = MAX_REASON - 3;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push_str("...");
        }
        Close { code, reason }
    }
}

/// Renders a group's result once: the `next` payload, and for a refusal
/// (errors and no data) the `error` payload.
pub(super) fn render(response: async_graphql::Response) -> Rendered {
    const INTERNAL: &str = r#"{"data":null,"errors":[{"message":"internal error"}]}"#;
    let refusal = (response.is_err() && response.data == async_graphql::Value::Null)
        .then(|| serde_json::to_string(&response.errors).unwrap_or_else(|_| "[]".to_owned()).into_boxed_str());
    let payload = serde_json::to_string(&response).unwrap_or_else(|_| INTERNAL.to_owned());
    Rendered { payload: payload.into_boxed_str(), refusal }
}

/// A server message around an already serialised payload: the shared bytes
/// with this subscription's id spliced in. The same text as [`Outgoing`].
pub(super) fn spliced(kind: &str, id: &str, payload: &str) -> String {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".to_owned());
    let mut text = String::with_capacity(payload.len() + id.len() + kind.len() + 32);
    text.push_str(r#"{"type":""#);
    text.push_str(kind);
    text.push_str(r#"","id":"#);
    text.push_str(&id);
    text.push_str(r#","payload":"#);
    text.push_str(payload);
    text.push('}');
    text
}

/// A server message, serialised straight from the response (no
/// intermediate JSON value).
#[derive(serde::Serialize)]
pub(super) struct Outgoing<'a, T: serde::Serialize> {
    #[serde(rename = "type")]
    pub(super) kind: &'a str,
    pub(super) id: &'a str,
    pub(super) payload: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spliced_messages_read_like_serialised_ones() {
        let payload = r#"{"data":{"x":1}}"#;
        let value: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
        let whole = serde_json::to_string(&Outgoing { kind: "next", id: "a\"b", payload: &value }).unwrap_or_default();
        assert_eq!(spliced("next", "a\"b", payload), whole);
    }
}
