//! What scanners ask for (`registeredDevices`) and the fleet view
//! (`scanners`), over real HTTP.

use serde_json::{Value, json};

use crate::helpers::{Auth, TestApp, spawn_app};

const DEVICES: &str = "query($e: ID!, $first: Int, $after: String, $v: String) {
    registeredDevices(eventId: $e, first: $first, after: $after, knownVersion: $v) {
        version changed identifiers nextCursor total } }";

async fn devices(app: &TestApp, auth: &Auth, vars: Value) -> Value {
    app.ok(auth, DEVICES, vars).await["registeredDevices"].clone()
}

async fn ble_of(app: &TestApp, who: &crate::helpers::Session) -> String {
    app.ok(&who.auth(), "{ me { bleUuid } }", json!({})).await["me"]["bleUuid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_scanner_gets_the_identifiers_it_may_count_paged_and_versioned() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let event = app.create_event(&org, "Talk").await;
    let (_, secret) = app.api_key(&org, "door", Some(vec![&event])).await;
    let key = Auth::ApiKey(secret);

    let mut expected = Vec::new();
    for name in ["ada", "bob", "cy"] {
        let who = app.sign_up(&format!("{name}@example.org"), name).await;
        app.ok(&who.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": event })).await;
        expected.push(ble_of(&app, &who).await);
    }
    let admin = app.admin().await;
    let bob_id = app.ok(&admin.auth(), "{ userByEmail(email: \"bob@example.org\") { id } }", json!({})).await
        ["userByEmail"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.ok(
        &admin.auth(),
        "mutation($u: ID!) { addDeviceIdentifier(userId: $u, identifier: \"Bob's Badge\") { identifier } }",
        json!({ "u": bob_id }),
    )
    .await;
    expected.push("Bob's Badge".to_owned());
    // Someone not registered is not in the list.
    let stranger = app.sign_up("dee@example.org", "Dee").await;
    let stranger_ble = ble_of(&app, &stranger).await;
    expected.sort();

    let all = devices(&app, &key, json!({ "e": event })).await;
    assert_eq!(all["total"], 4);
    assert_eq!(all["identifiers"], json!(expected));
    assert!(all["nextCursor"].is_null());
    assert!(!all.to_string().contains(&stranger_ble));

    // Pages of two.
    let p1 = devices(&app, &key, json!({ "e": event, "first": 2 })).await;
    let p2 = devices(&app, &key, json!({ "e": event, "first": 2, "after": p1["nextCursor"] })).await;
    let paged: Vec<Value> =
        [p1["identifiers"].as_array().unwrap().clone(), p2["identifiers"].as_array().unwrap().clone()].concat();
    assert_eq!(json!(paged), json!(expected));
    assert!(p2["nextCursor"].is_null());

    // Unchanged: a short answer. A registration changes the version.
    let same = devices(&app, &key, json!({ "e": event, "v": all["version"] })).await;
    assert_eq!(same["changed"], false);
    assert_eq!(same["identifiers"], json!([]));
    app.ok(&stranger.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": event })).await;
    let changed = devices(&app, &key, json!({ "e": event, "v": all["version"] })).await;
    assert_eq!(changed["changed"], true);
    assert_eq!(changed["total"], 5);

    // A key for another event may not ask.
    let other = app.create_event(&org, "Other").await;
    let (_, other_secret) = app.api_key(&org, "other door", Some(vec![&other])).await;
    let (_, body) = app.post_gql(&Auth::ApiKey(other_secret), DEVICES, json!({ "e": event })).await;
    assert_eq!(crate::helpers::code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    let (_, body) = app.post_gql(&stranger.auth(), DEVICES, json!({ "e": event })).await;
    assert_eq!(crate::helpers::code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
}

#[tokio::test]
async fn the_fleet_shows_heartbeats_batches_and_stale_scanners() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let event = app.create_event(&org, "Talk").await;
    let (_, quiet) = app.api_key(&org, "quiet door", Some(vec![&event])).await;
    let (_, busy) = app.api_key(&org, "busy door", Some(vec![&event])).await;
    let _ = quiet;
    app.ok(
        &Auth::ApiKey(busy),
        "mutation { scannerHeartbeat(input: { version: \"1.2.3\", outboxDepth: 7, clock: \"2030-01-01T00:00:00Z\" }) { at } }",
        json!({}),
    )
    .await;
    let q = "query($s: Int) { scanners(staleAfterSeconds: $s) {
        name lastHeardAt outboxDepth clockSkewMs version stale revoked apiKey { id } } }";
    let fleet = app.ok(&org.auth(), q, json!({ "s": 60 })).await["scanners"].clone();
    let by_name = |n: &str| fleet.as_array().unwrap().iter().find(|s| s["name"] == n).unwrap().clone();
    let busy = by_name("busy door");
    assert_eq!(busy["stale"], false);
    assert_eq!(busy["outboxDepth"], 7);
    assert_eq!(busy["version"], "1.2.3");
    assert!(busy["clockSkewMs"].as_i64().unwrap() > 0, "its clock is ahead: {busy}");
    let quiet = by_name("quiet door");
    assert_eq!(quiet["stale"], true, "never heard from");
    assert!(quiet["lastHeardAt"].is_null());

    // Two scanners at the same event, both heartbeating: the one that hears
    // nothing while the other hears a crowd is `silent` (a dead radio).
    let (_, deaf) = app.api_key(&org, "deaf door", Some(vec![&event])).await;
    let (_, loud) = app.api_key(&org, "loud door", Some(vec![&event])).await;
    let beat = "mutation($n: Int!) { scannerHeartbeat(input: { version: \"1.2.3\", outboxDepth: 0,
        clock: \"2030-01-01T00:00:00Z\", health: { advertsPerMinute: $n } }) { at } }";
    app.ok(&Auth::ApiKey(deaf), beat, json!({ "n": 0 })).await;
    app.ok(&Auth::ApiKey(loud), beat, json!({ "n": 420 })).await;
    let q2 = "{ scanners { name silent stale advertsPerMinute } }";
    let fleet = app.ok(&org.auth(), q2, json!({})).await["scanners"].clone();
    let find = |n: &str| fleet.as_array().unwrap().iter().find(|s| s["name"] == n).unwrap().clone();
    assert_eq!(find("deaf door")["silent"], true, "{fleet}");
    assert_eq!(find("loud door")["silent"], false);
    assert_eq!(find("loud door")["advertsPerMinute"], 420);
    assert_eq!(find("quiet door")["silent"], false, "never heard from: stale, not silent");

    // Another organiser sees none of them; an attendee may not ask.
    let other = app.organizer("other@example.org").await;
    assert_eq!(app.ok(&other.auth(), q, json!({})).await["scanners"], json!([]));
    let ada = app.sign_up("ada@example.org", "Ada").await;
    assert_eq!(app.err(&ada.auth(), q, json!({})).await, "FORBIDDEN");
    assert_eq!(app.err(&org.auth(), q, json!({ "s": 0 })).await, "VALIDATION");
}

#[tokio::test]
async fn the_fleet_of_one_event_is_its_unrevoked_keys() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let talk = app.create_event(&org, "Talk").await;
    let other = app.create_event(&org, "Workshop").await;
    app.api_key(&org, "talk door", Some(vec![&talk])).await;
    app.api_key(&org, "workshop door", Some(vec![&other])).await;
    app.api_key(&org, "any of mine", None).await;
    let (old, _) = app.api_key(&org, "rotated out", Some(vec![&talk])).await;
    app.ok(&org.auth(), "mutation($id: ID!) { revokeApiKey(id: $id) { id } }", json!({ "id": old })).await;
    let q = "query($e: ID) { scanners(eventId: $e) { name } }";
    let fleet = app.ok(&org.auth(), q, json!({ "e": talk })).await["scanners"].clone();
    let mut names: Vec<&str> = fleet.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["any of mine", "talk door"]);
    assert_eq!(app.ok(&org.auth(), q, json!({ "e": null })).await["scanners"].as_array().unwrap().len(), 4);

    // Only for an event you manage.
    let stranger = app.organizer("stranger@example.org").await;
    assert_eq!(app.err(&stranger.auth(), q, json!({ "e": talk })).await, "FORBIDDEN");
}

/// A scanner's batches in quick succession are recorded on its key as one:
/// the last batch, and every unknown device they heard.
#[tokio::test]
async fn quick_batches_are_noted_on_the_key_as_the_last_and_the_sum() {
    let app = spawn_app().await;
    let v = crate::ingest::venue(&app, json!({})).await;
    let mut last = String::new();
    for minute in 1..=4 {
        let vars = crate::ingest::batch(vec![
            crate::ingest::sighting(&uuid::Uuid::new_v4().to_string(), crate::ingest::at(&v, minute), -60),
            crate::ingest::sighting(&v.ada_ble, crate::ingest::at(&v, minute), -60),
        ]);
        last = vars["b"]["batchId"].as_str().unwrap().to_owned();
        assert_eq!(crate::ingest::submit(&app, &v, &vars).await["unknownDevices"], 1);
    }
    let q = "{ apiKeys { lastBatchId unknownDevices } }";
    let keys = app.ok_eventually(&v.org.auth(), q, json!({}), |d| d["apiKeys"][0]["unknownDevices"] == 4).await;
    assert_eq!(keys["apiKeys"][0], json!({ "lastBatchId": last, "unknownDevices": 4 }));
}
