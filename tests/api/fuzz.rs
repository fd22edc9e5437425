//! Generated hostile input against the real server: GraphQL operations that
//! are valid, nearly valid and absurd (deep, wide, aliased, wrong types, huge
//! strings), arbitrary JSON bodies, and WebSocket frame sequences. Every
//! case must get an answer that is not a 5xx (503 is a designed answer), no
//! server thread may panic, every socket must be gone at the end, and the
//! server's RSS at rest must stay within 10 % of what it was in the first
//! half of the cases (the lowest readings of each half are compared). The server is the real `rollcall serve` binary
//! on embedded SurrealKV, in a process of its own, so the RSS is the
//! server's alone.
//!
//! The cases come from a fixed seed, so a failure is reproducible: the
//! failing case is printed. `ROLLCALL_FUZZ_CASES` sets how many (10,000 by
//! default, plus the WebSocket sequences).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt, stream};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRng, TestRunner};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{PASSWORD, ServerProcess, run_cli};

/// How long the server is left quiet before its RSS is read.
const SETTLE: Duration = Duration::from_millis(1500);

/// The server's resident memory at rest, in KiB, with that reading's split
/// into anonymous and file-backed memory: the lowest of readings taken over
/// a quiet moment, so that background work (a flush, the allocator
/// returning pages on its own schedule) caught in one reading does not
/// count.
async fn rss_at_rest(server: &ServerProcess) -> (u64, String) {
    tokio::time::sleep(SETTLE).await;
    let mut lowest = rss_reading(server);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reading = rss_reading(server);
        if reading.0 < lowest.0 {
            lowest = reading;
        }
    }
    lowest
}

/// One reading of `/proc/PID/status`: the whole RSS in KiB, and its split
/// into anonymous memory (what the server allocated) and file-backed (its
/// binary's pages).
fn rss_reading(server: &ServerProcess) -> (u64, String) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().trim_end_matches(" kB").to_owned())
    };
    let total = field("VmRSS:").and_then(|v| v.parse().ok()).unwrap_or(0);
    let split = format!(
        "anon {} KiB, file {} KiB",
        field("RssAnon:").unwrap_or_default(),
        field("RssFile:").unwrap_or_default()
    );
    (total, split)
}

/// Root fields with arguments of the right shape, and of wrong ones.
const ROOTS: &[&str] = &[
    "me { id name email bleUuid devices { identifier } registrations { edges { node { id } } } }",
    "events(first: FIRST) { edges { node { id name registrations(first: FIRST) { nodes { user { id name } } } } } }",
    "event(id: ID) { id name policy { minRssi } rederivation { pending } }",
    "users(first: FIRST, after: STR) { nodes { id email } }",
    "activeEvents { id organizer { id email } }",
    "apiKeys { id name }",
    "attendance(eventId: ID, first: FIRST) { nodes { dwellSeconds user { name } } }",
    "userByEmail(email: STR) { id }",
    "userByBleUuid(bleUuid: STR) { id }",
    "scanners(staleAfterSeconds: INT) { id stale }",
    "registeredDevices(eventId: ID, first: FIRST) { version }",
    "storedBatches(batchIds: [STR, ID, STR]) { storeEpoch missing }",
    "__typename",
    "__schema { types { name fields { name } } }",
    "__type(name: STR) { name }",
];

const MUTATIONS: &[&str] = &[
    "logIn(email: STR, password: STR) { token }",
    "signUp(email: STR, name: STR, password: STR) { token }",
    "createEvent(input: { name: STR, startsAt: STR, endsAt: STR, policy: { departureGapSeconds: INT, graceSeconds: INT, minRssi: INT } }) { id }",
    "updateEvent(id: ID, input: { name: STR }) { id }",
    "submitSightings(batch: { batchId: STR, sightings: [{ bleUuid: STR, seenAt: STR, rssi: INT }] }) { accepted }",
    "submitSightings(batch: { batchId: STR, resent: INT, sightings: [] }) { replayed storeEpoch }",
    "registerForEvent(eventId: ID) { id }",
    "recordAttendance(eventId: ID, userId: ID, at: STR) { user { id } }",
    "createApiKey(name: STR) { secret }",
    "addDeviceIdentifier(identifier: STR) { identifier }",
    "importAttendees(csv: STR) { registered }",
    "logOut",
];

