//! A hostile caller: input that used to panic, cells that run in a
//! spreadsheet, labels that grow forever, and the other levers of issue 12.

use rollcall::config::{DbArgs, ServeArgs};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{Auth, TestApp, code, spawn_app, spawn_with};
use crate::websocket::WsClient;

#[tokio::test]
async fn policy_seconds_at_the_edge_of_i64_are_refused_not_panicked() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let create = "mutation($i: CreateEventInput!) { createEvent(input: $i) { id } }";
    for (field, value) in [
        ("departureGapSeconds", i64::MAX),
        ("graceSeconds", i64::MAX),
        ("graceSeconds", i64::MIN),
        ("departureGapSeconds", i64::MIN + 1),
    ] {
        let input = json!({
            "name": "Edge",
            "startsAt": "2030-05-01T09:00:00Z",
            "endsAt": "2030-05-01T17:00:00Z",
            "policy": { field: value },
        });
        let (status, body) = app.post_gql(&org.auth(), create, json!({ "i": input })).await;
        assert_eq!(status, 200, "{field}={value}: {body}");
        assert_eq!(code(&body).as_deref(), Some("VALIDATION"), "{field}={value}: {body}");
    }
    // The same on an existing event.
    let event = app.create_event(&org, "Existing").await;
    let update = "mutation($id: ID!, $i: UpdateEventInput!) { updateEvent(id: $id, input: $i) { id } }";
    let (_, body) = app
        .post_gql(&org.auth(), update, json!({ "id": event, "i": { "policy": { "graceSeconds": i64::MAX } } }))
        .await;
    assert_eq!(code(&body).as_deref(), Some("VALIDATION"), "{body}");
    // Still serving.
    assert_eq!(app.ok(&Auth::None, "{ __typename }", json!({})).await["__typename"], "Query");
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
async fn metrics_labels_do_not_grow_with_client_chosen_names() {
    let app = spawn_app().await;
    for i in 0..30 {
        app.ok(&Auth::None, &format!("query Probe{i} {{ __typename }}"), json!({})).await;
    }
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("Probe"), "client-chosen names became labels:\n{text}");
    assert!(text.contains("operation=\"query:__typename\""), "labelled by what ran:\n{text}");
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
async fn an_anonymous_connection_init_is_refused_unless_allowed() {
    let app = spawn_app().await;
    for payload in [json!({}), json!(null)] {
        let mut c = WsClient::connect(&app, "graphql-transport-ws").await;
        c.send(json!({ "type": "connection_init", "payload": payload })).await;
        let (code, reason) = c.closed().await;
        assert_eq!(code, 4403, "{reason}");
        assert!(reason.contains("token"), "{reason}");
    }
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.live.allow_anonymous = true;
    let open = spawn_with(args).await;
    WsClient::signed_in(&open, "graphql-transport-ws", json!({})).await;
}

#[tokio::test]
async fn sockets_are_capped_per_address_per_principal_and_in_all() {
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.live.max_sockets_per_address = 3;
    args.live.max_sockets_per_principal = 2;
    let app = spawn_with(args).await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let bob = app.sign_up("bob@example.org", "Bob").await;
    let _a1 = WsClient::bearer(&app, &ada.token).await;
    let _a2 = WsClient::bearer(&app, &ada.token).await;
    // A third socket for Ada is let in, then closed at sign-in.
    let mut a3 = WsClient::connect(&app, "graphql-transport-ws").await;
    a3.send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", ada.token) } }))
        .await;
    let (code, reason) = a3.closed().await;
    assert_eq!((code, reason.as_str()), (1008, "too many live connections for this account"));
    // a3 is gone: its address place came back, so Bob gets one, and then the address is full.
    let _b1 = eventually_connect(&app).await;
    let err = try_connect(&app).await.err().expect("a fourth socket from 127.0.0.1 is refused");
    assert!(err.contains("429"), "{err}");
    drop(_a1);
    // The address's place comes back when a socket ends.
    let mut b2 = eventually_connect(&app).await;
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", bob.token) } });
    b2.send(init).await;
    assert_eq!(b2.recv().await["type"], "connection_ack");

    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.live.max_sockets = 1;
    let full = spawn_with(args).await;
    let _only = WsClient::connect(&full, "graphql-transport-ws").await;
    let err = try_connect(&full).await.err().expect("a second socket is refused");
    assert!(err.contains("503"), "{err}");
}

