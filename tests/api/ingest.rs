//! `submitSightings` over real HTTP: the attendance rules end to end.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::helpers::{Auth, Session, TestApp, code, spawn_app};

pub(crate) const SUBMIT: &str = "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) {
    accepted checkIns duplicates unknownDevices unregistered outsideEvent belowRssi replayed rejected { index reason } } }";

const ATTENDANCE: &str = "query($e: ID!) { attendance(eventId: $e) { edges { node {
    user { id } checkedInAt firstSeen lastSeen stays { from to } dwellSeconds sightings bestRssi presentNow } } } }";

/// An organiser, an active event around now, a scanner key for it, and a registered attendee.
pub(crate) struct Venue {
    pub(crate) org: Session,
    pub(crate) event: String,
    pub(crate) key: Auth,
    pub(crate) ada: Session,
    pub(crate) ada_ble: String,
    pub(crate) start: DateTime<Utc>,
}

pub(crate) async fn venue(app: &TestApp, policy: Value) -> Venue {
    venue_from(app, policy, Utc::now() - Duration::hours(1)).await
}

pub(crate) async fn venue_from(app: &TestApp, policy: Value, start: DateTime<Utc>) -> Venue {
    let org = app.organizer("org@example.org").await;
    let data = app
        .ok(
            &org.auth(),
            "mutation($i: CreateEventInput!) { createEvent(input: $i) { id } }",
            json!({ "i": { "name": "Live", "startsAt": start, "endsAt": start + Duration::hours(3), "policy": policy } }),
        )
        .await;
    let event = data["createEvent"]["id"].as_str().unwrap().to_owned();
    app.activate(&org, &event).await;
    let (_, secret) = app.api_key(&org, "door", Some(vec![&event])).await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    app.ok(&ada.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": event })).await;
    let ada_ble =
        app.ok(&ada.auth(), "{ me { bleUuid } }", json!({})).await["me"]["bleUuid"].as_str().unwrap().to_owned();
    Venue { org, event, key: Auth::ApiKey(secret), ada, ada_ble, start }
}

pub(crate) fn batch(sightings: Vec<Value>) -> Value {
    json!({ "b": { "batchId": uuid::Uuid::new_v4(), "sightings": sightings } })
}

pub(crate) fn at(v: &Venue, minutes: i64) -> DateTime<Utc> {
    v.start + Duration::minutes(minutes)
}

pub(crate) fn sighting(ble: &str, when: DateTime<Utc>, rssi: i32) -> Value {
    json!({ "bleUuid": ble, "seenAt": when, "rssi": rssi })
}

pub(crate) async fn submit(app: &TestApp, v: &Venue, vars: &Value) -> Value {
    app.ok(&v.key, SUBMIT, vars.clone()).await["submitSightings"].clone()
}

/// Waits for the background re-derivation a policy or window change asked
/// for, watching `event { rederivation }` as a client would.
pub(crate) async fn rederived(app: &TestApp, v: &Venue) {
    let q =
        "query($e: ID!) { event(id: $e) { rederivation { pending running progress batchesDone batchesTotal rows } } }";
    let data = app
        .ok_eventually(&v.org.auth(), q, json!({ "e": v.event }), |d| d["event"]["rederivation"]["pending"] == false)
        .await;
    let r = &data["event"]["rederivation"];
    assert_eq!(r["pending"], false, "re-derivation finished: {r}");
    assert_eq!(r["progress"], 1.0);
}

pub(crate) async fn attendance(app: &TestApp, v: &Venue) -> Vec<Value> {
    let data = app.ok(&v.org.auth(), ATTENDANCE, json!({ "e": v.event })).await;
    data["attendance"]["edges"].as_array().unwrap().iter().map(|e| e["node"].clone()).collect()
}

#[tokio::test]
async fn sightings_become_a_check_in_with_stays() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let r = submit(
        &app,
        &v,
        &batch(vec![
            sighting(&v.ada_ble, at(&v, 10), -60),
            sighting(&v.ada_ble.to_uppercase(), at(&v, 12), -55),
            sighting(&v.ada_ble, at(&v, 30), -70),
        ]),
    )
    .await;
    assert_eq!(r["accepted"], 3);
    assert_eq!(r["checkIns"], 1);
    assert_eq!(r["duplicates"], 0);
    assert_eq!(r["replayed"], false);
    let rows = attendance(&app, &v).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["user"]["id"], v.ada.id.as_str());
    assert_eq!(row["sightings"], 3);
    assert_eq!(row["bestRssi"], -55);
    assert_eq!(row["stays"].as_array().unwrap().len(), 2, "a 18-minute gap opens a new stay");
    assert_eq!(row["dwellSeconds"], 120);
    assert_eq!(row["presentNow"], false);
    let first: DateTime<Utc> = row["checkedInAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(first.timestamp_millis(), at(&v, 10).timestamp_millis());

    // A second batch: no new check-in; an earlier sighting moves the check-in earlier.
    let r = submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, 5), -80)])).await;
    assert_eq!(r["checkIns"], 0);
    let row = &attendance(&app, &v).await[0];
    let first: DateTime<Utc> = row["checkedInAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(first.timestamp_millis(), at(&v, 5).timestamp_millis());
    assert_eq!(row["sightings"], 4);

    // Seen a minute ago, within the 5-minute departure gap: present now.
    submit(&app, &v, &batch(vec![sighting(&v.ada_ble, Utc::now() - Duration::minutes(1), -60)])).await;
    assert_eq!(attendance(&app, &v).await[0]["presentNow"], true);
    let mine = app.ok(&v.ada.auth(), "{ me { attendance { presentNow } } }", json!({})).await;
    assert_eq!(mine["me"]["attendance"][0]["presentNow"], true);
}

