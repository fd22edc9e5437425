//! Check-ins that do not depend on the phone advertising, over real HTTP and
//! WebSocket: the door screen's rotating code (`doorCode`,
//! `checkInWithCode`) and presence reported by the phone (`reportPresence`).
//! Each check-in carries its `source`, live and on the attendance row, and
//! keeps it when the event's attendance is derived again.

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::helpers::{Auth, Session, TestApp, spawn_app};
use crate::websocket::WsClient;

const DOOR_CODE: &str = "query($e: ID!) { doorCode(eventId: $e) { eventId code svg validFrom nextAt slotSeconds } }";
const CHECK_IN: &str = "mutation($c: String!, $e: ID) { checkInWithCode(code: $c, eventId: $e) {
    source manual checkedInAt event { id } user { id } } }";
const REPORT: &str = "mutation($e: ID!, $b: String!, $r: Int, $at: DateTime!) {
    reportPresence(eventId: $e, beacon: $b, rssi: $r, at: $at) { source checkedInAt lastSeen sightings } }";
const LIVE: &str = "subscription($e: ID!) { checkIns(eventId: $e) { source scanner user { name } } }";
const ROWS: &str = "query($e: ID!) { attendance(eventId: $e) { nodes { source user { name } } } }";
const POLICY: &str = "mutation($id: ID!, $p: AttendancePolicyInput!) {
    updateEvent(id: $id, input: { policy: $p }) { policy { acceptPhoneReports venueBeacon } } }";

/// The venue's beacon: a vendor UUID with the venue's major.
const VENUE_UUID: &str = "f7826da6-4fa2-4e98-8024-bc5b71e0893e";

/// An organiser's active event happening now.
async fn event_now(app: &TestApp, org: &Session, name: &str, policy: Value) -> String {
    let now = Utc::now();
    let data = app
        .ok(
            &org.auth(),
            "mutation($i: CreateEventInput!) { createEvent(input: $i) { id } }",
            json!({ "i": { "name": name, "startsAt": now - Duration::hours(1), "endsAt": now + Duration::hours(3),
                           "policy": policy } }),
        )
        .await;
    let event = data["createEvent"]["id"].as_str().unwrap().to_owned();
    app.activate(org, &event).await;
    event
}

