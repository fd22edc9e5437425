//! Which subscriptions can share one execution (see `live::shared`).
//!
//! Two subscriptions get the same bytes for every result when they run the
//! same document with the same variables for callers whom every resolver
//! treats alike. The group key is therefore:
//!
//! - the document, normalised (comments, commas and runs of white space are
//!   insignificant in GraphQL), with the operation name and the variables;
//! - the caller's visibility class: every admin sees the same; anybody else
//!   is their own class (resolvers such as `User.email` and
//!   `User.registrations` treat a user's own record differently), with
//!   their role; a scanner key is its own class.
//!
//! Only subscriptions whose output does not depend on when they began are
//! shared: `checkIns` without `after` (it starts live, so a member that
//! joins a running group starts where the group is) and `eventStats` (a
//! newcomer gets the group's latest counters first). A `checkIns` that
//! resumes after a cursor given in a variable replays on its own, then
//! hands over to the group of the same subscription with that variable
//! `null` ([`SharedSubscription::resume`], `http::ws::handover`). A cursor
//! written into the document, fragments or directives at the root, or
//! anything else runs on its own, as before.

use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use async_graphql::{PathSegment, Pos, Request, Response, Value};

use super::live::interrupted_error;
use crate::auth::Principal;
use crate::domain::Role;
use crate::live::{GroupKind, Interrupted};

/// A subscription that may share its execution with identical ones.
#[derive(Debug, Clone)]
pub struct SharedSubscription {
    /// Identical for exactly the subscriptions whose output is identical.
    pub key: String,
    /// Whether every result matters, or only the latest.
    pub kind: GroupKind,
    /// Where the root field is in the document, for errors a member gets
    /// on its own (`LAGGED`).
    pos: Pos,
    /// The root field's response key (its alias, or name).
    response_key: String,
    /// For a `checkIns` that resumes after the cursor in this variable: it
    /// replays on its own, then joins the group `key`, which is that of the
    /// same subscription with the variable `null`.
    pub resume: Option<String>,
}

impl SharedSubscription {
    /// The subscription `request` as a shareable one, if it is one.
    pub fn of(request: &Request, principal: &Principal) -> Option<SharedSubscription> {
        let doc = async_graphql::parser::parse_query(&request.query).ok()?;
        if !doc.fragments.is_empty() {
            return None;
        }
        let op = match (&doc.operations, &request.operation_name) {
            (DocumentOperations::Single(op), _) => op,
            (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name.as_str())?,
            (DocumentOperations::Multiple(_), None) => return None,
        };
        if op.node.ty != OperationType::Subscription || !op.node.directives.is_empty() {
            return None;
        }
        let field = match op.node.selection_set.node.items.as_slice() {
            [item] => match &item.node {
                Selection::Field(field) => field,
                _ => return None,
            },
            _ => return None,
        };
        if !field.node.directives.is_empty() {
            return None;
        }
        let (mut resume, mut live_var) = (None, None);
        let kind = match field.node.name.node.as_str() {
            "eventStats" => GroupKind::Latest,
            "checkIns" => {
                // `after` replays from the subscriber's own cursor.
                if let Some((_, v)) = field.node.arguments.iter().find(|(n, _)| n.node.as_str() == "after") {
                    let value = v.node.clone().into_const_with(|var| {
                        let given = request.variables.get(&var).cloned();
                        let default = op
                            .node
                            .variable_definitions
                            .iter()
                            .find(|d| d.node.name.node == var)
                            .and_then(|d| d.node.default_value.as_ref().map(|v| v.node.clone()));
                        Ok::<_, ()>(given.or(default).unwrap_or(Value::Null))
                    });
                    // A variable prints as `$name` (the parser's value type
                    // is not exported).
                    let printed = v.node.to_string();
                    let var = printed
                        .strip_prefix('$')
                        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                        .map(str::to_owned);
                    if value != Ok(Value::Null) {
                        // Shared once caught up, if the cursor is a variable.
                        resume = Some(var.clone()?);
                    }
                    // Without a cursor, whether given as null or not at all.
                    live_var = var;
                }
                GroupKind::Every
            }
            _ => return None,
        };
        let mut variables = serde_json::to_value(&request.variables).ok()?;
        if let (Some(var), Some(vars)) = (&live_var, variables.as_object_mut()) {
            vars.insert(var.clone(), serde_json::Value::Null);
        }
        let variables = serde_json::to_string(&variables).ok()?;
        let key = format!(
            "{}\n{}\n{}\n{}",
            visibility_class(principal),
            request.operation_name.as_deref().unwrap_or_default(),
            normalise(&request.query),
            variables
        );
        Some(SharedSubscription {
            key,
            kind,
            pos: field.pos,
            response_key: field.node.response_key().node.to_string(),
            resume,
        })
    }

    /// The response a member that fell behind gets: the same as an
    /// unshared subscription's `LAGGED` error.
    pub fn lagged(&self, last_cursor: String) -> Response {
        let error = interrupted_error(Interrupted::Lagged { last_cursor })
            .into_server_error(self.pos)
            .with_path(vec![PathSegment::Field(self.response_key.clone())]);
        Response::from_errors(vec![error])
    }
}

