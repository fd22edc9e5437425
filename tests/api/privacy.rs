//! Least privilege: what an organiser may see and attach, keys that lapse
//! with their creator, sessions that end, exports that do not run in a
//! spreadsheet.

use serde_json::{Value, json};

use crate::hardening::LOG_IN;
use crate::helpers::{Auth, code, spawn_app};

#[tokio::test]
async fn organisers_see_private_fields_only_of_their_own_attendees() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let org = app.organizer("org@example.org").await;
    let event = app.create_event(&org, "Mine").await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let bob = app.sign_up("bob@example.org", "Bob").await;
    app.ok(&ada.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": event })).await;
    let bob_ble = app.ok(&bob.auth(), "{ me { bleUuid } }", json!({})).await["me"]["bleUuid"].clone();

    let by_id = "query($id: ID!) { user(id: $id) { name email bleUuid } }";
    let seen = app.ok(&org.auth(), by_id, json!({ "id": ada.id })).await;
    assert_eq!(seen["user"]["email"], "ada@example.org", "registered for my event");
    assert!(seen["user"]["bleUuid"].is_string());
    let seen = app.ok(&org.auth(), by_id, json!({ "id": bob.id })).await;
    assert_eq!(seen["user"], json!({ "name": "Bob", "email": null, "bleUuid": null }), "a stranger");
    let (_, body) = app
        .post_gql(&org.auth(), "query($id: ID!) { user(id: $id) { devices { identifier } } }", json!({ "id": bob.id }))
        .await;
    assert_eq!(code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    // Finding someone by e-mail (to register them) still works, without their identifiers.
    let found = app.ok(&org.auth(), "{ userByEmail(email: \"bob@example.org\") { id bleUuid } }", json!({})).await;
    assert_eq!(found["userByEmail"], json!({ "id": bob.id, "bleUuid": null }));
    let found = app
        .ok(&org.auth(), "query($b: String!) { userByBleUuid(bleUuid: $b) { id email } }", json!({ "b": bob_ble }))
        .await;
    assert_eq!(found["userByBleUuid"]["email"], Value::Null);
    // Admins see everyone.
    assert_eq!(app.ok(&admin.auth(), by_id, json!({ "id": bob.id })).await["user"]["email"], "bob@example.org");
}

#[tokio::test]
async fn only_organisers_and_admins_attach_device_identifiers() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let org = app.organizer("org@example.org").await;
    let event = app.create_event(&org, "Walk-in fair").await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let mallory = app.sign_up("mallory@example.org", "Mallory").await;
    app.ok(&ada.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": event })).await;
    let add = "mutation($i: String!, $u: ID) { addDeviceIdentifier(identifier: $i, userId: $u) { identifier } }";
    // An attendee claiming a device (someone else's phone, a common name) is refused.
    let (_, body) = app.post_gql(&mallory.auth(), add, json!({ "i": "iPhone", "u": null })).await;
    assert_eq!(code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    // An organiser may attach one only for their own attendees.
    let (_, body) = app.post_gql(&org.auth(), add, json!({ "i": "Mallory's Pixel", "u": mallory.id })).await;
    assert_eq!(code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    // Canonicalised on input the way ingest canonicalises what it hears.
    let made = app.ok(&org.auth(), add, json!({ "i": " 6F1C2A3E-8D4B-4C55-9A0E-2B7F4D9E1C3A ", "u": ada.id })).await;
    assert_eq!(made["addDeviceIdentifier"]["identifier"], "6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a");
    app.ok(&admin.auth(), add, json!({ "i": "Mallory's Pixel", "u": mallory.id })).await;
}

#[tokio::test]
async fn keys_lapse_when_their_creator_is_demoted_or_deleted() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let demoted = app.organizer("demoted@example.org").await;
    let deleted = app.organizer("deleted@example.org").await;
    let kept = app.organizer("kept@example.org").await;
    let mut keys = Vec::new();
    for who in [&demoted, &deleted, &kept] {
        keys.push(Auth::ApiKey(app.api_key(who, "door", None).await.1));
    }
    for key in &keys {
        app.ok(key, "{ activeEvents { id } }", json!({})).await;
    }
    app.ok(
        &admin.auth(),
        "mutation($id: ID!) { updateUser(id: $id, input: { role: ATTENDEE }) { role } }",
        json!({ "id": demoted.id }),
    )
    .await;
    app.ok(&admin.auth(), "mutation($id: ID!) { deleteUser(id: $id) }", json!({ "id": deleted.id })).await;
    for key in &keys[..2] {
        let (_, body) = app.post_gql(key, "{ activeEvents { id } }", json!({})).await;
        assert_eq!(code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("creator"), "{body}");
    }
    app.ok(&keys[2], "{ activeEvents { id } }", json!({})).await;
}

#[tokio::test]
async fn exported_cells_that_would_run_as_formulas_are_neutralised() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let event = app.create_event(&org, "Talk").await;
    let names = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+1", "-2+3", "@SUM(A1)", "Plain = name"];
    for (i, name) in names.iter().enumerate() {
        let data = app
            .ok(
                &Auth::None,
                "mutation($e: String!, $n: String!) { signUp(email: $e, name: $n, password: \"correct horse battery\") { token } }",
                json!({ "e": format!("p{i}@example.org"), "n": name }),
            )
            .await;
        let token = data["signUp"]["token"].as_str().unwrap().to_owned();
        app.ok(
            &Auth::Bearer(token),
            "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }",
            json!({ "e": event }),
        )
        .await;
    }
    let csv = app
        .http
        .get(app.url(&format!("/events/{event}/attendance.csv")))
        .bearer_auth(&org.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let exported: Vec<String> = reader.records().map(|r| r.unwrap()[2].to_owned()).collect();
    assert_eq!(exported.len(), names.len(), "{csv}");
    for cell in &exported {
        assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "{cell:?} would run in a spreadsheet");
    }
    for name in names {
        let kept =
            if name.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{name}") } else { name.to_owned() };
        assert!(exported.contains(&kept), "{kept:?} not in {exported:?}");
    }
}

#[tokio::test]
async fn racing_rotations_leave_only_the_current_ble_uuid_resolving() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let rotate = "mutation { rotateBleUuid { bleUuid } }";
    let auth = ada.auth();
    let answers = futures_util::future::join_all((0..8).map(|_| app.post_gql(&auth, rotate, json!({})))).await;
    let issued: Vec<String> =
        answers.iter().filter_map(|(_, b)| b["data"]["rotateBleUuid"]["bleUuid"].as_str().map(str::to_owned)).collect();
    assert!(!issued.is_empty(), "{answers:?}");
    for (status, body) in &answers {
        assert!(*status == 200 && (body["data"]["rotateBleUuid"].is_object() || code(body).is_some()), "{body}");
    }
    let current =
        app.ok(&ada.auth(), "{ me { bleUuid } }", json!({})).await["me"]["bleUuid"].as_str().unwrap().to_owned();
    let by_ble = "query($b: String!) { userByBleUuid(bleUuid: $b) { id } }";
    for ble in &issued {
        let found = &app.ok(&admin.auth(), by_ble, json!({ "b": ble })).await["userByBleUuid"];
        if *ble == current {
            assert_eq!(found["id"], ada.id.as_str());
        } else {
            assert!(found.is_null(), "{ble} was replaced but still resolves");
        }
    }
}