/// An attendee registered for `event`.
async fn attendee(app: &TestApp, email: &str, name: &str, event: &str) -> Session {
    let who = app.sign_up(email, name).await;
    app.ok(&who.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": event })).await;
    who
}

/// Waits until someone follows `event`'s check-ins (a subscription has no
/// acknowledgement in the protocol).
async fn watched(app: &TestApp, event: &str) {
    let event = event.parse().unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.state.live.check_in_subscribers(event) < 1 {
        assert!(tokio::time::Instant::now() < deadline, "the subscriber did not arrive");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The error of a response: (code, reason, message).
async fn refused(app: &TestApp, who: &Auth, query: &str, vars: Value) -> (String, Value, String) {
    let (_, body) = app.post_gql(who, query, vars).await;
    let e = &body["errors"][0];
    assert!(e.is_object(), "expected an error, got {body}");
    (
        e["extensions"]["code"].as_str().unwrap().to_owned(),
        e["extensions"]["reason"].clone(),
        e["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_door_code_checks_the_attendee_in_and_subscribers_see_its_source() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let event = event_now(&app, &org, "Door", json!({})).await;
    let ada = attendee(&app, "ada@example.org", "Ada", &event).await;

    let mut live = WsClient::bearer(&app, &org.token).await;
    live.subscribe("s", LIVE, json!({ "e": event })).await;
    watched(&app, &event).await;

    let shown = app.ok(&org.auth(), DOOR_CODE, json!({ "e": event })).await["doorCode"].clone();
    let code = shown["code"].as_str().unwrap();
    assert!(code.starts_with("rc1.") && code.len() <= 64, "short enough for a small QR code: {code}");
    assert_eq!(shown["eventId"], event.as_str());
    assert_eq!(shown["slotSeconds"], 30);
    let svg = shown["svg"].as_str().unwrap();
    assert!(svg.contains("<svg") && svg.contains("<path"), "an SVG image: {svg}");
    let (from, next) = (shown["validFrom"].as_str().unwrap(), shown["nextAt"].as_str().unwrap());
    let span =
        chrono::DateTime::parse_from_rfc3339(next).unwrap() - chrono::DateTime::parse_from_rfc3339(from).unwrap();
    assert_eq!(span, Duration::seconds(30));
    // Attendees cannot read the door's code: they must be at the door.
    assert_eq!(app.err(&ada.auth(), DOOR_CODE, json!({ "e": event })).await, "FORBIDDEN");

    let data = app.ok(&ada.auth(), CHECK_IN, json!({ "c": code, "e": event })).await;
    let row = &data["checkInWithCode"];
    assert_eq!(row["source"], "DOOR_CODE", "{data}");
    assert_eq!(row["manual"], false);
    assert_eq!(row["user"]["id"], ada.id.as_str());
    assert_eq!(row["event"]["id"], event.as_str());

    let item = live.recv().await;
    assert_eq!(
        item["payload"]["data"]["checkIns"],
        json!({ "source": "DOOR_CODE", "scanner": null, "user": { "name": "Ada" } })
    );

    // Scanning again is harmless: still one check-in, nothing new pushed.
    app.ok(&ada.auth(), CHECK_IN, json!({ "c": code })).await;
    assert!(live.recv_within(std::time::Duration::from_millis(300)).await.is_none(), "no second check-in");
    let rows = app.ok(&org.auth(), ROWS, json!({ "e": event })).await;
    assert_eq!(rows["attendance"]["nodes"], json!([{ "source": "DOOR_CODE", "user": { "name": "Ada" } }]));

    // The raw log keeps the source: derived again, the row says the same.
    let q = "mutation($e: ID!) { recomputeAttendance(eventId: $e) }";
    assert_eq!(app.ok(&org.auth(), q, json!({ "e": event })).await["recomputeAttendance"], 1);
    let rows = app.ok(&org.auth(), ROWS, json!({ "e": event })).await;
    assert_eq!(rows["attendance"]["nodes"], json!([{ "source": "DOOR_CODE", "user": { "name": "Ada" } }]));
    // And `undoManualCheckIn` does not take it for a manual one.
    let q = "mutation($e: ID!, $u: ID!) { undoManualCheckIn(eventId: $e, userId: $u) }";
    assert_eq!(app.err(&org.auth(), q, json!({ "e": event, "u": ada.id })).await, "NOT_FOUND");

    // The other sources, side by side: an organiser's manual check-in and a scanner's sighting.
    let grace = attendee(&app, "grace@example.org", "Grace", &event).await;
    let q = "mutation($e: ID!, $u: ID!) { recordAttendance(eventId: $e, userId: $u) { source manual } }";
    let data = app.ok(&org.auth(), q, json!({ "e": event, "u": grace.id })).await;
    assert_eq!(data["recordAttendance"], json!({ "source": "MANUAL", "manual": true }));
    let linus = attendee(&app, "linus@example.org", "Linus", &event).await;
    let ble = app.ok(&linus.auth(), "{ me { bleUuid } }", json!({})).await["me"]["bleUuid"].clone();
    let (_, key) = app.api_key(&org, "north door", Some(vec![&event])).await;
    let q = "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) { checkIns } }";
    let batch = json!({ "batchId": uuid::Uuid::new_v4(), "sightings": [{ "bleUuid": ble, "seenAt": Utc::now(), "rssi": -60 }] });
    assert_eq!(app.ok(&Auth::ApiKey(key), q, json!({ "b": batch })).await["submitSightings"]["checkIns"], 1);
    let mut sources: Vec<(String, String)> = Vec::new();
    for _ in 0..2 {
        let item = &live.recv().await["payload"]["data"]["checkIns"];
        sources.push((item["user"]["name"].as_str().unwrap().to_owned(), item["source"].as_str().unwrap().to_owned()));
    }
    sources.sort();
    let want = [("Grace", "MANUAL"), ("Linus", "SCANNER")];
    assert_eq!(sources, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
}

#[tokio::test]
async fn expired_foreign_and_garbled_codes_are_refused_with_a_reason() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let event = event_now(&app, &org, "Door", json!({})).await;
    let other = event_now(&app, &org, "Elsewhere", json!({})).await;
    let ada = attendee(&app, "ada@example.org", "Ada", &event).await;
    let now = Utc::now();
    let id = event.parse().unwrap();

    // Made a minute and a half ago: two periods old.
    let old = app.state.door.code_at(id, now - Duration::seconds(90)).code;
    let (code, reason, message) = refused(&app, &ada.auth(), CHECK_IN, json!({ "c": old })).await;
    assert_eq!((code.as_str(), reason), ("VALIDATION", json!("EXPIRED_CODE")), "{message}");
    assert!(message.contains("expired"), "{message}");

    // Another event's code, where the app expects this event.
    let foreign = app.ok(&org.auth(), DOOR_CODE, json!({ "e": other })).await["doorCode"]["code"].clone();
    let (code, reason, _) = refused(&app, &ada.auth(), CHECK_IN, json!({ "c": foreign, "e": event })).await;
    assert_eq!((code.as_str(), reason), ("VALIDATION", json!("WRONG_EVENT")));
    // Without the expectation it is that event's code, where Ada is not registered.
    let (code, reason, message) = refused(&app, &ada.auth(), CHECK_IN, json!({ "c": foreign })).await;
    assert_eq!((code.as_str(), reason), ("VALIDATION", json!("NOT_COUNTED")));
    assert!(message.contains("not registered"), "{message}");

    // Garbage, and a real code with its event swapped: invalid, saying nothing of how codes are made.
    let real = app.state.door.code_at(id, now).code;
    let swapped = format!("rc1.{}{}", &app.state.door.code_at(other.parse().unwrap(), now).code[4..26], &real[26..]);
    let long = "rc1.".to_owned() + &"A".repeat(5000);
    for garbage in ["", "hello", "rc1.", "rc1.@@@@", "' OR 1=1 --", &real[..30], &swapped, &long] {
        let (code, reason, message) = refused(&app, &ada.auth(), CHECK_IN, json!({ "c": garbage })).await;
        assert_eq!((code.as_str(), reason), ("VALIDATION", json!("INVALID_CODE")), "{garbage}");
        assert_eq!(message, "this is not a valid door code");
    }
    let (code, ..) = refused(&app, &ada.auth(), CHECK_IN, json!({ "c": real, "e": "not-an-id" })).await;
    assert_eq!(code, "VALIDATION");
    // Nobody signed in, and scanners, cannot use a code.
    assert_eq!(app.err(&Auth::None, CHECK_IN, json!({ "c": real })).await, "UNAUTHENTICATED");
    let (_, key) = app.api_key(&org, "door", Some(vec![&event])).await;
    assert_eq!(app.err(&Auth::ApiKey(key), CHECK_IN, json!({ "c": real })).await, "FORBIDDEN");
    let rows = app.ok(&org.auth(), ROWS, json!({ "e": event })).await;
    assert_eq!(rows["attendance"]["nodes"], json!([]), "nothing was checked in");

    // The previous period's code still works (a scan in flight).
    let previous = app.state.door.code_at(id, Utc::now() - Duration::seconds(30)).code;
    let data = app.ok(&ada.auth(), CHECK_IN, json!({ "c": previous, "e": event })).await;
    assert_eq!(data["checkInWithCode"]["source"], "DOOR_CODE");
}

#[tokio::test]
async fn phone_reports_count_where_the_event_accepts_them_once_per_thirty_seconds() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let event = event_now(&app, &org, "Beacons", json!({})).await;
    let ada = attendee(&app, "ada@example.org", "Ada", &event).await;
    let grace = attendee(&app, "grace@example.org", "Grace", &event).await;
    let heard = format!("{VENUE_UUID}:12:7");
    let report = |at: chrono::DateTime<Utc>, beacon: &str| json!({ "e": event, "b": beacon, "r": -70, "at": at });

    // Off by default: refused, nothing counted.
    let (code, _, message) = refused(&app, &ada.auth(), REPORT, report(Utc::now(), &heard)).await;
    assert_eq!(code, "FORBIDDEN", "{message}");
    assert_eq!(app.ok(&org.auth(), ROWS, json!({ "e": event })).await["attendance"]["nodes"], json!([]));

    // On, but with no beacon declared: the policy says what is missing.
    let (code, _, message) =
        refused(&app, &org.auth(), POLICY, json!({ "id": event, "p": { "acceptPhoneReports": true } })).await;
    assert_eq!(code, "VALIDATION");
    assert!(message.contains("venueBeacon"), "{message}");
    let p = json!({ "id": event, "p": { "acceptPhoneReports": true, "venueBeacon": format!("ibeacon:{}:12", VENUE_UUID.to_uppercase()) } });
    let data = app.ok(&org.auth(), POLICY, p).await;
    assert_eq!(
        data["updateEvent"]["policy"],
        json!({ "acceptPhoneReports": true, "venueBeacon": format!("{VENUE_UUID}:12") })
    );

    // Another venue's beacon, a garbled one, and a time far from now are refused.
    for (beacon, at) in [
        (format!("{VENUE_UUID}:13:7"), Utc::now()),
        ("not a beacon".to_owned(), Utc::now()),
        (heard.clone(), Utc::now() - Duration::minutes(10)),
        (heard.clone(), Utc::now() + Duration::hours(2)),
    ] {
        let (code, _, message) = refused(&app, &ada.auth(), REPORT, report(at, &beacon)).await;
        assert_eq!(code, "VALIDATION", "{beacon} at {at}: {message}");
    }

    let mut live = WsClient::bearer(&app, &org.token).await;
    live.subscribe("s", LIVE, json!({ "e": event })).await;
    watched(&app, &event).await;
    let at = Utc::now() - Duration::seconds(5);
    let data = app.ok(&ada.auth(), REPORT, report(at, &heard)).await;
    assert_eq!(data["reportPresence"]["source"], "PHONE", "{data}");
    assert_eq!(data["reportPresence"]["sightings"], 1);
    let item = live.recv().await;
    assert_eq!(item["payload"]["data"]["checkIns"]["source"], "PHONE", "{item}");

    // A second report at once is refused, and says when to retry; Grace's is not held up.
    let (_, body) = app.post_gql(&ada.auth(), REPORT, report(Utc::now(), &heard)).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{body}");
    let wait = body["errors"][0]["extensions"]["retryAfterSeconds"].as_i64().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    let data = app.ok(&grace.auth(), REPORT, report(Utc::now(), &heard)).await;
    assert_eq!(data["reportPresence"]["source"], "PHONE");

    // Turned off again, the event's attendance is derived without the phones' reports.
    let p = json!({ "id": event, "p": { "acceptPhoneReports": false } });
    app.ok(&org.auth(), POLICY, p).await;
    let q = "mutation($e: ID!) { recomputeAttendance(eventId: $e) }";
    assert_eq!(app.ok(&org.auth(), q, json!({ "e": event })).await["recomputeAttendance"], 0);
    assert_eq!(app.ok(&org.auth(), ROWS, json!({ "e": event })).await["attendance"]["nodes"], json!([]));
}