/// Scanners that hear the same person upload at the same moment: every
/// batch is taken (none refused for a conflict), she is checked in once,
/// and her row has every sighting.
#[tokio::test]
async fn batches_checking_in_one_person_at_once_are_all_taken_and_count_her_once() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let sends = (0..8).map(|m| {
        let (app, v, vars) = (&app, &v, batch(vec![sighting(&v.ada_ble, at(&v, m), -60)]));
        async move { submit(app, v, &vars).await }
    });
    let results = futures_util::future::join_all(sends).await;
    for r in &results {
        assert_eq!(r["accepted"], 1, "{r}");
        assert_eq!(r["rejected"], json!([]), "{r}");
    }
    let check_ins: i64 = results.iter().map(|r| r["checkIns"].as_i64().unwrap()).sum();
    assert_eq!(check_ins, 1, "one check-in, whichever batch made it");
    let rows = attendance(&app, &v).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["sightings"], 8);
    let first: DateTime<Utc> = rows[0]["checkedInAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(first.timestamp_millis(), at(&v, 0).timestamp_millis(), "the earliest sighting, whatever the order");
}

#[tokio::test]
async fn a_retried_batch_is_replayed_and_changes_nothing() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let vars = batch(vec![sighting(&v.ada_ble, at(&v, 10), -60), sighting("nobody", at(&v, 10), -60)]);
    let first = submit(&app, &v, &vars).await;
    let before = attendance(&app, &v).await;
    let again = submit(&app, &v, &vars).await;
    assert_eq!(again["replayed"], true);
    let mut expected = first.clone();
    expected["replayed"] = json!(true);
    assert_eq!(again, expected, "the stored result is returned");
    assert_eq!(attendance(&app, &v).await, before);

    // The same sighting in a new batch counts once.
    let r = submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, 10), -60)])).await;
    assert_eq!((r["duplicates"].as_i64(), r["checkIns"].as_i64()), (Some(1), Some(0)));
    assert_eq!(attendance(&app, &v).await[0]["sightings"], 1);
}

/// `storedBatches` tells a scanner which of its own batch ids the store
/// does not have: per key, for API keys only, at most 5,000 at a time.
#[tokio::test]
async fn stored_batches_names_what_the_store_does_not_have_of_this_scanners_batches() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let vars = batch(vec![sighting(&v.ada_ble, at(&v, 10), -60)]);
    submit(&app, &v, &vars).await;
    let (sent, never) = (vars["b"]["batchId"].clone(), json!(uuid::Uuid::new_v4()));
    let q = "query($ids: [UUID!]!) { storedBatches(batchIds: $ids) { storeEpoch missing } }";
    let answer = app.ok(&v.key, q, json!({ "ids": [sent, never] })).await;
    assert_eq!(answer["storedBatches"]["missing"], json!([never]), "{answer}");

    let (_, other) = app.api_key(&v.org, "another door", Some(vec![&v.event])).await;
    let answer = app.ok(&Auth::ApiKey(other), q, json!({ "ids": [sent] })).await;
    assert_eq!(answer["storedBatches"]["missing"], json!([sent]), "batch ids are per scanner");

    let (_, body) = app.post_gql(&v.org.auth(), q, json!({ "ids": [sent] })).await;
    assert_eq!(code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    let many: Vec<uuid::Uuid> = (0..5001).map(|_| uuid::Uuid::new_v4()).collect();
    let (_, body) = app.post_gql(&v.key, q, json!({ "ids": many })).await;
    assert_eq!(code(&body).as_deref(), Some("VALIDATION"), "{}", body["errors"]);
}

