//! Attendance rows held back by the ingest writer on the embedded store
//! (`--row-flush-ms`, `app::writer`): reads see every acknowledged batch at
//! once, a clean stop writes them, a crash loses nothing the raw log holds,
//! and an erased person's held row does not come back. A batch the store
//! lost in a crash, sent again after the store's epoch changed, is taken
//! again without counting twice what rows already held.

use chrono::{DateTime, Duration, Utc};
use rollcall::config::{DbArgs, ServeArgs};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, ServerProcess, run_cli, spawn_with};
use crate::ingest::{at, attendance, batch, sighting, submit, venue, venue_from};

const SUBMIT: &str =
    "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) { accepted checkIns duplicates } }";
pub(crate) const ATTENDANCE: &str =
    "query($e: ID!) { attendance(eventId: $e) { edges { node { lastSeen sightings stays { from to } } } } }";

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc)).expect("a time")
}

/// Equal to the second (the wire format may drop sub-seconds).
fn near(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    (a - b).num_milliseconds().abs() < 1000
}

/// An admin made with the CLI on `db`, before the server starts.
pub(crate) fn admin_on(db: &DbArgs) {
    let mut args = vec!["admin", "create", "--email", "root@example.org", "--name", "Root", "--password-stdin"];
    let db_args = crate::surreal::cli_args(db);
    args.extend(db_args.iter().map(String::as_str));
    let (ok, _, err) = run_cli(&args, &format!("{PASSWORD}\n"));
    assert!(ok, "{err}");
}

/// Rows held for ten minutes at a time: only a read, a stop or a crash
/// decides when they are written.
pub(crate) const HOLD: [&str; 2] = ["--row-flush-ms", "600000"];

/// A server holding rows (`HOLD`) on SurrealKV in `dir`, with a venue.
async fn holding(dir: &std::path::Path) -> (DbArgs, ServerProcess, Venue) {
    let db = DbArgs { url: format!("surrealkv://{}", dir.join("data").display()), ..DbArgs::memory() };
    admin_on(&db);
    let server = ServerProcess::start_with_flags(&db, &HOLD).await;
    let v = venue_on(&server).await;
    (db, server, v)
}

impl Venue {
    /// Ada heard at `at` by the scanner key: the batch's answer.
    pub(crate) async fn heard(&self, server: &ServerProcess, at: DateTime<Utc>) -> Value {
        server.ok(Some(&self.key), SUBMIT, batch(vec![sighting(&self.ble, at, -60)])).await["submitSightings"].clone()
    }
}

/// A venue on a process of its own: an admin (made with the CLI), an
/// active event around now, a registered attendee, and a scanner key.
pub(crate) struct Venue {
    pub(crate) admin: String,
    pub(crate) event: String,
    key: String,
    ble: String,
}

