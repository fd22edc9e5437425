//! Several Rollcall instances over one SurrealDB server (`tools/surreal`),
//! as a venue that outgrows one machine runs them: check-ins reach the
//! subscribers of every instance in cursor order exactly once, a cursor from
//! one instance resumes on another, concurrent batches through all of them
//! lose and double nothing, a simultaneous first start agrees on one schema
//! and one JWT secret, and losing the database is reported, then recovered
//! from, without a restart.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::future::join_all;
use rollcall::config::{DbArgs, ServeArgs};
use serde_json::{Value, json};

use crate::helpers::{ServerProcess, TestApp, code, spawn_with};
use crate::live::{CHECK_INS, Venue, check_in, names, subscribers, take, venue};
use crate::surreal::SurrealServer;
use crate::websocket::WsClient;

/// `n` instances on `db`, started at the same moment.
async fn instances(db: &DbArgs, n: usize) -> Vec<TestApp> {
    join_all((0..n).map(|_| spawn_with(ServeArgs::for_tests(db.clone())))).await
}

fn cursors(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["cursor"].as_str().unwrap().to_owned()).collect()
}

fn strictly_increasing(cursors: &[String]) -> bool {
    cursors.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test]
async fn a_check_in_through_one_instance_reaches_every_instance_in_cursor_order_once() {
    let server = SurrealServer::memory().await;
    let apps = instances(&server.database("multi").await, 3).await;
    every_instance_gets_each_check_in_once(&apps).await;
}

/// On a cluster of several SurrealDB nodes, a live query hears only its own
/// node's writes: instances that take no hints at all still get every
/// check-in, from the change feed.
#[tokio::test]
async fn instances_that_hear_no_hint_read_every_check_in_from_the_change_feed() {
    let server = SurrealServer::memory().await;
    let db = server.database("multi").await;
    let deaf = || {
        let mut args = ServeArgs::for_tests(db.clone());
        args.live.no_hints = true;
        spawn_with(args)
    };
    let apps = join_all([spawn_with(ServeArgs::for_tests(db.clone())), deaf(), deaf()]).await;
    every_instance_gets_each_check_in_once(&apps).await;
}

/// A key revoked through one instance closes its sockets on an instance
/// that hears no live query (as one connected to another SurrealDB node),
/// from the change feed, long before the 30 s recheck.
#[tokio::test]
async fn a_key_revoked_through_another_instance_closes_its_sockets_on_one_that_hears_no_hint() {
    let server = SurrealServer::memory().await;
    let db = server.database("multi").await;
    let mut deaf = ServeArgs::for_tests(db.clone());
    deaf.live.no_hints = true;
    let (a, b) = tokio::join!(spawn_with(ServeArgs::for_tests(db)), spawn_with(deaf));
    let org = a.organizer("org@example.org").await;
    let (key_id, secret) = a.api_key(&org, "door", None).await;
    let (_, other) = a.api_key(&org, "side door", None).await;
    let mut door = WsClient::signed_in(&b, "graphql-transport-ws", json!({ "apiKey": secret })).await;
    let mut kept = WsClient::signed_in(&b, "graphql-transport-ws", json!({ "apiKey": other })).await;
    a.ok(&org.auth(), "mutation($id: ID!) { revokeApiKey(id: $id) { id } }", json!({ "id": key_id })).await;
    let (code, reason) = tokio::time::timeout(Duration::from_secs(5), door.closed()).await.expect("closed within 5 s");
    assert_eq!((code, reason.as_str()), (4403, "Forbidden: API key revoked"));
    kept.subscribe("q", "{ activeEvents { id } }", json!({})).await;
    assert_eq!(kept.recv().await["type"], "next");
}

/// Ten batches of three through the first instance; a subscriber on each
/// gets all thirty, in cursor order, once.
async fn every_instance_gets_each_check_in_once(apps: &[TestApp]) {
    let v = venue(&apps[0], 30).await;
    let event = v.event.parse().unwrap();
    let mut clients = Vec::new();
    for app in apps {
        let mut c = WsClient::bearer(app, &v.org.token).await;
        c.subscribe("s", CHECK_INS, json!({ "e": v.event })).await;
        clients.push(c);
    }
    for app in apps {
        subscribers(app, &v, 1).await;
        assert_eq!(app.state.live.check_in_subscribers(event), 1);
    }
    for batch in 0..10 {
        check_in(&apps[0], &v, batch * 3..batch * 3 + 3).await;
    }
    let expected: Vec<String> = (0..30).map(|i| format!("Person {i:04}")).collect();
    for c in &mut clients {
        let got = take(c, "s", 30).await;
        let mut got_names = names(&got);
        assert!(strictly_increasing(&cursors(&got)), "{:?}", cursors(&got));
        got_names.sort();
        assert_eq!(got_names, expected, "each check-in once");
        assert!(c.recv_within(Duration::from_millis(500)).await.is_none(), "nothing twice");
    }
}