#[tokio::test]
async fn unknown_devices_are_only_counted() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let r = submit(
        &app,
        &v,
        &batch(vec![
            sighting("AA:BB:CC:00:11:22", at(&v, 10), -60),
            sighting(&uuid::Uuid::new_v4().to_string(), at(&v, 10), -60),
        ]),
    )
    .await;
    assert_eq!(r["unknownDevices"], 2);
    assert_eq!(r["checkIns"], 0);
    assert!(attendance(&app, &v).await.is_empty());
    // The scanner's record shows its last batch and the unknown devices it heard.
    let keys = app
        .ok_eventually(
            &v.org.auth(),
            "{ apiKeys { lastBatchAt lastBatchId unknownDevices lastUsedAt } }",
            json!({}),
            |d| d["apiKeys"][0]["lastUsedAt"].is_string() && d["apiKeys"][0]["lastBatchAt"].is_string(),
        )
        .await;
    let key = &keys["apiKeys"][0];
    assert_eq!(key["unknownDevices"], 2);
    assert!(key["lastBatchAt"].is_string() && key["lastBatchId"].is_string() && key["lastUsedAt"].is_string(), "{key}");
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused_whole() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let many: Vec<Value> = (0..5001).map(|i| sighting(&v.ada_ble, at(&v, 10) + Duration::seconds(i), -60)).collect();
    let (_, body) = app.post_gql(&v.key, SUBMIT, batch(many)).await;
    assert_eq!(code(&body).as_deref(), Some("VALIDATION"), "{}", body["errors"]);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("at most 5000"));
    assert!(attendance(&app, &v).await.is_empty());
}

#[tokio::test]
async fn invalid_sightings_are_rejected_one_by_one() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let mut bad_event = sighting(&v.ada_ble, at(&v, 12), -60);
    bad_event["eventId"] = json!("not-an-id");
    let sightings = vec![
        sighting(&v.ada_ble, Utc::now() + Duration::hours(30), -60),
        sighting(&v.ada_ble, at(&v, 10), -200),
        sighting(&v.ada_ble, at(&v, 11), -60),
        bad_event,
    ];
    let r = submit(&app, &v, &batch(sightings)).await;
    assert_eq!(r["accepted"], 1);
    assert_eq!(r["checkIns"], 1);
    let rejected = r["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 3);
    assert_eq!(rejected[0]["index"], 0);
    assert!(rejected[0]["reason"].as_str().unwrap().contains("24 hours"));
    assert!(rejected[1]["reason"].as_str().unwrap().contains("rssi"));
    assert_eq!(rejected[2]["index"], 3);
    assert!(rejected[2]["reason"].as_str().unwrap().contains("not a valid event id"));
}

#[tokio::test]
async fn the_window_with_grace_and_min_rssi_decide_what_counts() {
    let app = spawn_app().await;
    let v = venue(&app, json!({ "graceSeconds": 600, "minRssi": -80 })).await;
    let r = submit(
        &app,
        &v,
        &batch(vec![
            sighting(&v.ada_ble, at(&v, -11), -60),      // before start − grace
            sighting(&v.ada_ble, at(&v, 180 + 11), -60), // after end + grace (in the future, < 24 h)
            sighting(&v.ada_ble, at(&v, 30), -81),       // too weak
        ]),
    )
    .await;
    assert_eq!(r["outsideEvent"], 2);
    assert_eq!(r["belowRssi"], 1);
    assert_eq!(r["checkIns"], 0);
    let r = submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, -9), -80)])).await;
    assert_eq!(r["checkIns"], 1, "within grace, at exactly minRssi");
}

