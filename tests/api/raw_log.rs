//! The raw log as the truth, over real HTTP: late uploads, re-derivation,
//! erasure, batch ids that name one batch, undoing a manual check-in.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::helpers::{code, spawn_app};
use crate::ingest::{SUBMIT, at, attendance, batch, rederived, sighting, submit, venue, venue_from};

#[tokio::test]
async fn a_policy_change_derives_attendance_again() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, 10), -85), sighting(&v.ada_ble, at(&v, 40), -60)])).await;
    let row = &attendance(&app, &v).await[0];
    assert_eq!(row["sightings"], 2);
    let stricter = "mutation($id: ID!, $r: Int!) { updateEvent(id: $id, input: { policy: { minRssi: $r } }) { id } }";
    app.ok(&v.org.auth(), stricter, json!({ "id": v.event, "r": -70 })).await;
    rederived(&app, &v).await;
    let row = &attendance(&app, &v).await[0];
    assert_eq!(row["sightings"], 1, "the -85 dBm sighting no longer counts");
    let first: DateTime<Utc> = row["checkedInAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(first.timestamp_millis(), at(&v, 40).timestamp_millis());
    app.ok(&v.org.auth(), stricter, json!({ "id": v.event, "r": -90 })).await;
    rederived(&app, &v).await;
    assert_eq!(attendance(&app, &v).await[0]["sightings"], 2, "and counts again when the policy is relaxed");
    let n =
        app.ok(&v.org.auth(), "mutation($e: ID!) { recomputeAttendance(eventId: $e) }", json!({ "e": v.event })).await;
    assert_eq!(n["recomputeAttendance"], 1);
}

/// An offline scanner's sightings carry no `eventId`; it syncs after the
/// organiser has ended the event. They count for the event whose window
/// covers them, and the raw log keeps them, so a re-derivation finds them.
#[tokio::test]
async fn a_late_upload_after_the_event_ended_still_counts() {
    let app = spawn_app().await;
    let v = venue_from(&app, json!({}), Utc::now() - Duration::hours(4)).await;
    app.ok(&v.org.auth(), "mutation($e: ID!) { endEvent(id: $e) { state } }", json!({ "e": v.event })).await;

    let r =
        submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, 10), -60), sighting(&v.ada_ble, at(&v, 20), -60)]))
            .await;
    assert_eq!(r["accepted"], 2);
    assert_eq!(r["outsideEvent"], 0, "{r}");
    assert_eq!(r["checkIns"], 1, "{r}");
    let rows = attendance(&app, &v).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["sightings"], 2);

    // The raw log kept the event: a re-derivation brings the same row back.
    let n =
        app.ok(&v.org.auth(), "mutation($e: ID!) { recomputeAttendance(eventId: $e) }", json!({ "e": v.event })).await;
    assert_eq!(n["recomputeAttendance"], 1);
    assert_eq!(attendance(&app, &v).await[0]["sightings"], 2);

    // Outside the window with grace, it still does not count.
    let r = submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, 3 * 60 + 16), -60)])).await;
    assert_eq!(r["outsideEvent"], 1, "{r}");
}

/// Events that never took attendance do not take late uploads either.
#[tokio::test]
async fn implicit_sightings_skip_cancelled_and_scheduled_events() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    app.ok(&v.org.auth(), "mutation($e: ID!) { cancelEvent(id: $e) { state } }", json!({ "e": v.event })).await;
    let r = submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, 10), -60)])).await;
    assert_eq!(r["outsideEvent"], 1, "{r}");
    assert_eq!(r["checkIns"], 0, "{r}");
}

