//! Live subscriptions over real WebSockets: check-ins reach every
//! subscriber, resume with a cursor misses and repeats nothing while
//! sightings keep arriving, counters follow, strangers are refused, a
//! subscriber that stops reading is cut off without holding up the others,
//! and an attendee hears their own check-in. `sharing` holds the tests of
//! shared rendering: identical subscriptions cost one render for all.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use rollcall::config::{DbArgs, ServeArgs};
use rollcall::store::ImportRow;
use serde_json::{Value, json};

use crate::helpers::{Auth, Session, TestApp, spawn_app, spawn_with};
use crate::websocket::WsClient;

mod sharing;

pub(crate) const CHECK_INS: &str = "subscription($e: ID!, $after: String) {
    checkIns(eventId: $e, after: $after) { cursor eventId checkedInAt scanner user { id name } } }";
pub(crate) const STATS: &str =
    "subscription($e: ID!) { eventStats(eventId: $e) { eventId registered checkedIn presentNow at } }";
const SUBMIT: &str = "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) { accepted checkIns } }";

/// An active walk-in event around now with `people` imported attendees and a scanner key.
pub(crate) struct Venue {
    pub(crate) org: Session,
    pub(crate) event: String,
    pub(crate) key: Auth,
    /// (BLE UUID, name) of each attendee.
    pub(crate) people: Vec<(String, String)>,
}

pub(crate) async fn venue(app: &TestApp, people: usize) -> Venue {
    let org = app.organizer("org@example.org").await;
    let start = Utc::now() - chrono::Duration::hours(1);
    let data = app
        .ok(
            &org.auth(),
            "mutation($i: CreateEventInput!) { createEvent(input: $i) { id } }",
            json!({ "i": { "name": "Live", "startsAt": start, "endsAt": start + chrono::Duration::hours(3),
                           "policy": { "requireRegistration": false } } }),
        )
        .await;
    let event = data["createEvent"]["id"].as_str().unwrap().to_owned();
    app.activate(&org, &event).await;
    let (_, secret) = app.api_key(&org, "north door", Some(vec![&event])).await;
    let people: Vec<(String, String)> =
        (0..people).map(|i| (uuid::Uuid::new_v4().to_string(), format!("Person {i:04}"))).collect();
    let rows = people
        .iter()
        .enumerate()
        .map(|(i, (ble, name))| ImportRow {
            line: i + 1,
            email: format!("p{i}@example.org"),
            name: name.clone(),
            ble_uuid: ble.clone(),
            event: None,
        })
        .collect();
    app.state.store.users().import(rows, Utc::now()).await.unwrap();
    Venue { org, event, key: Auth::ApiKey(secret), people }
}

/// Submits one batch that checks in `who` (indices into `v.people`).
pub(crate) async fn check_in(app: &TestApp, v: &Venue, who: impl IntoIterator<Item = usize>) -> Value {
    let now = Utc::now();
    let sightings: Vec<Value> =
        who.into_iter().map(|i| json!({ "bleUuid": v.people[i].0, "seenAt": now, "rssi": -60 })).collect();
    let vars = json!({ "b": { "batchId": uuid::Uuid::new_v4(), "sightings": sightings } });
    app.ok(&v.key, SUBMIT, vars).await["submitSightings"].clone()
}

