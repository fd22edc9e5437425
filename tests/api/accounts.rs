//! Sign-up, log-in, the user directory, BLE identifiers and devices.

use serde_json::json;

use crate::helpers::{Auth, PASSWORD, spawn_app};

const ME: &str = "{ me { id email name role bleUuid } }";

#[tokio::test]
async fn sign_up_then_log_in_then_me() {
    let app = spawn_app().await;
    let ada = app.sign_up("Ada@Example.org", "Ada").await;

    let me = app.ok(&ada.auth(), ME, json!({})).await;
    assert_eq!(me["me"]["id"], ada.id.as_str());
    assert_eq!(me["me"]["email"], "ada@example.org", "e-mail is normalised");
    assert_eq!(me["me"]["role"], "ATTENDEE");
    let ble = me["me"]["bleUuid"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(ble).unwrap().get_version_num(), 4);

    let login = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token user { id } } }";
    let data = app.ok(&Auth::None, login, json!({ "e": "ADA@example.org", "p": PASSWORD })).await;
    assert_eq!(data["logIn"]["user"]["id"], ada.id.as_str());
    let token = data["logIn"]["token"].as_str().unwrap().to_owned();
    assert_eq!(app.ok(&Auth::Bearer(token), ME, json!({})).await["me"]["id"], ada.id.as_str());

    assert_eq!(
        app.err(&Auth::None, login, json!({ "e": "ada@example.org", "p": "wrong password!" })).await,
        "UNAUTHENTICATED"
    );
    assert_eq!(
        app.err(&Auth::None, login, json!({ "e": "nobody@example.org", "p": PASSWORD })).await,
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn sign_up_refuses_bad_input_with_validation_errors() {
    let app = spawn_app().await;
    app.sign_up("taken@example.org", "Taken").await;
    let q = "mutation($e: String!, $n: String!, $p: String!) { signUp(email: $e, name: $n, password: $p) { token } }";
    for (email, name, password, code) in [
        ("taken@example.org", "Again", PASSWORD, "CONFLICT"),
        ("TAKEN@example.org", "Again", PASSWORD, "CONFLICT"),
        ("not-an-email", "Bob", PASSWORD, "VALIDATION"),
        ("bob@example.org", "   ", PASSWORD, "VALIDATION"),
        ("bob@example.org", "Bob", "short", "VALIDATION"),
    ] {
        let got = app.err(&Auth::None, q, json!({ "e": email, "n": name, "p": password })).await;
        assert_eq!(got, code, "{email} / {name:?} / {password:?}");
    }
}

#[tokio::test]
async fn me_needs_a_login() {
    let app = spawn_app().await;
    assert_eq!(app.err(&Auth::None, ME, json!({})).await, "UNAUTHENTICATED");
}

#[tokio::test]
async fn admins_create_users_with_given_ble_uuid_and_role() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let q = "mutation($i: CreateUserInput!) { createUser(input: $i) { id role bleUuid email } }";
    let badge = "6F1C2A3E-8D4B-4C55-9A0E-2B7F4D9E1C3A";
    let data = app
        .ok(
            &admin.auth(),
            q,
            json!({ "i": { "email": "badge@example.org", "name": "Badge", "bleUuid": badge, "role": "ORGANIZER" } }),
        )
        .await;
    assert_eq!(data["createUser"]["bleUuid"], badge.to_lowercase());
    assert_eq!(data["createUser"]["role"], "ORGANIZER");

    let again = json!({ "i": { "email": "other@example.org", "name": "Other", "bleUuid": badge } });
    assert_eq!(app.err(&admin.auth(), q, again).await, "CONFLICT", "bleUuid is unique");
    let bad = json!({ "i": { "email": "x@example.org", "name": "X", "bleUuid": "not-a-uuid" } });
    assert_eq!(app.err(&admin.auth(), q, bad).await, "VALIDATION");

    let attendee = app.sign_up("att@example.org", "Att").await;
    let vars = json!({ "i": { "email": "y@example.org", "name": "Y" } });
    assert_eq!(app.err(&attendee.auth(), q, vars.clone()).await, "FORBIDDEN");
    assert_eq!(app.err(&Auth::None, q, vars).await, "UNAUTHENTICATED");
}