/// A scalar that may or may not fit where it goes.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-1000i64..1000).prop_map(|n| n.to_string()),
        "[a-zA-Z0-9 @.:-]{0,40}".prop_map(|s| format!("{s:?}")),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("1e308".to_owned()),
        Just("\"2030-05-01T09:00:00Z\"".to_owned()),
        Just("\"6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a\"".to_owned()),
        (1usize..20_000).prop_map(|n| format!("{:?}", "x".repeat(n))),
        Just("[1, \"two\", null]".to_owned()),
        Just("{ a: 1 }".to_owned()),
        Just("$nope".to_owned()),
    ]
}

/// Fills a template's placeholders with generated scalars.
fn fill(template: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(scalar(), 8).prop_map(move |values| {
        let mut out = template.to_owned();
        for (i, hole) in ["FIRST", "ID", "STR", "INT", "FIRST", "ID", "STR", "INT"].iter().enumerate() {
            out = out.replacen(hole, &values[i], 1);
        }
        for hole in ["FIRST", "ID", "STR", "INT"] {
            out = out.replace(hole, &values[0]);
        }
        out
    })
}

/// One operation: a query or mutation of aliased root fields, perhaps
/// nested absurdly deep, perhaps with its text damaged.
fn operation() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        3 => prop::sample::select(ROOTS).prop_flat_map(fill).prop_map(|f| ("query", f)),
        2 => prop::sample::select(MUTATIONS).prop_flat_map(fill).prop_map(|f| ("mutation", f)),
    ];
    let ops = (field, 1usize..60, 0usize..40, any::<bool>()).prop_map(|((kind, f), aliases, depth, fragment)| {
        let mut body: String = (0..aliases).map(|i| format!("a{i}: {f} ")).collect();
        if depth > 0 {
            let nest =
                "me { registrations { edges { node { event { registrations { edges { node { user { ".repeat(depth);
            body.push_str(&format!("deep: {nest} id {} ", "} } } } } } } } } ".repeat(depth)));
        }
        if fragment {
            format!(
                "{kind} {{ ...F }} fragment F on {} {{ {body} }}",
                if kind == "query" { "Query" } else { "Mutation" }
            )
        } else {
            format!("{kind} {{ {body} }}")
        }
    });
    // Damage: cut it, or drop or repeat a character somewhere.
    (ops, prop::option::of((any::<prop::sample::Index>(), 0u8..3))).prop_map(|(op, damage)| match damage {
        None => op,
        Some((at, how)) => {
            let i = at.index(op.len().max(1));
            let i = (0..=i).rev().find(|i| op.is_char_boundary(*i)).unwrap_or(0);
            match how {
                0 => op[..i].to_owned(),
                1 => format!("{}{}", &op[..i], &op[i..].chars().skip(1).collect::<String>()),
                _ => format!("{}{{{{{{{}", &op[..i], &op[i..]),
            }
        }
    })
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,30}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::hash_map("[a-zA-Z]{1,8}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An HTTP request: a body (maybe not GraphQL, maybe not JSON) and a credential.
#[derive(Debug, Clone)]
struct Case {
    body: Vec<u8>,
    content_type: Option<&'static str>,
    credential: u8,
}

fn http_case() -> impl Strategy<Value = Case> {
    let body = prop_oneof![
        6 => (operation(), prop::option::of(json_value()), prop::option::of(".{0,20}")).prop_map(|(q, vars, name)| {
            let mut b = json!({ "query": q });
            if let Some(v) = vars { b["variables"] = v; }
            if let Some(n) = name { b["operationName"] = Value::from(n); }
            b.to_string().into_bytes()
        }),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..512),
        // Past the body limit: 413, or the connection closed while sending.
        1 => (1_100_000usize..1_300_000).prop_map(|n| format!("{{\"query\": \"{}\"}}", "x".repeat(n)).into_bytes()),
    ];
    let content_type = prop::sample::select(vec![
        Some("application/json"),
        Some("application/json"),
        Some("application/graphql-response+json"),
        Some("text/plain"),
        None,
    ]);
    (body, content_type, 0u8..4).prop_map(|(body, content_type, credential)| Case { body, content_type, credential })
}