#[tokio::test]
async fn keys_only_report_for_their_scope_and_revoked_keys_are_refused() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let other_org = app.organizer("other@example.org").await;
    let other = app.create_event(&other_org, "Elsewhere").await;
    app.activate(&other_org, &other).await;
    let mut s = sighting(&v.ada_ble, at(&v, 10), -60);
    s["eventId"] = json!(other);
    let r = submit(&app, &v, &batch(vec![s])).await;
    assert_eq!(r["accepted"], 0);
    assert!(r["rejected"][0]["reason"].as_str().unwrap().contains("scope"), "{r}");

    let (key_id, secret) = app.api_key(&v.org, "soon revoked", Some(vec![&v.event])).await;
    app.ok(&v.org.auth(), "mutation($id: ID!) { revokeApiKey(id: $id) { id } }", json!({ "id": key_id })).await;
    let (status, body) =
        app.post_gql(&Auth::ApiKey(secret), SUBMIT, batch(vec![sighting(&v.ada_ble, at(&v, 10), -60)])).await;
    assert_eq!((status, code(&body).as_deref()), (401, Some("UNAUTHENTICATED")));
    let (_, body) = app.post_gql(&v.org.auth(), SUBMIT, batch(vec![])).await;
    assert_eq!(code(&body).as_deref(), Some("FORBIDDEN"), "a person cannot upload sightings");
}

#[tokio::test]
async fn unregistered_users_in_each_registration_mode() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let bob = app.sign_up("bob@example.org", "Bob").await;
    let bob_ble =
        app.ok(&bob.auth(), "{ me { bleUuid } }", json!({})).await["me"]["bleUuid"].as_str().unwrap().to_owned();
    let r = submit(&app, &v, &batch(vec![sighting(&bob_ble, at(&v, 10), -60)])).await;
    assert_eq!((r["unregistered"].as_i64(), r["checkIns"].as_i64()), (Some(1), Some(0)));

    // Open the event to walk-ins: deriving attendance again counts Bob's
    // earlier sighting, and registers him as a walk-in.
    let open = "mutation($id: ID!) { updateEvent(id: $id, input: { policy: { requireRegistration: false } }) { id } }";
    app.ok(&v.org.auth(), open, json!({ "id": v.event })).await;
    rederived(&app, &v).await;
    let rows = attendance(&app, &v).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["user"]["id"], bob.id.as_str());
    let r = submit(&app, &v, &batch(vec![sighting(&bob_ble, at(&v, 20), -60)])).await;
    assert_eq!((r["unregistered"].as_i64(), r["checkIns"].as_i64()), (Some(0), Some(0)));

    // A newcomer at the open event walks in on their first sighting.
    let cy = app.sign_up("cy@example.org", "Cy").await;
    let cy_ble =
        app.ok(&cy.auth(), "{ me { bleUuid } }", json!({})).await["me"]["bleUuid"].as_str().unwrap().to_owned();
    let r = submit(&app, &v, &batch(vec![sighting(&cy_ble, at(&v, 25), -60)])).await;
    assert_eq!((r["unregistered"].as_i64(), r["checkIns"].as_i64()), (Some(0), Some(1)));
    let regs = app
        .ok(
            &v.org.auth(),
            "query($id: ID!) { event(id: $id) { registrations { edges { node { walkIn user { id } } } } } }",
            json!({ "id": v.event }),
        )
        .await;
    let edges = regs["event"]["registrations"]["edges"].as_array().unwrap().clone();
    for who in [&bob.id, &cy.id] {
        let walk_in = edges.iter().find(|e| e["node"]["user"]["id"] == who.as_str()).cloned().unwrap();
        assert_eq!(walk_in["node"]["walkIn"], true);
    }
}

#[tokio::test]
async fn out_of_order_batches_give_the_in_order_result() {
    let start = Utc::now() - Duration::hours(1);
    let in_order = {
        let app = spawn_app().await;
        let v = venue_from(&app, json!({}), start).await;
        for m in [0, 3, 6, 20, 22] {
            submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, m), -60)])).await;
        }
        attendance(&app, &v).await[0].clone()
    };
    let shuffled = {
        let app = spawn_app().await;
        let v = venue_from(&app, json!({}), start).await;
        submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, 22), -60), sighting(&v.ada_ble, at(&v, 6), -60)]))
            .await;
        submit(
            &app,
            &v,
            &batch(vec![
                sighting(&v.ada_ble, at(&v, 3), -60),
                sighting(&v.ada_ble, at(&v, 20), -60),
                sighting(&v.ada_ble, at(&v, 0), -60),
            ]),
        )
        .await;
        attendance(&app, &v).await[0].clone()
    };
    let strip = |mut row: Value| {
        row.as_object_mut().unwrap().remove("user");
        row
    };
    assert_eq!(strip(in_order), strip(shuffled));
}