#[tokio::test]
async fn a_cursor_from_one_instance_resumes_on_another_without_gap_or_repeat() {
    let server = SurrealServer::memory().await;
    let apps = instances(&server.database("multi").await, 3).await;
    let (a, b, c) = (&apps[0], &apps[1], &apps[2]);
    let v = venue(a, 60).await;
    check_in(a, &v, 0..20).await;
    let mut on_a = WsClient::bearer(a, &v.org.token).await;
    on_a.subscribe("s", CHECK_INS, json!({ "e": v.event, "after": "" })).await;
    let first = take(&mut on_a, "s", 10).await;
    let cursor = first[9]["cursor"].as_str().unwrap().to_owned();
    drop(on_a);

    // Check-ins keep coming through A and C, one per batch, while the
    // subscriber comes back on B.
    let feeders = join_all([(a, 20..40), (c, 40..60)].map(|(app, who)| {
        let v = &v;
        async move {
            for i in who {
                check_in(app, v, [i]).await;
            }
        }
    }));
    let resume = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut on_b = WsClient::bearer(b, &v.org.token).await;
        on_b.subscribe("s", CHECK_INS, json!({ "e": v.event, "after": cursor })).await;
        let rest = take(&mut on_b, "s", 50).await;
        (on_b, rest)
    };
    let (_, (mut on_b, rest)) = tokio::join!(feeders, resume);
    let mut all = names(&first);
    all.extend(names(&rest));
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 60, "every check-in exactly once: {all:?}");
    assert_eq!(names(&rest[..10]), (10..20).map(|i| format!("Person {i:04}")).collect::<Vec<_>>());
    let mut all_cursors = cursors(&first);
    all_cursors.extend(cursors(&rest));
    assert!(strictly_increasing(&all_cursors), "{all_cursors:?}");
    assert!(on_b.recv_within(Duration::from_millis(500)).await.is_none());
}

#[tokio::test]
async fn concurrent_batches_through_every_instance_lose_nothing_and_double_nothing() {
    let server = SurrealServer::memory().await;
    let apps = instances(&server.database("multi").await, 3).await;
    let v = &venue(&apps[0], 20).await;
    const BATCHES: usize = 4;
    let start = Utc::now() - chrono::Duration::minutes(50);
    // Every instance sends BATCHES batches at once, each with a sighting of
    // all 20 people at a minute of its own.
    let sends = apps.iter().enumerate().flat_map(|(i, app)| {
        (0..BATCHES).map(move |b| {
            let minute = (i * BATCHES + b) as i64;
            let seen = start + chrono::Duration::minutes(minute);
            async move {
                let sightings: Vec<Value> =
                    v.people.iter().map(|(ble, _)| json!({ "bleUuid": ble, "seenAt": seen, "rssi": -60 })).collect();
                let vars = json!({ "b": { "batchId": uuid::Uuid::new_v4(), "sightings": sightings } });
                app.ok(
                    &v.key,
                    "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) { accepted checkIns } }",
                    vars,
                )
                .await["submitSightings"]
                    .clone()
            }
        })
    });
    let results = join_all(sends).await;
    let accepted: i64 = results.iter().map(|r| r["accepted"].as_i64().unwrap()).sum();
    let check_ins: i64 = results.iter().map(|r| r["checkIns"].as_i64().unwrap()).sum();
    assert_eq!(accepted, (3 * BATCHES * 20) as i64);
    assert_eq!(check_ins, 20, "one check-in per person, whichever batch won");

    // Every instance reads the same: each person once, with every sighting
    // (an instance that does not hold the rows within an interval or so).
    for app in &apps {
        let rows = sightings_within(app, v, Duration::from_secs(10), |n| n == 3 * BATCHES as i64).await;
        assert_eq!(rows.len(), 20);
        for n in rows {
            assert_eq!(n, 3 * BATCHES as i64);
        }
        let stats = app
            .ok(&v.org.auth(), "query($e: ID!) { eventReport(eventId: $e) { checkedIn } }", json!({ "e": v.event }))
            .await;
        assert_eq!(stats["eventReport"]["checkedIn"], 20);
    }
}