pub(crate) async fn venue_on(server: &ServerProcess) -> Venue {
    let login = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }";
    let token = server.ok(None, login, json!({ "e": "root@example.org", "p": PASSWORD })).await["logIn"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin = format!("Bearer {token}");
    let start = Utc::now() - Duration::hours(1);
    let create = "mutation($i: CreateEventInput!) { createEvent(input: $i) { id } }";
    let input = json!({ "i": { "name": "Held", "startsAt": start, "endsAt": start + Duration::hours(3) } });
    let event = server.ok(Some(&admin), create, input).await["createEvent"]["id"].as_str().unwrap().to_owned();
    server.ok(Some(&admin), "mutation($id: ID!) { activateEvent(id: $id) { id } }", json!({ "id": event })).await;
    let sign_up = "mutation { signUp(email: \"ada@example.org\", name: \"Ada\", password: \"correct horse battery\") { token user { bleUuid } } }";
    let data = server.ok(None, sign_up, json!({})).await;
    let ada = format!("Bearer {}", data["signUp"]["token"].as_str().unwrap());
    let ble = data["signUp"]["user"]["bleUuid"].as_str().unwrap().to_owned();
    server.ok(Some(&ada), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": event })).await;
    let key = server.ok(Some(&admin), "mutation { createApiKey(name: \"door\") { secret } }", json!({})).await
        ["createApiKey"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    Venue { admin, event, key: format!("ApiKey {key}"), ble }
}

/// Rows held for ten minutes at a time: the process is killed while one
/// waits. At the next start its event is derived again from the raw log, so
/// the row ends as if nothing had been held.
#[tokio::test]
async fn a_row_held_back_when_the_process_dies_is_derived_again_from_the_raw_log() {
    let dir = tempfile::tempdir().unwrap();
    let (db, server, v) = holding(dir.path()).await;
    let now = Utc::now();
    let ago = |minutes: i64| now - Duration::minutes(minutes);
    assert_eq!(v.heard(&server, ago(30)).await["checkIns"], 1);
    assert_eq!(v.heard(&server, ago(20)).await["accepted"], 1);
    assert_eq!(server.metric("rollcall_ingest_rows_waiting").await, Some(1.0), "the changed row is held back");

    // A read sees the held change: it is written first.
    let rows = server.ok(Some(&v.admin), ATTENDANCE, json!({ "e": v.event })).await;
    let row = &rows["attendance"]["edges"][0]["node"];
    assert!(near(time(&row["lastSeen"]), now - Duration::minutes(20)), "{row}");
    assert_eq!(row["sightings"], 2);

    // Changed again, and held, when the process dies.
    assert_eq!(v.heard(&server, ago(10)).await["accepted"], 1);
    assert_eq!(server.metric("rollcall_ingest_rows_waiting").await, Some(1.0));
    server.kill9();

    let server = ServerProcess::start_with_flags(&db, &HOLD).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let row = loop {
        let rows = server.ok(Some(&v.admin), ATTENDANCE, json!({ "e": v.event })).await;
        let row = rows["attendance"]["edges"][0]["node"].clone();
        if row["sightings"] == 3 || std::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(row["sightings"], 3, "the sighting acknowledged before the crash counts: {row}");
    assert!(near(time(&row["lastSeen"]), now - Duration::minutes(10)), "{row}");
    // Re-sent after the restart (its answer was lost, say): a duplicate.
    assert_eq!(v.heard(&server, ago(10)).await["duplicates"], 1);
    assert!(server.terminate().success());
}

/// A clean stop (SIGTERM) writes the held rows before it exits: after the
/// restart the row is whole at once, and nothing is derived again.
#[tokio::test]
async fn a_clean_stop_writes_the_held_rows_first() {
    let dir = tempfile::tempdir().unwrap();
    let (db, server, v) = holding(dir.path()).await;
    let now = Utc::now();
    for minutes_ago in [30, 20] {
        v.heard(&server, now - Duration::minutes(minutes_ago)).await;
    }
    assert_eq!(server.metric("rollcall_ingest_rows_waiting").await, Some(1.0), "the changed row is held back");
    assert!(server.terminate().success());

    let server = ServerProcess::start_with_flags(&db, &HOLD).await;
    let q = "query($e: ID!) { event(id: $e) { rederivation { pending } } attendance(eventId: $e) { edges { node { lastSeen sightings } } } }";
    let data = server.ok(Some(&v.admin), q, json!({ "e": v.event })).await;
    assert_eq!(data["event"]["rederivation"], Value::Null, "nothing to derive again: {data}");
    let row = &data["attendance"]["edges"][0]["node"];
    assert_eq!(row["sightings"], 2, "{row}");
    assert!(near(time(&row["lastSeen"]), now - Duration::minutes(20)), "{row}");
    assert!(server.terminate().success());
}

/// A person erased while their row is held back: the flush that follows
/// does not bring the row back.
#[tokio::test]
async fn an_erased_persons_held_row_is_not_written_back() {
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.row_flush_ms = 50;
    let app = spawn_with(args).await;
    let v = venue(&app, json!({})).await;
    assert_eq!(submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, 10), -60)])).await["checkIns"], 1);
    assert_eq!(submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, 20), -60)])).await["accepted"], 1);
    let admin = app.admin().await;
    let ada_id = app.ok(&v.ada.auth(), "{ me { id } }", json!({})).await["me"]["id"].clone();
    app.ok(&admin.auth(), "mutation($id: ID!) { deleteUser(id: $id) }", json!({ "id": ada_id })).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(attendance(&app, &v).await.is_empty(), "no row for an erased person");
}

/// Several batches for the same person, held back: one read shows them all,
/// in the same row as writing each through would have made.
#[tokio::test]
async fn held_rows_read_the_same_as_rows_written_with_each_batch() {
    let mut results = Vec::new();
    let start = Utc::now() - Duration::hours(1);
    for flush_ms in [0, 600_000] {
        let mut args = ServeArgs::for_tests(DbArgs::memory());
        args.row_flush_ms = flush_ms;
        let app = spawn_with(args).await;
        let v = venue_from(&app, json!({ "departureGapSeconds": 600 }), start).await;
        for minutes in [10, 12, 40, 41, 11] {
            submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, minutes), -70 + minutes as i32)])).await;
        }
        let rows = attendance(&app, &v).await;
        assert_eq!(rows.len(), 1);
        let mut row = rows[0].clone();
        row["user"] = Value::Null;
        row["presentNow"] = Value::Null;
        results.push(row);
    }
    assert_eq!(results[0]["sightings"], 5);
    assert_eq!(results[0]["stays"].as_array().unwrap().len(), 2, "{}", results[0]);
    assert_eq!(results[0], results[1]);
}