/// A WebSocket frame a client might send, good or bad.
fn frame() -> impl Strategy<Value = Message> {
    prop_oneof![
        3 => operation().prop_map(|q| Message::text(json!({ "type": "subscribe", "id": "1", "payload": { "query": q } }).to_string())),
        1 => operation().prop_map(|q| Message::text(json!({ "type": "start", "id": "x", "payload": { "query": q } }).to_string())),
        1 => json_value().prop_map(|v| Message::text(v.to_string())),
        1 => json_value().prop_map(|p| Message::text(json!({ "type": "connection_init", "payload": p }).to_string())),
        1 => ".{0,10}".prop_map(|id| Message::text(json!({ "type": "complete", "id": id }).to_string())),
        1 => Just(Message::text(r#"{"type":"ping"}"#)),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Message::binary),
        1 => (60_000usize..80_000).prop_map(|n| Message::text("x".repeat(n))),
    ]
}

/// How many times the server's log says a thread panicked.
fn panics_in(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches("panicked at").count()
}

/// The real `rollcall serve` on embedded SurrealKV, with an admin, an active
/// event and an API key: the server in a process of its own, so its RSS is
/// its own.
async fn start_server(dir: &std::path::Path) -> (ServerProcess, String, String) {
    let db = format!("surrealkv://{}", dir.join("data").display());
    let (ok, _, err) = run_cli(
        &["admin", "create", "--email", "root@example.org", "--name", "Root", "--password-stdin", "--db", &db],
        &format!("{PASSWORD}\n"),
    );
    assert!(ok, "{err}");
    let server = ServerProcess::start_logging(&db, &dir.join("server.log")).await;
    let login = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }";
    let token = server.ok(None, login, json!({ "e": "root@example.org", "p": PASSWORD })).await["logIn"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let bearer = format!("Bearer {token}");
    let create = "mutation($i: CreateEventInput!) { createEvent(input: $i) { id } }";
    let input =
        json!({ "i": { "name": "Fuzzed", "startsAt": "2030-05-01T09:00:00Z", "endsAt": "2030-05-01T17:00:00Z" } });
    let event = server.ok(Some(&bearer), create, input).await["createEvent"]["id"].as_str().expect("id").to_owned();
    server.ok(Some(&bearer), "mutation($id: ID!) { activateEvent(id: $id) { state } }", json!({ "id": event })).await;
    let key = server.ok(Some(&bearer), "mutation { createApiKey(name: \"door\") { secret } }", json!({})).await
        ["createApiKey"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    (server, token, key)
}

/// Sends one chunk of HTTP cases, 8 at a time; returns each case's status
/// (or the error that stood in for one) with the case.
async fn send_cases(
    http: &reqwest::Client,
    graphql: &str,
    credentials: &[Option<String>],
    chunk: Vec<Case>,
) -> Vec<(reqwest::Result<u16>, Case)> {
    stream::iter(chunk)
        .map(|case| {
            let mut req = http.post(graphql).body(case.body.clone());
            if let Some(ct) = case.content_type {
                req = req.header("content-type", ct);
            }
            if let Some(c) = &credentials[usize::from(case.credential)] {
                req = req.header("authorization", c);
            }
            async move { (req.send().await.map(|r| r.status().as_u16()), case) }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// Plays WebSocket frame sequences, 8 sockets at a time: connect, send the
/// handshake and the frames, read what comes for a moment, leave.
async fn play_sequences(ws_url: &str, token: &str, sequences: Vec<Vec<Message>>) {
    stream::iter(sequences)
        .for_each_concurrent(8, |seq| async move {
            let mut req = ws_url.into_client_request().unwrap();
            req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(req).await else { return };
            let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
            let _ = ws.send(Message::text(init.to_string())).await;
            for msg in seq {
                if ws.send(msg).await.is_err() {
                    break;
                }
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(200), async { while ws.next().await.is_some() {} }).await;
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_hostile_input_never_panics_or_fails_the_server() {
    let cases: usize = std::env::var("ROLLCALL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let (server, token, key) = start_server(dir.path()).await;
    let http = reqwest::Client::new();
    let graphql = format!("{}/graphql", server.base);
    let ws_url = graphql.replacen("http://", "ws://", 1);
    let credentials =
        [None, Some(format!("Bearer {token}")), Some("Bearer not.a.token".to_owned()), Some(format!("ApiKey {key}"))];

    let mut runner =
        TestRunner::new_with_rng(Config::default(), TestRng::deterministic_rng(Config::default().rng_algorithm));
    let strategy = http_case();
    let frames = prop::collection::vec(frame(), 1..8);
    // Every RSS figure is read at rest (`rss_at_rest`), so that none catches
    // memory in flight (a password hash being computed, a request's buffers)
    // that another does not: the setup above hashed passwords too.
    let (rss_ready, _) = rss_at_rest(&server).await;
    // Each chunk sends its HTTP cases while WebSocket sequences (one per 20
    // cases) play beside them, and the RSS is read at rest after every
    // 1,000 cases from 2,000 on. Readings at rest do not come back to one
    // figure. With transparent huge pages on (before src/memory.rs turned
    // them off), one run of 25,000 cases read 34.7-47.5 MB of anonymous
    // memory across ten readings, in no order, which is wider than the
    // bound: one reading against another failed by chance (CI once, and 7
    // of 17 runs here). With them off, ten readings spanned 8.7-12.2 MB of RSS
    // in each of three runs. A leak raises every reading after it, the
    // lowest too: so the lowest of the second half is held within 10 % of
    // the lowest of the first.
    let mut first_half = Vec::new();
    let mut second_half = Vec::new();
    let mut rss_peak = rss_ready;
    let mut failures = Vec::new();
    let mut answered = 0usize;
    let mut played = 0usize;
    for done in (0..cases).step_by(500) {
        let chunk: Vec<Case> =
            (done..cases.min(done + 500)).map(|_| strategy.new_tree(&mut runner).unwrap().current()).collect();
        let sequences: Vec<Vec<Message>> =
            (0..chunk.len() / 20).map(|_| frames.new_tree(&mut runner).unwrap().current()).collect();
        played += sequences.len();
        let (results, ()) =
            tokio::join!(send_cases(&http, &graphql, &credentials, chunk), play_sequences(&ws_url, &token, sequences));
        for (status, case) in results {
            let oversized = case.body.len() > 1024 * 1024;
            match status {
                Ok(s) if s < 500 || s == 503 => answered += 1,
                // The server answered 413 and closed before the client was done writing.
                Err(e) if oversized && e.is_request() => answered += 1,
                other => failures.push(format!(
                    "{other:?} for a body of {} bytes: {:?}",
                    case.body.len(),
                    String::from_utf8_lossy(&case.body[..case.body.len().min(300)])
                )),
            }
        }
        rss_peak = rss_peak.max(rss_reading(&server).0);
        let sent = cases.min(done + 500);
        // From 2,000 on: the first 1,000 warm what is made once (thread
        // pools, the allocator's arenas).
        if (sent.is_multiple_of(1000) && sent > 1000) || sent == cases || (sent >= cases / 2 && first_half.is_empty()) {
            let reading = rss_at_rest(&server).await;
            if sent <= cases / 2 || first_half.is_empty() {
                first_half.push(reading)
            } else {
                second_half.push(reading)
            }
        }
    }

    let health = http.get(format!("{}/health", server.base)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "still serving");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut sockets = server.metric("rollcall_ws_sockets").await;
    while sockets != Some(0.0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sockets = server.metric("rollcall_ws_sockets").await;
    }
    // What was freed is given back to the system within moments.
    second_half.push(rss_at_rest(&server).await);
    let lowest = |readings: &[(u64, String)]| readings.iter().min_by_key(|r| r.0).cloned().unwrap_or_default();
    let ((first, first_split), (second, second_split)) = (lowest(&first_half), lowest(&second_half));
    let kib = |readings: &[(u64, String)]| readings.iter().map(|r| r.0.to_string()).collect::<Vec<_>>().join(" ");
    println!(
        "fuzz: {cases} HTTP cases ({answered} answered without a 5xx), {played} WebSocket sequences; server RSS ready {rss_ready} KiB, peak {rss_peak} KiB; at rest, lowest of the first half {first} KiB ({first_split}), of the second {second} KiB ({second_split}; {:+.1} %); readings {} | {} KiB",
        (second as f64 / first as f64 - 1.0) * 100.0,
        kib(&first_half),
        kib(&second_half),
    );
    assert!(failures.is_empty(), "{} cases got a 5xx or no answer; first: {}", failures.len(), failures[0]);
    assert_eq!(panics_in(&dir.path().join("server.log")), 0, "a server thread panicked (see server.log)");
    assert_eq!(sockets, Some(0.0), "every socket's task ended");
    assert!(
        second * 10 <= first * 11,
        "the server kept what the fuzz made it allocate: at rest, {second} KiB at least in the second half, {first} KiB at least in the first"
    );
}