/// Waits until `n` subscribers follow the event's check-ins (a subscription
/// has no acknowledgement in the protocol).
pub(crate) async fn subscribers(app: &TestApp, v: &Venue, n: usize) {
    let event = v.event.parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.state.live.check_in_subscribers(event) < n {
        assert!(tokio::time::Instant::now() < deadline, "subscribers did not arrive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The next `n` check-ins on subscription `id`.
pub(crate) async fn take(c: &mut WsClient, id: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let msg = c.recv().await;
        assert_eq!(msg["id"], id, "{msg}");
        assert!(msg["payload"]["errors"].is_null(), "{msg}");
        out.push(msg["payload"]["data"]["checkIns"].clone());
    }
    out
}

pub(crate) fn names(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["user"]["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_check_in_reaches_every_subscriber_in_both_protocols() {
    let app = spawn_app().await;
    let v = venue(&app, 2).await;
    let auth = json!({ "authorization": format!("Bearer {}", v.org.token) });
    let mut a = WsClient::signed_in(&app, "graphql-transport-ws", auth.clone()).await;
    let mut b = WsClient::signed_in(&app, "graphql-ws", auth).await;
    a.subscribe("a", CHECK_INS, json!({ "e": v.event })).await;
    b.subscribe("b", CHECK_INS, json!({ "e": v.event })).await;
    subscribers(&app, &v, 2).await;
    let r = check_in(&app, &v, [0]).await;
    assert_eq!(r["checkIns"], 1);
    let got_a = take(&mut a, "a", 1).await.remove(0);
    let got_b = b.recv().await;
    assert_eq!(got_b["type"], "data");
    let got_b = got_b["payload"]["data"]["checkIns"].clone();
    assert_eq!(got_a, got_b);
    assert_eq!(got_a["user"]["name"], "Person 0000");
    assert_eq!(got_a["scanner"], "north door");
    assert_eq!(got_a["eventId"], v.event.as_str());
    assert_eq!(got_a["cursor"], "000000000001", "the event's first check-in");
    // Seen again: not a new check-in, so nothing is pushed.
    check_in(&app, &v, [0]).await;
    check_in(&app, &v, [1]).await;
    assert_eq!(names(&take(&mut a, "a", 1).await), ["Person 0001"]);
}

#[tokio::test]
async fn resuming_after_a_cursor_misses_nothing_and_repeats_nothing_while_check_ins_arrive() {
    let app = spawn_app().await;
    let v = venue(&app, 60).await;
    // The first 20 check in before anybody watches.
    check_in(&app, &v, 0..20).await;
    let mut c = WsClient::bearer(&app, &v.org.token).await;
    c.subscribe("s", CHECK_INS, json!({ "e": v.event, "after": "" })).await;
    let first = take(&mut c, "s", 10).await;
    assert_eq!(names(&first), (0..10).map(|i| format!("Person {i:04}")).collect::<Vec<_>>());
    let cursor = first[9]["cursor"].as_str().unwrap().to_owned();
    drop(c);

    // Check-ins keep coming, one per batch from four scanners at once (so
    // commits race), while the subscriber comes back.
    let v_key = match &v.key {
        Auth::ApiKey(k) => k.clone(),
        _ => unreachable!(),
    };
    let mut feeders = Vec::new();
    for part in v.people[20..].chunks(10) {
        let (http, addr, v_key) = (app.http.clone(), app.addr, v_key.clone());
        let people = part.to_vec();
        feeders.push(tokio::spawn(async move {
            for (ble, _) in &people {
                let vars = json!({ "b": { "batchId": uuid::Uuid::new_v4(),
                    "sightings": [{ "bleUuid": ble, "seenAt": Utc::now(), "rssi": -50 }] } });
                let resp = http
                    .post(format!("http://{addr}/graphql"))
                    .header("authorization", format!("ApiKey {v_key}"))
                    .json(&json!({ "query": SUBMIT, "variables": vars }))
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success());
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut c = WsClient::bearer(&app, &v.org.token).await;
    c.subscribe("s", CHECK_INS, json!({ "e": v.event, "after": cursor })).await;
    let rest = take(&mut c, "s", 50).await;
    for f in feeders {
        f.await.unwrap();
    }
    let mut all = names(&first);
    all.extend(names(&rest));
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), 60, "every check-in exactly once: {all:?}");
    // The replayed part comes in order, and every item's cursor is after the one before.
    assert_eq!(names(&rest[..10]), (10..20).map(|i| format!("Person {i:04}")).collect::<Vec<_>>());
    let cursors: Vec<&str> = first.iter().chain(&rest).map(|i| i["cursor"].as_str().unwrap()).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    // And nothing more arrives.
    assert!(c.recv_within(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn without_after_a_subscription_starts_live() {
    let app = spawn_app().await;
    let v = venue(&app, 2).await;
    check_in(&app, &v, [0]).await;
    let mut c = WsClient::bearer(&app, &v.org.token).await;
    c.subscribe("s", CHECK_INS, json!({ "e": v.event })).await;
    subscribers(&app, &v, 1).await;
    check_in(&app, &v, [1]).await;
    assert_eq!(names(&take(&mut c, "s", 1).await), ["Person 0001"]);
}

#[tokio::test]
async fn event_stats_start_with_the_current_counts_and_follow_check_ins() {
    let app = spawn_app().await;
    let v = venue(&app, 3).await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    app.ok(&ada.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": v.event })).await;
    check_in(&app, &v, [0]).await;
    let mut c = WsClient::bearer(&app, &v.org.token).await;
    c.subscribe("s", STATS, json!({ "e": v.event })).await;
    let first = c.recv().await["payload"]["data"]["eventStats"].clone();
    // Ada registered; person 0 walked in (and was registered by it).
    let counts = |s: &Value| (s["registered"].as_i64(), s["checkedIn"].as_i64(), s["presentNow"].as_i64());
    assert_eq!(counts(&first), (Some(2), Some(1), Some(1)));
    check_in(&app, &v, [1, 2]).await;
    // Coalesced: one or more updates, the last one with both new people.
    loop {
        let s = c.recv().await["payload"]["data"]["eventStats"].clone();
        if s["checkedIn"] == 3 {
            // Walk-ins are registered as they check in.
            assert_eq!(counts(&s), (Some(4), Some(3), Some(3)));
            break;
        }
    }
}

#[tokio::test]
async fn strangers_cannot_watch_an_event() {
    // Anonymous sockets are refused at `connection_init` by default (see
    // `hardening`); allowed here, the resolvers refuse them as well.
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.live.allow_anonymous = true;
    let app = spawn_with(args).await;
    let v = venue(&app, 1).await;
    // Anonymous.
    let mut anon = WsClient::signed_in(&app, "graphql-transport-ws", json!({})).await;
    anon.subscribe("s", CHECK_INS, json!({ "e": v.event })).await;
    let err = anon.recv().await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["payload"][0]["extensions"]["code"], "UNAUTHENTICATED");
    // An attendee, and another organiser, of someone else's event.
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let other = app.organizer("other@example.org").await;
    for who in [ada, other] {
        let mut c = WsClient::bearer(&app, &who.token).await;
        for (id, q) in [("c", CHECK_INS), ("s", STATS)] {
            c.subscribe(id, q, json!({ "e": v.event })).await;
            let err = c.recv().await;
            assert_eq!(err["type"], "error", "{err}");
            assert_eq!(err["payload"][0]["extensions"]["code"], "FORBIDDEN", "{err}");
        }
    }
    // A key for another event.
    let other_event = app.create_event(&v.org, "Other").await;
    let (_, secret) = app.api_key(&v.org, "elsewhere", Some(vec![&other_event])).await;
    let mut k = WsClient::signed_in(&app, "graphql-transport-ws", json!({ "apiKey": secret })).await;
    k.subscribe("c", CHECK_INS, json!({ "e": v.event })).await;
    assert_eq!(k.recv().await["payload"][0]["extensions"]["code"], "FORBIDDEN");
    // A bad cursor is a validation error, not a crash.
    let mut c = WsClient::bearer(&app, &v.org.token).await;
    c.subscribe("c", CHECK_INS, json!({ "e": v.event, "after": "yesterday" })).await;
    assert_eq!(c.recv().await["payload"][0]["extensions"]["code"], "VALIDATION");
}

/// Connects with a tiny receive buffer, so that not reading soon pushes back
/// on the server.
async fn stubborn_client(app: &TestApp, token: &str) -> WsClient {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let mut req = format!("ws://{}/graphql", app.addr).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await.unwrap();
    let mut c = WsClient { ws, protocol: "graphql-transport-ws" };
    c.send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } })).await;
    assert_eq!(c.recv().await["type"], "connection_ack");
    c
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_cut_off_with_its_cursor_and_the_others_get_everything() {
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.live.buffer = 700;
    // Time enough for the test to come back to the slow socket.
    args.live.send_timeout_secs = 120;
    let app = spawn_with(args).await;
    let v = venue(&app, 1800).await;
    let mut fast = Vec::new();
    for _ in 0..2 {
        let mut c = WsClient::bearer(&app, &v.org.token).await;
        c.subscribe("s", CHECK_INS, json!({ "e": v.event })).await;
        fast.push(c);
    }
    // The slow one asks for bulky items (every cursor 300 times over, ~14 KB
    // each), so that its socket's buffers, which the kernel grows to 4 MB,
    // fill up long before all the check-ins are through.
    let mut slow = stubborn_client(&app, &v.org.token).await;
    let bulky: String = (0..300).map(|i| format!(" c{i}: cursor")).collect();
    let bulky = format!("subscription($e: ID!) {{ checkIns(eventId: $e) {{ cursor user {{ name }} {bulky} }} }}");
    slow.subscribe("s", &bulky, json!({ "e": v.event })).await;
    subscribers(&app, &v, 3).await;
    // Three bursts of 600 new check-ins; the fast ones keep up, the slow one reads nothing.
    for burst in 0..3 {
        let r = check_in(&app, &v, burst * 600..(burst + 1) * 600).await;
        assert_eq!(r["checkIns"], 600);
        for c in &mut fast {
            let got = take(c, "s", 600).await;
            assert_eq!(got.len(), 600);
        }
    }
    for c in &mut fast {
        assert!(c.recv_within(Duration::from_millis(200)).await.is_none(), "nothing doubled");
    }
    // Now the slow one reads: what fitted in its socket, then LAGGED with the
    // cursor of the last check-in it was given, then complete.
    // Before it was given anything, its position is where it started.
    let mut last_cursor = json!("000000000000");
    let mut received = 0;
    loop {
        let msg = slow.recv().await;
        assert_eq!(msg["id"], "s", "{msg}");
        if let Some(errors) = msg["payload"]["errors"].as_array() {
            assert_eq!(errors[0]["extensions"]["code"], "LAGGED");
            assert_eq!(errors[0]["extensions"]["lastCursor"], last_cursor);
            break;
        }
        last_cursor = msg["payload"]["data"]["checkIns"]["cursor"].clone();
        received += 1;
    }
    assert!(received < 1800, "the slow subscriber was cut off, not buffered for: {received}");
    assert_eq!(slow.recv().await, json!({ "type": "complete", "id": "s" }));
    // It resumes from its cursor and gets the rest, exactly.
    slow.subscribe("r", CHECK_INS, json!({ "e": v.event, "after": last_cursor })).await;
    let rest = take(&mut slow, "r", 1800 - received).await;
    let distinct: HashSet<String> = names(&rest).into_iter().collect();
    assert_eq!(distinct.len(), 1800 - received);
}

#[tokio::test]
async fn re_deriving_attendance_does_not_announce_check_ins_again() {
    let app = spawn_app().await;
    let v = venue(&app, 3).await;
    let mut c = WsClient::bearer(&app, &v.org.token).await;
    c.subscribe("s", CHECK_INS, json!({ "e": v.event, "after": "" })).await;
    subscribers(&app, &v, 1).await;
    check_in(&app, &v, [0, 1]).await;
    let got = take(&mut c, "s", 2).await;
    // A policy change re-derives the event's attendance from the raw log.
    app.ok(
        &v.org.auth(),
        "mutation($id: ID!) { updateEvent(id: $id, input: { policy: { departureGapSeconds: 600 } }) { id } }",
        json!({ "id": v.event }),
    )
    .await;
    check_in(&app, &v, [2]).await;
    let next = take(&mut c, "s", 1).await;
    assert_eq!(names(&next), ["Person 0002"], "only the new check-in, not the re-derived ones");
    assert!(next[0]["cursor"].as_str().unwrap() > got[1]["cursor"].as_str().unwrap());
    assert!(c.recv_within(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn an_attendee_hears_their_own_check_in_and_nobody_else_s() {
    let app = spawn_app().await;
    let v = venue(&app, 1).await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let ble = app.ok(&ada.auth(), "{ me { bleUuid } }", json!({})).await["me"]["bleUuid"].as_str().unwrap().to_owned();
    let mut c = WsClient::bearer(&app, &ada.token).await;
    c.subscribe("all", "subscription { myCheckIns { cursor eventId user { name email } } }", json!({})).await;
    c.subscribe("this", "subscription($e: ID) { myCheckIns(eventId: $e) { eventId } }", json!({ "e": v.event })).await;
    let other = app.create_event(&v.org, "Other").await;
    c.subscribe("other", "subscription($e: ID) { myCheckIns(eventId: $e) { eventId } }", json!({ "e": other })).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.state.live.personal_subscribers() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "subscriptions did not arrive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Somebody else checks in: nothing for Ada.
    check_in(&app, &v, [0]).await;
    assert!(c.recv_within(Duration::from_millis(300)).await.is_none());
    // Ada does.
    let now = Utc::now();
    let vars = json!({ "b": { "batchId": uuid::Uuid::new_v4(), "sightings": [{ "bleUuid": ble, "seenAt": now, "rssi": -60 }] } });
    assert_eq!(app.ok(&v.key, SUBMIT, vars).await["submitSightings"]["checkIns"], 1);
    let mut got = std::collections::HashMap::new();
    for _ in 0..2 {
        let msg = c.recv().await;
        assert_eq!(msg["type"], "next", "{msg}");
        got.insert(msg["id"].as_str().unwrap().to_owned(), msg["payload"]["data"]["myCheckIns"].clone());
    }
    assert_eq!(got["all"]["user"]["name"], "Ada");
    assert_eq!(got["all"]["user"]["email"], "ada@example.org");
    assert_eq!(got["all"]["eventId"], v.event.as_str());
    assert_eq!(got["this"]["eventId"], v.event.as_str());
    assert!(c.recv_within(Duration::from_millis(300)).await.is_none(), "not for the other event");
    // Scanners have no check-ins of their own.
    let (_, key) = app.api_key(&v.org, "door", None).await;
    let mut door = WsClient::signed_in(&app, "graphql-transport-ws", json!({ "apiKey": key })).await;
    door.subscribe("s", "subscription { myCheckIns { cursor } }", json!({})).await;
    assert_eq!(door.recv().await["payload"][0]["extensions"]["code"], "FORBIDDEN");
}