#[tokio::test]
async fn user_directory_is_paginated_and_admin_only() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for i in 0..5 {
        app.sign_up(&format!("u{i}@example.org"), "U").await;
    }
    let q = "query($a: String) { users(first: 4, after: $a) { edges { cursor node { email } } pageInfo { hasNextPage endCursor } } }";
    let page1 = app.ok(&admin.auth(), q, json!({ "a": null })).await;
    assert_eq!(page1["users"]["edges"].as_array().unwrap().len(), 4);
    assert_eq!(page1["users"]["pageInfo"]["hasNextPage"], true);
    let cursor = page1["users"]["pageInfo"]["endCursor"].clone();
    let page2 = app.ok(&admin.auth(), q, json!({ "a": cursor })).await;
    let rest: Vec<_> = page2["users"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["email"].clone()).collect();
    assert_eq!(rest.len(), 2, "6 users in all: the admin and 5");
    assert_eq!(page2["users"]["pageInfo"]["hasNextPage"], false);
    assert_eq!(app.err(&admin.auth(), q, json!({ "a": "garbage" })).await, "VALIDATION");

    let someone = app.sign_up("z@example.org", "Z").await;
    assert_eq!(app.err(&someone.auth(), q, json!({ "a": null })).await, "FORBIDDEN");
}

#[tokio::test]
async fn lookups_by_email_and_identifier_are_for_organisers() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let ble = app.ok(&ada.auth(), ME, json!({})).await["me"]["bleUuid"].as_str().unwrap().to_owned();
    let admin = app.admin().await;
    app.ok(
        &admin.auth(),
        "mutation($u: ID) { addDeviceIdentifier(userId: $u, identifier: \"Ada's Pixel\") { identifier } }",
        json!({ "u": ada.id }),
    )
    .await;

    let by_email = "query($e: String!) { userByEmail(email: $e) { id } }";
    assert_eq!(
        app.ok(&org.auth(), by_email, json!({ "e": "ADA@example.org" })).await["userByEmail"]["id"],
        ada.id.as_str()
    );
    let by_ble = "query($b: String!) { userByBleUuid(bleUuid: $b) { id } }";
    assert_eq!(
        app.ok(&org.auth(), by_ble, json!({ "b": ble.to_uppercase() })).await["userByBleUuid"]["id"],
        ada.id.as_str()
    );
    assert_eq!(
        app.ok(&org.auth(), by_ble, json!({ "b": "Ada's Pixel" })).await["userByBleUuid"]["id"],
        ada.id.as_str()
    );
    assert!(app.ok(&org.auth(), by_ble, json!({ "b": "unknown" })).await["userByBleUuid"].is_null());

    assert_eq!(app.err(&ada.auth(), by_email, json!({ "e": "ada@example.org" })).await, "FORBIDDEN");
    assert_eq!(app.err(&ada.auth(), by_ble, json!({ "b": ble })).await, "FORBIDDEN");
}

#[tokio::test]
async fn rotating_the_ble_uuid_replaces_it() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let before = app.ok(&ada.auth(), ME, json!({})).await["me"]["bleUuid"].clone();
    let after =
        app.ok(&ada.auth(), "mutation { rotateBleUuid { bleUuid } }", json!({})).await["rotateBleUuid"]["bleUuid"]
            .clone();
    assert_ne!(before, after);
    assert_eq!(app.ok(&ada.auth(), ME, json!({})).await["me"]["bleUuid"], after);

    let bob = app.sign_up("bob@example.org", "Bob").await;
    let q = "mutation($u: ID) { rotateBleUuid(userId: $u) { id } }";
    assert_eq!(app.err(&bob.auth(), q, json!({ "u": ada.id })).await, "FORBIDDEN");
    let admin = app.admin().await;
    assert_eq!(app.ok(&admin.auth(), q, json!({ "u": ada.id })).await["rotateBleUuid"]["id"], ada.id.as_str());
}