const SUBMIT_AGAIN: &str = "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) {
    accepted checkIns duplicates replayed storeEpoch } }";

impl Venue {
    /// Ada heard at `at` in the batch `id`, flagged `resent` or not.
    async fn batch(&self, server: &ServerProcess, id: uuid::Uuid, at: DateTime<Utc>, resent: bool) -> Value {
        let b = json!({ "b": { "batchId": id, "sightings": [sighting(&self.ble, at, -60)], "resent": resent } });
        server.ok(Some(&self.key), SUBMIT_AGAIN, b).await["submitSightings"].clone()
    }

    async fn sightings(&self, server: &ServerProcess) -> Value {
        server.ok(Some(&self.admin), ATTENDANCE, json!({ "e": self.event })).await["attendance"]["edges"][0]["node"]
            ["sightings"]
            .clone()
    }
}

/// What the engine does when a crash catches a commit in the wrong log
/// segment (`store::epoch`): the batch's raw record is gone, and the row
/// written after it still holds its sighting. Done here from outside, on
/// the stopped store, with SurrealDB's own client.
async fn lose_raw_batch(db: &DbArgs, batch: uuid::Uuid) {
    let conn = surrealdb::engine::any::connect(db.url.as_str()).await.expect("store opens");
    conn.use_ns("rollcall").use_db("rollcall").await.unwrap();
    let mut res = conn
        .query("DELETE batch WHERE record::id(id)[1] = $b RETURN BEFORE")
        .bind(("b", surrealdb::types::Uuid::from(batch)))
        .await
        .unwrap();
    let gone: Vec<surrealdb::types::Value> = res.take(0).unwrap();
    assert_eq!(gone.len(), 1, "the batch's raw record was there to lose");
    drop(res);
    drop(conn);
    let dir = db.url.strip_prefix("surrealkv://").unwrap();
    assert!(rollcall::store::embedded_closed(std::path::Path::new(dir), std::time::Duration::from_secs(10)).await);
}

/// The store's epoch is kept across a clean stop and changes after a kill;
/// a batch acknowledged before the kill and lost by the store, sent again
/// with `resent`, is stored again, and its event is derived again from the
/// raw log, so the sighting the row already held is not counted twice.
/// A resent batch the store still has is answered `replayed`.
#[tokio::test]
async fn a_batch_the_store_lost_is_taken_again_when_resent_after_a_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (db, server, v) = holding(dir.path()).await;
    let now = Utc::now();
    let (first, second) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let answer = v.batch(&server, first, now - Duration::minutes(30), false).await;
    assert_eq!(answer["checkIns"], 1);
    let epoch = answer["storeEpoch"].as_str().expect("an embedded store has an epoch").to_owned();

    assert!(server.terminate().success());
    // Rows written soon, and the event's marker cleared once none waits.
    let soon = ["--row-flush-ms", "100"];
    let server = ServerProcess::start_with_flags(&db, &soon).await;
    let answer = v.batch(&server, second, now - Duration::minutes(20), false).await;
    assert_eq!(answer["storeEpoch"], epoch.as_str(), "a clean stop keeps the epoch");
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    server.kill9();

    lose_raw_batch(&db, second).await;
    let server = ServerProcess::start_with_flags(&db, &soon).await;
    assert_eq!(v.sightings(&server).await, 2, "the row still holds the lost batch's sighting");
    // The scanner asks first what the store has, and sends again only what it lost.
    let q = "query($ids: [UUID!]!) { storedBatches(batchIds: $ids) { storeEpoch missing } }";
    let stored = server.ok(Some(&v.key), q, json!({ "ids": [first, second] })).await["storedBatches"].clone();
    assert_eq!(stored["missing"], json!([second]), "{stored}");
    assert_ne!(stored["storeEpoch"], epoch.as_str(), "a kill starts a new epoch");
    let kept = v.batch(&server, first, now - Duration::minutes(30), true).await;
    assert_eq!(kept["replayed"], true, "the store has it: {kept}");
    assert_ne!(kept["storeEpoch"], epoch.as_str(), "a kill starts a new epoch");
    let lost = v.batch(&server, second, now - Duration::minutes(20), true).await;
    assert_eq!((lost["replayed"].clone(), lost["accepted"].clone()), (json!(false), json!(1)), "stored again: {lost}");

    let q = "query($e: ID!) { event(id: $e) { rederivation { pending } } }";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.ok(Some(&v.admin), q, json!({ "e": v.event })).await["event"]["rederivation"]["pending"] == true {
        assert!(std::time::Instant::now() < deadline, "the re-derivation finishes");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(v.sightings(&server).await, 2, "the sighting the row held is counted once");
    assert_eq!(server.metric("rollcall_batches_restored_total").await, Some(1.0));
    assert!(server.terminate().success());
}