#[tokio::test]
async fn a_socket_may_start_only_so_many_operations_a_minute() {
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.live.max_operations_per_minute = 5;
    let app = spawn_with(args).await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let mut c = WsClient::bearer(&app, &ada.token).await;
    for i in 0..5 {
        c.subscribe(&format!("q{i}"), "{ me { name } }", json!({})).await;
        assert_eq!(c.recv().await["type"], "next");
        assert_eq!(c.recv().await["type"], "complete");
    }
    c.subscribe("q5", "{ me { name } }", json!({})).await;
    let err = c.recv().await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{err}");
    assert!(err["payload"][0]["message"].as_str().unwrap().contains("slow down"), "{err}");
}

/// Opens a socket, retrying while a closed one's place is being given back.
async fn eventually_connect(app: &TestApp) -> WsClient {
    for _ in 0..100 {
        if let Ok(c) = try_connect(app).await {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no place came back");
}

/// One upgrade; the refusal as text.
async fn try_connect(app: &TestApp) -> Result<WsClient, String> {
    let mut req = format!("ws://{}/graphql", app.addr).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(WsClient { ws, protocol: "graphql-transport-ws" }),
        Err(e) => Err(e.to_string()),
    }
}

const LOG_IN: &str = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }";

#[tokio::test]
async fn one_password_hash_per_request() {
    let app = spawn_app().await;
    let aliased: String = (0..3)
        .map(|i| format!("a{i}: logIn(email: \"x{i}@example.org\", password: \"whatever12\") {{ token }} "))
        .collect();
    let fragment = "mutation { ...A ...B } \
        fragment A on Mutation { a: signUp(email: \"a@example.org\", name: \"A\", password: \"whatever123\") { token } } \
        fragment B on Mutation { b: logIn(email: \"a@example.org\", password: \"whatever123\") { token } }";
    for q in [format!("mutation {{ {aliased} }}"), fragment.to_owned()] {
        let (status, body) = app.post_gql(&Auth::None, &q, json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(code(&body).as_deref(), Some("VALIDATION"), "{body}");
        assert!(
            body["errors"][0]["message"].as_str().unwrap().contains("one logIn, signUp or changePassword"),
            "{body}"
        );
    }
    let made = app.ok(&Auth::None, "{ __typename }", json!({})).await;
    assert_eq!(made["__typename"], "Query");
}

#[tokio::test]
async fn failed_log_ins_lock_the_account_for_a_while() {
    let app = spawn_app().await;
    app.sign_up("ada@example.org", "Ada").await;
    app.sign_up("bob@example.org", "Bob").await;
    for _ in 0..6 {
        let (_, body) =
            app.post_gql(&Auth::None, LOG_IN, json!({ "e": "ada@example.org", "p": "wrong password" })).await;
        assert_eq!(code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    }
    // Even the right password waits out the lockout, and is not tried meanwhile.
    let (_, body) =
        app.post_gql(&Auth::None, LOG_IN, json!({ "e": "Ada@Example.org", "p": crate::helpers::PASSWORD })).await;
    assert_eq!(code(&body).as_deref(), Some("RATE_LIMITED"), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("try again in"), "{body}");
    // Another account from the same address is not locked.
    app.ok(&Auth::None, LOG_IN, json!({ "e": "bob@example.org", "p": crate::helpers::PASSWORD })).await;
    // After the lockout (1 s for the first one past the free five) Ada gets in.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.ok(&Auth::None, LOG_IN, json!({ "e": "ada@example.org", "p": crate::helpers::PASSWORD })).await;
}

#[tokio::test]
async fn a_flood_of_sign_ups_is_turned_away_not_queued() {
    let app = spawn_app().await;
    let sign_up =
        "mutation($e: String!) { signUp(email: $e, name: \"Flood\", password: \"correct horse battery\") { token } }";
    let results = futures_util::future::join_all((0..150).map(|i| {
        let app = &app;
        async move { app.post_gql(&Auth::None, sign_up, json!({ "e": format!("f{i}@example.org") })).await }
    }))
    .await;
    let mut made = 0;
    let mut refused = 0;
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        match code(body).as_deref() {
            None => made += 1,
            Some("RATE_LIMITED") => refused += 1,
            other => panic!("{other:?}: {body}"),
        }
    }
    assert!(made > 0, "some get through");
    assert!(refused > 0, "150 at once on a few cores: some must be told to retry ({made} made)");
}

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
async fn nested_lists_cost_their_page_sizes() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    // Three lists deep at the default page of 50: 50 × 50 × 50 rows.
    let cubed = "{ events { edges { node { registrations { edges { node { user { registrations { edges { node { id } } } } } } } } } } }";
    // Two lists of 500.
    let squared = "{ events(first: 500) { nodes { registrations(first: 500) { nodes { registeredAt } } } } }";
    for q in [cubed, squared] {
        let (_, body) = app.post_gql(&admin.auth(), q, json!({})).await;
        assert_eq!(code(&body).as_deref(), Some("VALIDATION"), "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("too complex"), "{body}");
    }
    // What the console and the dashboard ask for still fits: pages of 500.
    let events = "{ events(first: 500) { pageInfo { hasNextPage endCursor } \
        nodes { id name location startsAt endsAt state registeredCount } } }";
    app.ok(&admin.auth(), events, json!({})).await;
    let page = "{ users(first: 500) { pageInfo { hasNextPage endCursor } \
        nodes { id name email role bleUuid createdAt devices { identifier } } } }";
    app.ok(&admin.auth(), page, json!({})).await;
}

#[tokio::test]
async fn a_slow_query_is_stopped_but_a_mutation_runs_to_the_end() {
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.limits.request_timeout_ms = 1;
    let app = spawn_with(args).await;
    let org = app.organizer("org@example.org").await;
    let mut made = Vec::new();
    for i in 0..40 {
        made.push(app.create_event(&org, &format!("Event {i}")).await);
    }
    let (status, body) = app
        .post_gql(
            &org.auth(),
            "{ events(first: 500) { nodes { id name organizer { name } registeredCount } } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(code(&body).as_deref(), Some("TIMEOUT"), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("1 ms"), "{body}");
    assert_eq!(made.len(), 40, "every createEvent under the same 1 ms limit ran to the end");
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
async fn production_hides_the_playground_introspection_and_metrics() {
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.web.profile = rollcall::config::Profile::Production;
    let app = spawn_with(args).await;
    let html = app.http.get(app.url("/")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(html.status().as_u16(), 404);
    assert_eq!(html.headers()["strict-transport-security"], "max-age=31536000");
    let gql = app.http.get(app.url("/graphql")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(gql.status().as_u16(), 400, "no playground in place of a query");
    let (_, body) = app.post_gql(&Auth::None, "{ __schema { types { name } } }", json!({})).await;
    assert!(body["data"]["__schema"].is_null(), "no schema for strangers: {body}");
    assert_eq!(app.http.get(app.url("/metrics")).send().await.unwrap().status().as_u16(), 404);
    // Ordinary queries are unaffected.
    assert_eq!(app.ok(&Auth::None, "{ __typename }", json!({})).await["__typename"], "Query");

    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.web.profile = rollcall::config::Profile::Production;
    args.web.metrics_token = Some("scrape-me".into());
    args.web.playground = true;
    let app = spawn_with(args).await;
    assert_eq!(app.http.get(app.url("/metrics")).send().await.unwrap().status().as_u16(), 401);
    let ok = app.http.get(app.url("/metrics")).bearer_auth("scrape-me").send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let html = app.http.get(app.url("/")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(html.status().as_u16(), 200, "asked for");
}

#[tokio::test]
async fn every_response_carries_security_headers() {
    let app = spawn_app().await;
    for path in ["/health", "/graphql?query=%7B__typename%7D", "/console", "/nope"] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert!(h.get("strict-transport-security").is_none(), "not in development: {path}");
    }
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.web.cors_origins = vec!["https://admin.example.org".into()];
    let app = spawn_with(args).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let ok = preflight("https://admin.example.org").await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://admin.example.org");
    let allowed = ok.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // An actual call from the allowed origin.
    let resp = app
        .http
        .post(app.url("/graphql"))
        .header("origin", "https://admin.example.org")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://admin.example.org");
    // No origins configured: no CORS headers at all.
    let plain = spawn_app().await;
    let resp = plain
        .http
        .post(plain.url("/graphql"))
        .header("origin", "https://admin.example.org")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_key_revoked_elsewhere_closes_its_sockets_here_at_once() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let (key_id, secret) = app.api_key(&org, "door", None).await;
    let mut door = WsClient::signed_in(&app, "graphql-transport-ws", json!({ "apiKey": secret })).await;
    // As the CLI or another instance does it: straight to the database,
    // unseen by this process's API. The periodic recheck comes only every
    // 30 s; `closed` waits 10 s at most.
    app.state.store.api_keys().revoke(key_id.parse().unwrap(), chrono::Utc::now()).await.unwrap();
    let (code, reason) = door.closed().await;
    assert_eq!((code, reason.as_str()), (4403, "Forbidden: API key revoked"));
}

#[tokio::test]
async fn graphql_over_http_media_types_and_status_codes() {
    let app = spawn_app().await;
    let post = |accept: Option<&'static str>, content_type: Option<&'static str>, body: &'static str| {
        let mut req = app.http.post(app.url("/graphql")).body(body);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        if let Some(c) = content_type {
            req = req.header("content-type", c);
        }
        req.send()
    };
    const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
    let ok = r#"{"query": "{ __typename }"}"#;
    let invalid = r#"{"query": "{ nope }"}"#;
    let unparsable = r#"{"query": "{"}"#;
    // Asking for application/graphql-response+json: 200 when it ran, 400 when it could not.
    let r = post(Some(GRAPHQL_RESPONSE), Some("application/json"), ok).await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()), (200, GRAPHQL_RESPONSE));
    for body in [invalid, unparsable] {
        let r = post(Some(GRAPHQL_RESPONSE), Some("application/json"), body).await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        assert_eq!(r.headers()["content-type"], GRAPHQL_RESPONSE);
        let body: Value = r.json().await.unwrap();
        assert!(body.get("data").is_none_or(Value::is_null), "{body}");
    }
    // Asking for application/json, or for nothing: 200 and application/json, as legacy clients expect.
    for accept in [Some("application/json"), None] {
        for body in [ok, invalid] {
            let r = post(accept, Some("application/json"), body).await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{accept:?} {body}");
            assert_eq!(r.headers()["content-type"], "application/json");
        }
    }
    // A resolver's error is not a request error: 200 either way.
    let r = post(Some(GRAPHQL_RESPONSE), Some("application/json"), r#"{"query": "{ me { id } }"}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Null variables, operationName and extensions are allowed.
    let nulls = r#"{"query": "{ __typename }", "variables": null, "operationName": null, "extensions": null}"#;
    assert_eq!(post(None, Some("application/json"), nulls).await.unwrap().status().as_u16(), 200);
    // Without a JSON content type: 415.
    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let r = post(None, content_type, ok).await.unwrap();
        assert_eq!(r.status().as_u16(), 415, "{content_type:?}");
    }
    assert_eq!(post(None, Some("application/json; charset=utf-8"), ok).await.unwrap().status().as_u16(), 200);
}

/// The GraphQL-over-HTTP specification's own audit suite (vendored in
/// `tests/fixtures/graphql-http`), run with Node against the real server:
/// every MUST, and all SHOULDs but at most one.
#[tokio::test]
async fn the_graphql_over_http_audit_suite_passes() {
    let app = spawn_app().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/graphql-http/audit.mjs");
    let out = tokio::process::Command::new("node")
        .arg(script)
        .arg(app.url("/graphql"))
        .output()
        .await
        .expect("node runs (the tests need Node.js, as the console's do)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let count = |level: &str| -> (u32, u32) {
        let line = text.lines().find(|l| l.starts_with(level)).unwrap_or_else(|| panic!("no {level} line: {text}"));
        let n: Vec<u32> = line.split_whitespace().skip(1).map(|n| n.parse().unwrap()).collect();
        (n[0], n[1])
    };
    let (must, musts) = count("MUST");
    let (should, shoulds) = count("SHOULD");
    println!("graphql-http audit: MUST {must}/{musts}, SHOULD {should}/{shoulds}");
    assert_eq!(must, musts, "{text}");
    assert!(should + 1 >= shoulds, "{text}");
}

#[tokio::test]
async fn a_page_of_registrations_reads_its_users_in_one_batch() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let event = app.create_event(&org, "Big").await;
    let rows: Vec<rollcall::store::ImportRow> = (0..300)
        .map(|i| rollcall::store::ImportRow {
            line: i + 1,
            email: format!("p{i}@example.org"),
            name: format!("Person {i}"),
            ble_uuid: uuid::Uuid::new_v4().to_string(),
            event: Some(event.parse().unwrap()),
        })
        .collect();
    app.state.store.users().import(rows, chrono::Utc::now()).await.unwrap();
    let before = app.state.users.loader().reads();
    let page = app
        .ok(
            &org.auth(),
            "query($e: ID!) { event(id: $e) { organizer { name } registrations(first: 300) { nodes { user { name email } } } } }",
            json!({ "e": event }),
        )
        .await;
    let nodes = page["event"]["registrations"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 300);
    assert!(nodes.iter().all(|n| n["user"]["email"].is_string()), "the organiser sees their attendees");
    // One read per batch, a batch being what is asked within a millisecond:
    // a few, whatever the page's size (7 on a loaded debug build), where
    // there used to be one per row.
    let reads = app.state.users.loader().reads() - before;
    assert!(reads < 30, "{reads} reads for 301 users");
}