#[tokio::test]
async fn manual_check_ins_report_and_my_attendance() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let q = "mutation($e: ID!, $u: ID!, $t: DateTime) { recordAttendance(eventId: $e, userId: $u, at: $t) { checkedInAt sightings } }";
    let r = app.ok(&v.org.auth(), q, json!({ "e": v.event, "u": v.ada.id, "t": at(&v, 15) })).await;
    assert_eq!(r["recordAttendance"]["sightings"], 1);
    let too_late = json!({ "e": v.event, "u": v.ada.id, "t": at(&v, 600) });
    assert_eq!(app.err(&v.org.auth(), q, too_late).await, "VALIDATION");
    assert_eq!(app.err(&v.ada.auth(), q, json!({ "e": v.event, "u": v.ada.id })).await, "FORBIDDEN");

    let bob = app.sign_up("bob@example.org", "Bob").await;
    app.ok(&bob.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": v.event })).await;
    let report = app
        .ok(&v.org.auth(), "query($e: ID!) { eventReport(eventId: $e) { registered checkedIn noShows walkIns attendanceRate medianDwellSeconds meanDwellSeconds arrivals { start count } } }", json!({ "e": v.event }))
        .await["eventReport"]
        .clone();
    assert_eq!(report["registered"], 2);
    assert_eq!(report["checkedIn"], 1);
    assert_eq!(report["noShows"], 1);
    assert_eq!(report["walkIns"], 0);
    assert_eq!(report["attendanceRate"], 0.5);
    assert_eq!(report["arrivals"].as_array().unwrap().len(), 1);
    assert_eq!(report["arrivals"][0]["count"], 1);

    let mine = app.ok(&v.ada.auth(), "{ me { attendance { event { id } sightings } } }", json!({})).await;
    assert_eq!(mine["me"]["attendance"][0]["event"]["id"], v.event.as_str());
    assert_eq!(
        app.err(&bob.auth(), "query($u: ID!) { user(id: $u) { attendance { sightings } } }", json!({ "u": v.ada.id }))
            .await,
        "FORBIDDEN"
    );
}

#[tokio::test]
async fn deleting_an_event_or_a_user_removes_their_attendance() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, 10), -60)])).await;
    let mine = "{ me { attendance { sightings } } }";
    assert_eq!(app.ok(&v.ada.auth(), mine, json!({})).await["me"]["attendance"].as_array().unwrap().len(), 1);
    app.ok(&v.org.auth(), "mutation($id: ID!) { deleteEvent(id: $id) }", json!({ "id": v.event })).await;
    assert_eq!(app.ok(&v.ada.auth(), mine, json!({})).await["me"]["attendance"], json!([]));

    // A deleted user's attendance goes with them.
    let admin = app.admin().await;
    let event = app.create_event(&v.org, "Second").await;
    let start = Utc::now() - Duration::hours(1);
    let window = json!({ "id": event, "i": { "startsAt": start, "endsAt": start + Duration::hours(3) } });
    app.ok(
        &v.org.auth(),
        "mutation($id: ID!, $i: UpdateEventInput!) { updateEvent(id: $id, input: $i) { id } }",
        window,
    )
    .await;
    app.activate(&v.org, &event).await;
    app.ok(&v.ada.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": event })).await;
    let (_, key) = app.api_key(&v.org, "second door", Some(vec![&event])).await;
    let r =
        app.ok(&Auth::ApiKey(key), SUBMIT, batch(vec![sighting(&v.ada_ble, start + Duration::minutes(5), -60)])).await;
    assert_eq!(r["submitSightings"]["checkIns"], 1);
    app.ok(&admin.auth(), "mutation($id: ID!) { deleteUser(id: $id) }", json!({ "id": v.ada.id })).await;
    let rows = app.ok(&v.org.auth(), ATTENDANCE, json!({ "e": event })).await;
    assert_eq!(rows["attendance"]["edges"], json!([]));
}
