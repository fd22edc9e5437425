//! Identity over real HTTP: rotating identifiers resolved by the server, a
//! copied identifier refused outside its slot, and iBeacons matched by their
//! full form or their UUID (docs/identity.md).

use chrono::{Duration, Utc};
use rollcall::domain::identity::{identifier, parse_secret, slot_of};
use serde_json::{Value, json};

use crate::helpers::{code, spawn_app};
use crate::ingest::{attendance, batch, sighting, submit, venue};

const SUBMIT: &str = "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) {
    accepted checkIns duplicates unknownDevices unregistered outsideEvent replayedIdentifiers identityNotAccepted
    rejected { reason } } }";

const BEACON: &str = "{ me { id beacon { secret scheme slotSeconds identifier validUntil } } }";

/// The identifier `secret` advertises at `t`, computed as a phone would.
fn rotating(beacon: &Value, t: chrono::DateTime<Utc>) -> String {
    let secret = parse_secret(beacon["secret"].as_str().unwrap()).unwrap();
    let slot_secs = beacon["slotSeconds"].as_i64().unwrap();
    identifier(&secret, slot_of(t.timestamp(), slot_secs)).to_string()
}

#[tokio::test]
async fn a_rotating_identifier_checks_in_and_a_copy_from_an_earlier_slot_does_not() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let me = app.ok(&v.ada.auth(), BEACON, json!({})).await["me"].clone();
    let beacon = &me["beacon"];
    assert_eq!(beacon["scheme"], "rollcall-beacon-v1");
    assert_eq!(beacon["slotSeconds"], 600);
    assert_eq!(beacon["secret"].as_str().unwrap().len(), 64, "issued at sign-up: {beacon}");
    let now = Utc::now();
    assert_eq!(beacon["identifier"].as_str().unwrap(), rotating(beacon, now), "the server and the phone agree");

    // Heard 40 minutes ago (an offline scanner uploading late), advertising
    // that slot's identifier: a check-in.
    let earlier = now - Duration::minutes(40);
    let copied = rotating(beacon, earlier);
    let r = app.ok(&v.key, SUBMIT, batch(vec![sighting(&copied, earlier, -60)])).await["submitSightings"].clone();
    assert_eq!((r["checkIns"].as_i64(), r["replayedIdentifiers"].as_i64()), (Some(1), Some(0)), "{r}");

    // A friend who copied that identifier plays it now (and a minute later
    // as an iBeacon): not counted, counted as replayed.
    let replay =
        vec![sighting(&copied, now, -50), sighting(&format!("ibeacon:{copied}:1:2"), now + Duration::seconds(60), -50)];
    let r = app.ok(&v.key, SUBMIT, batch(replay)).await["submitSightings"].clone();
    assert_eq!(r["replayedIdentifiers"], 2, "{r}");
    assert_eq!(
        (r["checkIns"].as_i64(), r["duplicates"].as_i64(), r["unknownDevices"].as_i64()),
        (Some(0), Some(0), Some(0))
    );
    let rows = attendance(&app, &v).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["lastSeen"].as_str().map(|s| s.parse::<chrono::DateTime<Utc>>().unwrap()),
        Some(chrono::DateTime::from_timestamp_millis(earlier.timestamp_millis()).unwrap()),
        "the replay did not extend Ada's stay: {}",
        rows[0]
    );

    // Ada's own phone now, one slot off (its clock is ahead): counted.
    let ahead = rotating(beacon, now + Duration::seconds(600));
    let r = submit(&app, &v, &batch(vec![sighting(&ahead, now, -55)])).await;
    assert_eq!(r["accepted"], 1);
    let r2 =
        app.ok(&v.key, SUBMIT, batch(vec![sighting(&rotating(beacon, now), now + Duration::seconds(1), -55)])).await;
    assert_eq!(r2["submitSightings"]["replayedIdentifiers"], 0, "{r2}");
    let rows = attendance(&app, &v).await;
    assert_eq!(rows[0]["sightings"], 3, "{}", rows[0]);
}

#[tokio::test]
async fn a_rotated_secret_stops_the_old_identifiers_and_nobody_else_sees_it() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    const ROTATE: &str = "mutation { rotateBeaconSecret { secret slotSeconds identifier } }";
    // Issued at sign-up, a moment ago: not replaced again so soon.
    let (_, body) = app.post_gql(&v.ada.auth(), ROTATE, json!({})).await;
    assert_eq!(code(&body).as_deref(), Some("RATE_LIMITED"), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("try again in"), "{body}");
    // As if issued two minutes ago.
    let ada: uuid::Uuid = v.ada.id.parse().unwrap();
    let earlier = Utc::now() - Duration::minutes(2);
    app.state.store.beacons().set(ada, &rollcall::domain::identity::new_secret(), earlier).await.unwrap();
    let old = app.ok(&v.ada.auth(), BEACON, json!({})).await["me"]["beacon"].clone();
    let new = app.ok(&v.ada.auth(), ROTATE, json!({})).await["rotateBeaconSecret"].clone();
    assert_ne!(old["secret"], new["secret"]);
    let (_, again) = app.post_gql(&v.ada.auth(), ROTATE, json!({})).await;
    assert_eq!(code(&again).as_deref(), Some("RATE_LIMITED"), "once a minute: {again}");
    let now = Utc::now();
    let r = app
        .ok(
            &v.key,
            SUBMIT,
            batch(vec![sighting(&rotating(&old, now), now, -60), sighting(&rotating(&new, now), now, -60)]),
        )
        .await["submitSightings"]
        .clone();
    assert_eq!((r["unknownDevices"].as_i64(), r["checkIns"].as_i64()), (Some(1), Some(1)), "{r}");

    // Organisers and admins see a user's bleUuid, never their beacon secret.
    let seen = app
        .ok(
            &v.org.auth(),
            "query($id: ID!) { user(id: $id) { bleUuid beacon { secret } } }",
            json!({ "id": app.ok(&v.ada.auth(), "{ me { id } }", json!({})).await["me"]["id"] }),
        )
        .await;
    assert!(seen["user"]["bleUuid"].is_string() && seen["user"]["beacon"].is_null(), "{seen}");
    // A scanner key cannot rotate anyone's secret.
    let (status, body) = app.post_gql(&v.key, "mutation { rotateBeaconSecret { secret } }", json!({})).await;
    assert!(status == 200 && body["errors"].is_array(), "{body}");
}