#[tokio::test]
async fn device_identifiers_are_added_listed_unique_and_removed() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let bob = app.sign_up("bob@example.org", "Bob").await;
    let admin = app.admin().await;
    let add = "mutation($i: String!, $u: ID) { addDeviceIdentifier(identifier: $i, userId: $u) { identifier } }";
    let remove = "mutation($i: String!) { removeDeviceIdentifier(identifier: $i) }";
    app.ok(&admin.auth(), add, json!({ "i": "AA:BB:CC:DD:EE:FF", "u": ada.id })).await;
    let devices = app.ok(&ada.auth(), "{ me { devices { identifier } } }", json!({})).await;
    assert_eq!(devices["me"]["devices"][0]["identifier"], "AA:BB:CC:DD:EE:FF");
    assert_eq!(app.err(&admin.auth(), add, json!({ "i": "AA:BB:CC:DD:EE:FF", "u": bob.id })).await, "CONFLICT");
    assert_eq!(app.err(&admin.auth(), add, json!({ "i": "", "u": ada.id })).await, "VALIDATION");
    assert_eq!(app.err(&bob.auth(), remove, json!({ "i": "AA:BB:CC:DD:EE:FF" })).await, "NOT_FOUND");
    assert_eq!(app.ok(&ada.auth(), remove, json!({ "i": "AA:BB:CC:DD:EE:FF" })).await["removeDeviceIdentifier"], true);
    let devices = app.ok(&ada.auth(), "{ me { devices { identifier } } }", json!({})).await;
    assert_eq!(devices["me"]["devices"], json!([]));
}

#[tokio::test]
async fn update_and_delete_users() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let update = "mutation($id: ID!, $i: UpdateUserInput!) { updateUser(id: $id, input: $i) { name role } }";

    let own = app.ok(&ada.auth(), update, json!({ "id": ada.id, "i": { "name": "Ada L." } })).await;
    assert_eq!(own["updateUser"]["name"], "Ada L.");
    assert_eq!(app.err(&ada.auth(), update, json!({ "id": ada.id, "i": { "role": "ADMIN" } })).await, "FORBIDDEN");
    let promoted = app.ok(&admin.auth(), update, json!({ "id": ada.id, "i": { "role": "ORGANIZER" } })).await;
    assert_eq!(promoted["updateUser"]["role"], "ORGANIZER");
    // The token Ada already holds now carries the new role: users are re-read per request.
    assert_eq!(app.ok(&ada.auth(), ME, json!({})).await["me"]["role"], "ORGANIZER");

    let delete = "mutation($id: ID!) { deleteUser(id: $id) }";
    assert_eq!(app.err(&ada.auth(), delete, json!({ "id": admin.id })).await, "FORBIDDEN");
    assert_eq!(app.ok(&admin.auth(), delete, json!({ "id": ada.id })).await["deleteUser"], true);
    assert_eq!(app.err(&admin.auth(), delete, json!({ "id": ada.id })).await, "NOT_FOUND");
    assert_eq!(app.err(&admin.auth(), delete, json!({ "id": "not-a-uuid" })).await, "VALIDATION");
    // A token for a deleted user no longer works.
    assert_eq!(app.err(&ada.auth(), ME, json!({})).await, "UNAUTHENTICATED");
}

/// The user in an auth payload is the caller, who sees their own e-mail and
/// BLE UUID (the README's walk-through reads `signUp { user { bleUuid } }`).
#[tokio::test]
async fn the_auth_payload_shows_the_caller_their_own_identifiers() {
    let app = spawn_app().await;
    let q = "mutation($e: String!, $n: String!, $p: String!) {
        signUp(email: $e, name: $n, password: $p) { token user { id email bleUuid } } }";
    let data = app.ok(&Auth::None, q, json!({ "e": "grace@example.org", "n": "Grace", "p": PASSWORD })).await;
    let ble = data["signUp"]["user"]["bleUuid"].as_str().expect("bleUuid in signUp's payload").to_owned();
    assert_eq!(data["signUp"]["user"]["email"], "grace@example.org");
    let token = data["signUp"]["token"].as_str().unwrap().to_owned();
    assert_eq!(app.ok(&Auth::Bearer(token), ME, json!({})).await["me"]["bleUuid"], ble.as_str());

    let login = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { user { email bleUuid } } }";
    let data = app.ok(&Auth::None, login, json!({ "e": "grace@example.org", "p": PASSWORD })).await;
    assert_eq!(data["logIn"]["user"]["bleUuid"], ble.as_str());
}