/// Each person's sightings in the event's rows as `app` reads them, once
/// `done` holds for every row or `within` passed.
async fn sightings_within(app: &TestApp, v: &Venue, within: Duration, done: impl Fn(i64) -> bool) -> Vec<i64> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let data = app
            .ok(
                &v.org.auth(),
                "query($e: ID!) { attendance(eventId: $e, first: 500) { edges { node { sightings } } } }",
                json!({ "e": v.event }),
            )
            .await;
        let rows: Vec<i64> = data["attendance"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["node"]["sightings"].as_i64().unwrap())
            .collect();
        if rows.iter().copied().all(&done) || std::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Instances hearing the same crowd do not write the same rows: one holds
/// them under a lease and folds in what the others leave pending, so a row
/// is written about once an interval, not once a batch, and nothing is lost
/// or counted twice. Written through by every instance (`--row-flush-ms 0`),
/// each row here would be written 20 times.
#[tokio::test]
async fn one_instance_writes_the_rows_that_exist_and_the_others_leave_it_their_sightings() {
    let server = SurrealServer::memory().await;
    let db = server.database("multi").await;
    let apps = instances(&db, 2).await;
    let v = &venue(&apps[0], 20).await;
    let start = Utc::now() - chrono::Duration::minutes(50);
    const BATCHES: i64 = 10;
    for (i, app) in apps.iter().enumerate() {
        for b in 0..BATCHES {
            let seen = start + chrono::Duration::minutes(i as i64 * BATCHES + b);
            let sightings: Vec<Value> =
                v.people.iter().map(|(ble, _)| json!({ "bleUuid": ble, "seenAt": seen, "rssi": -60 })).collect();
            let vars = json!({ "b": { "batchId": uuid::Uuid::new_v4(), "sightings": sightings } });
            let r = app
                .ok(&v.key, "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) { accepted } }", vars)
                .await;
            assert_eq!(r["submitSightings"]["accepted"], 20);
        }
    }
    let expected = 2 * BATCHES;
    for app in &apps {
        let rows = sightings_within(app, v, Duration::from_secs(10), |n| n == expected).await;
        assert_eq!(rows, vec![expected; 20], "every sighting counted once, on every instance");
    }
    let root = server.root().await;
    root.use_ns("rollcall").use_db("multi").await.unwrap();
    let versions: Vec<i64> = root.query("SELECT VALUE version FROM attendance").await.unwrap().take(0).unwrap();
    assert_eq!(versions.len(), 20);
    assert!(versions.iter().all(|v| *v <= 6), "each row written a few times, not once a batch: {versions:?}");
}