#[tokio::test]
async fn logging_out_or_changing_the_password_ends_older_tokens() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let phone = app.ok(&Auth::None, LOG_IN, json!({ "e": "ada@example.org", "p": crate::helpers::PASSWORD })).await
        ["logIn"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = "{ me { name } }";
    app.ok(&Auth::Bearer(phone.clone()), me, json!({})).await;
    assert_eq!(app.ok(&ada.auth(), "mutation { logOut }", json!({})).await["logOut"], true);
    for token in [&ada.token, &phone] {
        let (status, body) = app.post_gql(&Auth::Bearer(token.clone()), me, json!({})).await;
        assert_eq!(status, 401, "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("log in again"), "{body}");
    }

    let fresh = app.ok(&Auth::None, LOG_IN, json!({ "e": "ada@example.org", "p": crate::helpers::PASSWORD })).await
        ["logIn"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let change =
        "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) { token } }";
    let (_, body) = app
        .post_gql(&Auth::Bearer(fresh.clone()), change, json!({ "c": "not it at all", "n": "a brand new secret" }))
        .await;
    assert_eq!(code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    let changed = app
        .ok(&Auth::Bearer(fresh.clone()), change, json!({ "c": crate::helpers::PASSWORD, "n": "a brand new secret" }))
        .await;
    let new_token = changed["changePassword"]["token"].as_str().unwrap().to_owned();
    assert_eq!(app.post_gql(&Auth::Bearer(fresh), me, json!({})).await.0, 401, "the old token ended");
    app.ok(&Auth::Bearer(new_token), me, json!({})).await;
    let (_, body) =
        app.post_gql(&Auth::None, LOG_IN, json!({ "e": "ada@example.org", "p": crate::helpers::PASSWORD })).await;
    assert_eq!(code(&body).as_deref(), Some("UNAUTHENTICATED"), "the old password no longer works: {body}");
    app.ok(&Auth::None, LOG_IN, json!({ "e": "ada@example.org", "p": "a brand new secret" })).await;
}

/// A check-in waiting in an event's live ring (8,192 of them per event)
/// carries the person's name and identifiers, never their password hash,
/// which nothing on the live path reads.
#[tokio::test]
async fn the_live_stream_holds_no_password_hashes() {
    use futures_util::StreamExt;

    let app = spawn_app().await;
    let v = crate::ingest::venue(&app, json!({})).await;
    let now = chrono::Utc::now();
    crate::ingest::submit(&app, &v, &crate::ingest::batch(vec![crate::ingest::sighting(&v.ada_ble, now, -60)])).await;
    let event = v.event.parse().unwrap();
    let (_, stream) = app.state.live.check_ins(event, Some(String::new())).await.unwrap();
    let mut stream = Box::pin(stream);
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .expect("the check-in is replayed")
        .expect("a check-in")
        .expect("not interrupted");
    assert_eq!(first.user.email, "ada@example.org");
    assert!(first.user.password_hash.is_none(), "the live ring keeps a password hash");
}