/// Callers whom every resolver treats alike share a class.
fn visibility_class(principal: &Principal) -> String {
    match principal {
        Principal::User(u) if u.role == Role::Admin => "admin".to_owned(),
        Principal::User(u) => format!("user {} {:?}", u.id, u.role),
        Principal::Scanner { key, .. } => format!("key {}", key.id),
        Principal::Anonymous => "anonymous".to_owned(),
    }
}

/// Whether a space between `a` and `b` keeps two tokens apart (names,
/// numbers); next to punctuation it is insignificant.
fn separates(a: Option<char>, b: char) -> bool {
    let word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '"');
    a.is_some_and(word) && word(b)
}

/// The document with comments dropped and insignificant separators
/// (white space, commas) dropped or folded into one space; strings kept as
/// written.
fn normalise(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut chars = query.chars().peekable();
    let mut gap = false;
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                while chars.next_if(|&c| c != '\n' && c != '\r').is_some() {}
                gap = true;
            }
            c if c.is_whitespace() || c == ',' || c == '\u{feff}' => gap = true,
            '"' => {
                if gap && separates(out.chars().next_back(), '"') {
                    out.push(' ');
                }
                gap = false;
                out.push('"');
                let block = chars.next_if_eq(&'"').is_some();
                if block && chars.next_if_eq(&'"').is_none() {
                    out.push('"'); // the empty string ""
                    continue;
                }
                if block {
                    out.push_str("\"\"");
                }
                let mut quotes = 0;
                while let Some(c) = chars.next() {
                    out.push(c);
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                out.push(n);
                            }
                            quotes = 0;
                        }
                        '"' if !block => break,
                        '"' => {
                            quotes += 1;
                            if quotes == 3 {
                                break;
                            }
                        }
                        _ => quotes = 0,
                    }
                }
            }
            c => {
                if gap && separates(out.chars().next_back(), c) {
                    out.push(' ');
                }
                gap = false;
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn request(query: &str, variables: serde_json::Value) -> Request {
        Request::new(query).variables(async_graphql::Variables::from_json(variables))
    }

    fn key(query: &str, variables: serde_json::Value) -> Option<String> {
        SharedSubscription::of(&request(query, variables), &Principal::Anonymous).map(|s| s.key)
    }

    #[test]
    fn layout_and_comments_do_not_split_a_group() {
        let a = key("subscription($e: ID!) { checkIns(eventId: $e) { cursor user { name } } }", json!({"e": "x"}));
        let b = key(
            "subscription ($e: ID!)  {\n  # the feed\n  checkIns(eventId: $e) {\n cursor,\n user { name } }\n}",
            json!({"e": "x"}),
        );
        assert!(a.is_some());
        assert_eq!(a, b);
    }

    #[test]
    fn variables_strings_and_fields_do_split_groups() {
        let q = "subscription($e: ID!) { checkIns(eventId: $e) { cursor } }";
        assert_ne!(key(q, json!({"e": "x"})), key(q, json!({"e": "y"})));
        assert_ne!(
            key(r#"subscription { checkIns(eventId: "a  b") { cursor } }"#, json!({})),
            key(r#"subscription { checkIns(eventId: "a b") { cursor } }"#, json!({})),
        );
        assert_ne!(
            key(q, json!({"e": "x"})),
            key("subscription($e: ID!) { checkIns(eventId: $e) { seq: cursor } }", json!({"e": "x"}))
        );
    }

    #[test]
    fn a_replay_from_a_cursor_in_a_variable_joins_the_live_group_once_caught_up() {
        let q = "subscription($e: ID!, $a: String) { checkIns(eventId: $e, after: $a) { cursor } }";
        let of = |vars| SharedSubscription::of(&request(q, vars), &Principal::Anonymous).unwrap();
        let live = of(json!({"e": "x"}));
        assert_eq!(live.resume, None);
        assert_eq!(of(json!({"e": "x", "a": null})).key, live.key);
        let resumed = of(json!({"e": "x", "a": "000000000005"}));
        assert_eq!(resumed.resume.as_deref(), Some("a"));
        assert_eq!(resumed.key, live.key, "the group it hands over to is the live one");
        assert_eq!(of(json!({"e": "x", "a": ""})).resume.as_deref(), Some("a"));
        let defaulted = r#"subscription($a: String = "") { checkIns(eventId: "x", after: $a) { cursor } }"#;
        assert_eq!(
            SharedSubscription::of(&request(defaulted, json!({})), &Principal::Anonymous).unwrap().resume.as_deref(),
            Some("a")
        );
    }

    #[test]
    fn replays_and_other_operations_run_on_their_own() {
        assert!(key(r#"subscription { checkIns(eventId: "x", after: "5") { cursor } }"#, json!({})).is_none());
        assert!(key(r#"subscription { myCheckIns { cursor } }"#, json!({})).is_none());
        assert!(key(r#"{ me { name } }"#, json!({})).is_none());
        assert!(key(r#"subscription { checkIns(eventId: "x") @include(if: true) { cursor } }"#, json!({})).is_none());
        assert!(key(r#"subscription { eventStats(eventId: "x") { checkedIn } }"#, json!({})).is_some());
    }
}
