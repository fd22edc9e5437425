//! The seed scanners' routes and the CSV export, as their clients use them.

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// An active event around now with a registered attendee; returns
/// (organiser token, event id, key secret, attendee bleUuid).
async fn setup(app: &TestApp) -> (crate::helpers::Session, String, String, String) {
    let org = app.organizer("org@example.org").await;
    let start = Utc::now() - Duration::hours(1);
    let event = app
        .ok(
            &org.auth(),
            "mutation($i: CreateEventInput!) { createEvent(input: $i) { id } }",
            json!({ "i": { "name": "Seed, \"quoted\"", "startsAt": start, "endsAt": start + Duration::hours(4) } }),
        )
        .await["createEvent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.activate(&org, &event).await;
    let (_, key) = app.api_key(&org, "old scanner", Some(vec![&event])).await;
    let ada = app.sign_up("ada@example.org", "Ada, \"the first\"").await;
    app.ok(&ada.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": event })).await;
    let ble = app.ok(&ada.auth(), "{ me { bleUuid } }", json!({})).await["me"]["bleUuid"].as_str().unwrap().to_owned();
    (org, event, key, ble)
}

#[tokio::test]
async fn active_events_in_the_seed_shape() {
    let app = spawn_app().await;
    let (_, event, key, _) = setup(&app).await;
    let resp = app.http.get(app.url("/active-events")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["success"], true);
    let e = &body["events"][0];
    assert_eq!(e["id"], event.as_str());
    assert_eq!(e["isActive"], true);
    assert!(e["startTime"].as_i64().unwrap() < e["endTime"].as_i64().unwrap(), "Unix milliseconds");
    assert_eq!(e.as_object().unwrap().len(), 5);

    let resp = app.http.get(app.url("/active-events")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    let resp = app.http.get(app.url("/active-events")).header("x-api-key", "rck_nope").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test]
async fn batch_checkin_in_the_seed_shape() {
    let app = spawn_app().await;
    let (org, event, key, ble) = setup(&app).await;
    // Old scanners may send an advertised device name: it matches an extra identifier.
    let bob = app.sign_up("bob@example.org", "Bob").await;
    app.ok(
        &org.auth(),
        "mutation($e: ID!, $u: ID) { registerForEvent(eventId: $e, userId: $u) { id } }",
        json!({ "e": event, "u": bob.id }),
    )
    .await;
    app.ok(
        &org.auth(),
        "mutation($u: ID) { addDeviceIdentifier(userId: $u, identifier: \"Bob's iPhone\") { identifier } }",
        json!({ "u": bob.id }),
    )
    .await;
    let now = Utc::now().timestamp_millis();
    let body = json!({ "records": [
        { "bleUuid": ble, "timestamp": now - 60_000, "eventId": event, "scannerSource": "pi-1", "rssi": -60 },
        { "bleUuid": ble, "timestamp": now - 60_000, "eventId": event },
        { "bleUuid": "Bob's iPhone", "timestamp": now - 30_000, "eventId": event, "deviceName": "Bob's iPhone" },
        { "bleUuid": "stranger", "timestamp": now, "eventId": event },
    ]});
    let post = |b: Value| app.http.post(app.url("/batch-checkin")).header("x-api-key", &key).json(&b).send();
    let resp = post(body.clone()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["success"], true);
    assert_eq!(r["processed"], 4);
    assert_eq!(r["successful"], 2);
    assert_eq!(r["duplicates"], 1, "the same record twice in one request");
    assert_eq!(r["errors"], 1);
    let statuses: Vec<&str> = r["results"].as_array().unwrap().iter().map(|x| x["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["success", "duplicate", "success", "error"]);
    assert_eq!(r["results"][3]["error"], "unknown device");
    assert_eq!(r["results"][2]["bleUuid"], "Bob's iPhone");

    // The same request again (a scanner that never saw the answer): same answer, nothing doubled.
    let again: Value = post(body).await.unwrap().json().await.unwrap();
    assert_eq!(again, r);
    let rows = app
        .ok(
            &org.auth(),
            "query($e: ID!) { attendance(eventId: $e) { edges { node { sightings } } } }",
            json!({ "e": event }),
        )
        .await;
    let counts: Vec<i64> = rows["attendance"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["sightings"].as_i64().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<i64>(), 2);

    for (headers, code) in [(None, 401), (Some("rck_bad"), 401)] {
        let mut req = app.http.post(app.url("/batch-checkin")).json(&json!({ "records": [] }));
        if let Some(h) = headers {
            req = req.header("x-api-key", h);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), code);
        assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    }
    for bad in ["{", "{\"records\": 5}", "{\"records\": [{\"timestamp\": 1}]}"] {
        let resp = app
            .http
            .post(app.url("/batch-checkin"))
            .header("x-api-key", &key)
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{bad}");
        assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    }
}

#[tokio::test]
async fn attendance_csv_opens_and_parses() {
    let app = spawn_app().await;
    let (org, event, key, ble) = setup(&app).await;
    let other = app.sign_up("no-show@example.org", "No Show").await;
    app.ok(&other.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": event })).await;
    let now = Utc::now().timestamp_millis();
    app.http
        .post(app.url("/batch-checkin"))
        .header("x-api-key", &key)
        .json(&json!({ "records": [{ "bleUuid": ble, "timestamp": now - 120_000, "eventId": event, "rssi": -61 }] }))
        .send()
        .await
        .unwrap();

    let url = app.url(&format!("/events/{event}/attendance.csv"));
    let resp = app.http.get(&url).header("authorization", format!("Bearer {}", org.token)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = resp.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(&header[..3], ["user_id", "email", "name"]);
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 2, "one row per registration");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let ada = rows.iter().find(|r| &r[col("email")] == "ada@example.org").unwrap();
    assert_eq!(&ada[col("name")], "Ada, \"the first\"", "commas and quotes survive RFC 4180 quoting");
    assert_eq!(&ada[col("checked_in")], "true");
    assert_eq!(&ada[col("best_rssi")], "-61");
    let no_show = rows.iter().find(|r| &r[col("email")] == "no-show@example.org").unwrap();
    assert_eq!(&no_show[col("checked_in")], "false");

    assert_eq!(app.http.get(&url).send().await.unwrap().status().as_u16(), 401);
    let att = app.sign_up("att@example.org", "Att").await;
    let resp = app.http.get(&url).header("authorization", format!("Bearer {}", att.token)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let resp = app.http.get(&url).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403, "a scanner key cannot export");
}