/// Deleting a user erases their sightings from the raw log: a later
/// re-derivation of a walk-in event does not bring them back.
#[tokio::test]
async fn an_erased_user_is_not_derived_again() {
    let app = spawn_app().await;
    let v = venue(&app, json!({ "requireRegistration": false })).await;
    let bob = app.sign_up("bob@example.org", "Bob").await;
    let bob_ble =
        app.ok(&bob.auth(), "{ me { bleUuid } }", json!({})).await["me"]["bleUuid"].as_str().unwrap().to_owned();
    let r = submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, 10), -60), sighting(&bob_ble, at(&v, 11), -60)]))
        .await;
    assert_eq!(r["checkIns"], 2, "{r}");

    let admin = app.admin().await;
    app.ok(&admin.auth(), "mutation($id: ID!) { deleteUser(id: $id) }", json!({ "id": bob.id })).await;
    let n =
        app.ok(&v.org.auth(), "mutation($e: ID!) { recomputeAttendance(eventId: $e) }", json!({ "e": v.event })).await;
    assert_eq!(n["recomputeAttendance"], 1, "only Ada is derived again");
    let rows = attendance(&app, &v).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["user"]["id"], v.ada.id.as_str());
    let regs = app
        .ok(
            &v.org.auth(),
            "query($e: ID!) { event(id: $e) { registrations { edges { node { user { id } } } } } }",
            json!({ "e": v.event }),
        )
        .await;
    assert!(!regs.to_string().contains(&bob.id), "no walk-in registration is made again: {regs}");
}

/// A batch id names one batch: the same id with other sightings is refused,
/// never answered with the first batch's result.
#[tokio::test]
async fn a_reused_batch_id_with_other_sightings_is_a_conflict() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let id = uuid::Uuid::new_v4();
    let first = json!({ "b": { "batchId": id, "sightings": [sighting(&v.ada_ble, at(&v, 10), -60)] } });
    submit(&app, &v, &first).await;
    let again = submit(&app, &v, &first).await;
    assert_eq!(again["replayed"], true);

    let other = json!({ "b": { "batchId": id, "sightings": [sighting(&v.ada_ble, at(&v, 50), -60)] } });
    let (_, body) = app.post_gql(&v.key, SUBMIT, other).await;
    assert_eq!(code(&body).as_deref(), Some("CONFLICT"), "{body}");
    let msg = body["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("batchId") && msg.contains("different"), "{msg}");
    assert_eq!(attendance(&app, &v).await[0]["sightings"], 1, "the second body changed nothing");
}

/// An organiser takes back a manual check-in: it leaves the raw log and the
/// attendance is derived again; what a scanner heard still counts.
#[tokio::test]
async fn a_manual_check_in_can_be_undone() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let record =
        "mutation($e: ID!, $u: ID!, $t: DateTime) { recordAttendance(eventId: $e, userId: $u, at: $t) { manual } }";
    let undo = "mutation($e: ID!, $u: ID!) { undoManualCheckIn(eventId: $e, userId: $u) }";
    let r = app.ok(&v.org.auth(), record, json!({ "e": v.event, "u": v.ada.id, "t": at(&v, 15) })).await;
    assert_eq!(r["recordAttendance"]["manual"], true);
    assert_eq!(app.ok(&v.org.auth(), undo, json!({ "e": v.event, "u": v.ada.id })).await["undoManualCheckIn"], true);
    assert!(attendance(&app, &v).await.is_empty(), "the check-in is gone");
    assert_eq!(app.err(&v.org.auth(), undo, json!({ "e": v.event, "u": v.ada.id })).await, "NOT_FOUND");
    assert_eq!(app.err(&v.ada.auth(), undo, json!({ "e": v.event, "u": v.ada.id })).await, "FORBIDDEN");

    // Heard by a scanner too: undoing the manual check-in leaves the scanner's.
    submit(&app, &v, &batch(vec![sighting(&v.ada_ble, at(&v, 30), -60)])).await;
    app.ok(&v.org.auth(), record, json!({ "e": v.event, "u": v.ada.id, "t": at(&v, 10) })).await;
    let row = &attendance(&app, &v).await[0];
    assert_eq!(row["sightings"], 2);
    app.ok(&v.org.auth(), undo, json!({ "e": v.event, "u": v.ada.id })).await;
    let rows = attendance(&app, &v).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["sightings"], 1);
    let first: DateTime<Utc> = rows[0]["checkedInAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(first.timestamp_millis(), at(&v, 30).timestamp_millis());
}