#[tokio::test]
async fn an_ibeacon_matches_its_full_form_then_its_uuid() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    // Ada's phone advertises her bleUuid as an iBeacon with any major/minor.
    let now = Utc::now();
    let heard = format!("ibeacon:{}:7:9", v.ada_ble.to_uppercase());
    let r = submit(&app, &v, &batch(vec![sighting(&heard, now, -60)])).await;
    assert_eq!(r["checkIns"], 1, "{r}");
    // A badge of a shared vendor UUID, registered with its major and minor to Bob.
    let bob = app.sign_up("bob@example.org", "Bob").await;
    app.ok(&bob.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": v.event })).await;
    let vendor = "b9407f30-f5f8-466e-aff9-25556b57fe6d";
    app.ok(
        &v.org.auth(),
        "mutation($i: String!, $u: ID) { addDeviceIdentifier(identifier: $i, userId: $u) { identifier } }",
        json!({ "i": format!("ibeacon:{vendor}:258:43981"), "u": bob.id }),
    )
    .await;
    let r = submit(
        &app,
        &v,
        &batch(vec![
            sighting(&format!("ibeacon:{vendor}:258:43981"), now, -60),
            sighting(&format!("ibeacon:{vendor}:258:1"), now, -60),
        ]),
    )
    .await;
    assert_eq!((r["checkIns"].as_i64(), r["unknownDevices"].as_i64()), (Some(1), Some(1)), "only Bob's badge: {r}");
}

#[tokio::test]
async fn an_events_identity_policy_says_which_identifiers_count_and_a_change_derives_again() {
    let app = spawn_app().await;
    let v = venue(&app, json!({ "identity": "ROTATING" })).await;
    let beacon = app.ok(&v.ada.auth(), BEACON, json!({})).await["me"]["beacon"].clone();
    let now = Utc::now();
    // Ada's static bleUuid (anyone could copy it) does not count here; her
    // phone's rotating identifier does.
    let r = app.ok(&v.key, SUBMIT, batch(vec![sighting(&v.ada_ble, now - Duration::minutes(5), -60)])).await;
    let r = &r["submitSightings"];
    assert_eq!((r["identityNotAccepted"].as_i64(), r["checkIns"].as_i64()), (Some(1), Some(0)), "{r}");
    let r = app.ok(&v.key, SUBMIT, batch(vec![sighting(&rotating(&beacon, now), now, -60)])).await;
    assert_eq!(r["submitSightings"]["checkIns"], 1, "{r}");
    let rows = attendance(&app, &v).await;
    assert_eq!(rows[0]["sightings"], 1);

    // The organiser switches the event to static identifiers only: derived
    // again from the raw log, Ada's presence now rests on her bleUuid sighting.
    let q = "mutation($id: ID!, $i: UpdateEventInput!) { updateEvent(id: $id, input: $i) { policy { identity } } }";
    let data = app.ok(&v.org.auth(), q, json!({ "id": v.event, "i": { "policy": { "identity": "STATIC" } } })).await;
    assert_eq!(data["updateEvent"]["policy"]["identity"], "STATIC");
    crate::ingest::rederived(&app, &v).await;
    let rows = attendance(&app, &v).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["sightings"], 1);
    let first = rows[0]["firstSeen"].as_str().unwrap().parse::<chrono::DateTime<Utc>>().unwrap();
    assert_eq!(first.timestamp_millis(), (now - Duration::minutes(5)).timestamp_millis(), "{}", rows[0]);
}

#[tokio::test]
async fn a_manual_check_in_counts_whatever_the_identity_policy() {
    let app = spawn_app().await;
    let v = venue(&app, json!({ "identity": "ROTATING" })).await;
    let ada = app.ok(&v.ada.auth(), "{ me { id } }", json!({})).await["me"]["id"].clone();
    let q = "mutation($e: ID!, $u: ID!) { recordAttendance(eventId: $e, userId: $u) { sightings } }";
    let r = app.ok(&v.org.auth(), q, json!({ "e": v.event, "u": ada })).await;
    assert_eq!(r["recordAttendance"]["sightings"], 1, "{r}");
    // Derived again (a policy change), the organiser's check-in stays.
    let q = "mutation($id: ID!, $i: UpdateEventInput!) { updateEvent(id: $id, input: $i) { id } }";
    app.ok(&v.org.auth(), q, json!({ "id": v.event, "i": { "policy": { "minRssi": -80 } } })).await;
    crate::ingest::rederived(&app, &v).await;
    assert_eq!(attendance(&app, &v).await.len(), 1);
}
