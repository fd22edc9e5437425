//! A change to who an identifier belongs to, or to who stands registered,
//! holds for the very next batch. Each test first has a batch resolve the
//! person (so any copy of the answer the server keeps is warm), then changes
//! it through the API, then sends the next batch at once.

use serde_json::{Value, json};

use rollcall::config::ServeArgs;

use crate::helpers::TestApp;
use crate::helpers::spawn_app;
use crate::ingest::{Venue, at, batch, sighting, submit, venue};

/// One sighting of `identifier` at minute `minute` of the event.
async fn heard(app: &TestApp, v: &Venue, identifier: &str, minute: i64) -> Value {
    submit(app, v, &batch(vec![sighting(identifier, at(v, minute), -60)])).await
}

/// (unknown devices, unregistered): `(0, 0)` is a sighting counted for its person.
fn counts(r: &Value) -> (i64, i64) {
    (r["unknownDevices"].as_i64().unwrap(), r["unregistered"].as_i64().unwrap())
}

#[tokio::test]
async fn a_rotated_ble_uuid_stops_counting_at_once() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    assert_eq!(heard(&app, &v, &v.ada_ble, 1).await["checkIns"], 1);

    let rotated = app.ok(&v.ada.auth(), "mutation { rotateBleUuid { bleUuid } }", json!({})).await;
    let new_ble = rotated["rotateBleUuid"]["bleUuid"].as_str().unwrap().to_owned();

    assert_eq!(counts(&heard(&app, &v, &v.ada_ble, 2).await), (1, 0), "the old identifier is nobody's");
    assert_eq!(counts(&heard(&app, &v, &new_ble, 3).await), (0, 0), "the new one is Ada's");
}

#[tokio::test]
async fn a_removed_device_stops_counting_at_once() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let admin = app.admin().await;
    let add = "mutation($i: String!, $u: ID) { addDeviceIdentifier(identifier: $i, userId: $u) { identifier } }";
    app.ok(&admin.auth(), add, json!({ "i": "AA:BB:CC:DD:EE:01", "u": v.ada.id })).await;
    assert_eq!(counts(&heard(&app, &v, "AA:BB:CC:DD:EE:01", 1).await), (0, 0));

    let remove = "mutation($i: String!) { removeDeviceIdentifier(identifier: $i) }";
    app.ok(&v.ada.auth(), remove, json!({ "i": "AA:BB:CC:DD:EE:01" })).await;
    assert_eq!(counts(&heard(&app, &v, "AA:BB:CC:DD:EE:01", 2).await), (1, 0));

    // Given to someone else, it counts for them.
    let bob = app.sign_up("bob@example.org", "Bob").await;
    app.ok(&bob.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": v.event })).await;
    app.ok(&admin.auth(), add, json!({ "i": "AA:BB:CC:DD:EE:01", "u": bob.id })).await;
    let r = heard(&app, &v, "AA:BB:CC:DD:EE:01", 3).await;
    assert_eq!(r["checkIns"], 1, "Bob checks in: {r}");
    let people = crate::ingest::attendance(&app, &v).await;
    let ids: Vec<&str> = people.iter().map(|p| p["user"]["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&bob.id.as_str()), "{ids:?}");
}

#[tokio::test]
async fn a_cancelled_registration_stops_counting_at_once() {
    let app = spawn_app().await;
    let v = venue(&app, json!({ "requireRegistration": true })).await;
    assert_eq!(counts(&heard(&app, &v, &v.ada_ble, 1).await), (0, 0));

    let cancel = "mutation($e: ID!) { cancelRegistration(eventId: $e) { status } }";
    app.ok(&v.ada.auth(), cancel, json!({ "e": v.event })).await;
    assert_eq!(counts(&heard(&app, &v, &v.ada_ble, 2).await), (0, 1));

    let register = "mutation($e: ID!) { registerForEvent(eventId: $e) { status } }";
    app.ok(&v.ada.auth(), register, json!({ "e": v.event })).await;
    assert_eq!(counts(&heard(&app, &v, &v.ada_ble, 3).await), (0, 0));
}

#[tokio::test]
async fn a_deleted_person_stops_counting_at_once() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    assert_eq!(counts(&heard(&app, &v, &v.ada_ble, 1).await), (0, 0));

    let admin = app.admin().await;
    app.ok(&admin.auth(), "mutation($id: ID!) { deleteUser(id: $id) }", json!({ "id": v.ada.id })).await;
    assert_eq!(counts(&heard(&app, &v, &v.ada_ble, 2).await), (1, 0));
    assert_eq!(crate::ingest::attendance(&app, &v).await, Vec::<Value>::new(), "no row came back");
}

/// Each instance over one database remembers answers of its own; a change
/// made through another instance holds for its very next batch too.
#[tokio::test]
async fn a_change_through_another_instance_holds_at_once() {
    let server = crate::surreal::SurrealServer::memory().await;
    let db = server.database("directory").await;
    let (a, b) = tokio::join!(
        crate::helpers::spawn_with(ServeArgs::for_tests(db.clone())),
        crate::helpers::spawn_with(ServeArgs::for_tests(db))
    );
    let v = venue(&a, json!({ "requireRegistration": true })).await;
    assert_eq!(counts(&heard(&a, &v, &v.ada_ble, 1).await), (0, 0));

    let cancel = "mutation($e: ID!) { cancelRegistration(eventId: $e) { status } }";
    b.ok(&v.ada.auth(), cancel, json!({ "e": v.event })).await;
    assert_eq!(counts(&heard(&a, &v, &v.ada_ble, 2).await), (0, 1), "cancelled through the other instance");

    b.ok(&v.ada.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { status } }", json!({ "e": v.event }))
        .await;
    assert_eq!(counts(&heard(&a, &v, &v.ada_ble, 3).await), (0, 0));
    b.ok(&v.ada.auth(), "mutation { rotateBleUuid { bleUuid } }", json!({})).await;
    assert_eq!(counts(&heard(&a, &v, &v.ada_ble, 4).await), (1, 0), "rotated through the other instance");
}