/// Whether `server`'s lease gauge reads `value` (1: it holds the rows)
/// within a few seconds.
async fn holds(server: &ServerProcess, value: f64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if server.metric("rollcall_ingest_rows_lease").await == Some(value) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The instance holding the rows dies with a change held back: once its
/// lease runs out another instance takes the rows, and derives the event
/// again from the raw log, so nothing acknowledged is lost.
#[tokio::test]
async fn when_the_instance_holding_the_rows_dies_another_takes_them_and_loses_nothing() {
    use crate::held_rows::{ATTENDANCE, HOLD, admin_on, venue_on};
    let server = SurrealServer::memory().await;
    let db = server.database("multi").await;
    admin_on(&db);
    let first = ServerProcess::start_with_flags(&db, &HOLD).await;
    assert!(holds(&first, 1.0).await, "the first instance holds the rows");
    let second = ServerProcess::start_with_flags(&db, &HOLD).await;
    assert!(holds(&second, 0.0).await);
    let v = venue_on(&first).await;
    let now = Utc::now();
    let ago = |minutes: i64| now - chrono::Duration::minutes(minutes);
    assert_eq!(v.heard(&first, ago(30)).await["checkIns"], 1);
    assert_eq!(v.heard(&first, ago(20)).await["accepted"], 1);
    assert_eq!(v.heard(&second, ago(15)).await["accepted"], 1);
    let root = server.root().await;
    root.use_ns("rollcall").use_db("multi").await.unwrap();
    let pending = || async {
        let n: Option<i64> =
            root.query("RETURN array::len(SELECT VALUE id FROM row_pending)").await.unwrap().take(0).unwrap();
        n.unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending().await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending().await, 0, "the holder folded in the second instance's sighting");
    assert_eq!(first.metric("rollcall_ingest_rows_waiting").await, Some(1.0), "and holds the row back");
    first.kill9();

    let deadline = Instant::now() + Duration::from_secs(30);
    let row = loop {
        let rows = second.ok(Some(&v.admin), ATTENDANCE, json!({ "e": v.event })).await;
        let row = rows["attendance"]["edges"][0]["node"].clone();
        if row["sightings"] == 3 || Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(row["sightings"], 3, "every acknowledged sighting counts: {row}");
    assert!(holds(&second, 1.0).await, "the second instance holds the rows");
    assert_eq!(v.heard(&second, ago(20)).await["duplicates"], 1, "a sighting sent again is a duplicate");
    assert!(second.terminate().success());
}

#[tokio::test]
async fn instances_starting_together_on_an_empty_database_agree_on_schema_and_secret() {
    let server = SurrealServer::memory().await;
    let db = server.database("fresh").await;
    let apps = instances(&db, 3).await;

    // One row per migration, however many instances raced to apply it.
    let root = server.root().await;
    root.use_ns("rollcall").use_db("fresh").await.unwrap();
    let mut res = root.query("SELECT VALUE record::id(id) FROM migration ORDER BY id").await.unwrap();
    let versions: Vec<i64> = res.take(0).unwrap();
    assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
    assert!(versions.len() >= 14, "{versions:?}");
    let mut res = root.query("SELECT VALUE id FROM secret").await.unwrap();
    let secrets: Vec<surrealdb::types::RecordId> = res.take(0).unwrap();
    assert_eq!(secrets.len(), 1, "one JWT secret: {secrets:?}");

    // A token from any instance is good on every other.
    for (i, app) in apps.iter().enumerate() {
        let who = app.sign_up(&format!("p{i}@example.org"), &format!("Person {i}")).await;
        for other in &apps {
            let me = other.ok(&who.auth(), "{ me { email } }", json!({})).await;
            assert_eq!(me["me"]["email"], format!("p{i}@example.org"));
        }
    }
}

#[tokio::test]
async fn losing_the_database_is_reported_and_recovered_from_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = SurrealServer::on_disk(dir.path()).await;
    let apps = instances(&server.database("multi").await, 2).await;
    let (a, b) = (&apps[0], &apps[1]);
    let v = venue(a, 10).await;
    check_in(a, &v, 0..3).await;
    let mut on_b = WsClient::bearer(b, &v.org.token).await;
    on_b.subscribe("s", CHECK_INS, json!({ "e": v.event, "after": "" })).await;
    let before = take(&mut on_b, "s", 3).await;

    server.kill();
    // `/ready` fails, and requests fail with UNAVAILABLE, promptly.
    for app in &apps {
        let ready = tokio::time::timeout(Duration::from_secs(10), app.http.get(app.url("/ready")).send())
            .await
            .expect("/ready answers while the database is away")
            .unwrap();
        assert_eq!(ready.status(), 503);
        let query = "query($e: ID!) { attendance(eventId: $e) { edges { node { sightings } } } }";
        let (_, body) =
            tokio::time::timeout(Duration::from_secs(15), app.post_gql(&v.org.auth(), query, json!({ "e": v.event })))
                .await
                .expect("a request answers while the database is away");
        assert_eq!(code(&body).as_deref(), Some("UNAVAILABLE"), "{body}");
    }

    // Back on the same data: both instances reconnect by themselves, and the
    // live subscription carries on from where it was.
    server.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for app in &apps {
        loop {
            let ready = app.http.get(app.url("/ready")).send().await.unwrap();
            if ready.status() == 200 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "instances did not reconnect");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    check_in(a, &v, 3..6).await;
    // A subscriber whose replay met the outage was told to come back after
    // its last cursor (the protocol's promise); it does, on the same instance.
    let first = on_b.recv().await;
    let mut after = Vec::new();
    if first["payload"]["errors"].is_null() {
        after.push(first["payload"]["data"]["checkIns"].clone());
    } else {
        let error = &first["payload"]["errors"][0]["extensions"];
        assert_eq!(error["code"], "UNAVAILABLE", "{first}");
        assert_eq!(error["lastCursor"], before[2]["cursor"], "{first}");
        on_b = WsClient::bearer(b, &v.org.token).await;
        on_b.subscribe("s", CHECK_INS, json!({ "e": v.event, "after": error["lastCursor"] })).await;
    }
    let more = 3 - after.len();
    after.extend(take(&mut on_b, "s", more).await);
    let mut all = names(&before);
    all.extend(names(&after));
    assert_eq!(all, (0..6).map(|i| format!("Person {i:04}")).collect::<Vec<_>>());
}
