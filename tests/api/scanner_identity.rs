//! A scanner's own identity (`x-rollcall-scanner-id`) over real HTTP: a batch
//! resent under a rotated key is recognised as the one already applied,
//! another owner's key cannot use the identity to pre-empt its batches, and
//! its owner (or an admin) can release it for a box handed to someone else.

use serde_json::{Value, json};

use crate::helpers::{TestApp, code, spawn_app};
use crate::ingest::{SUBMIT, at, attendance, batch, sighting, venue};

/// Submits `vars` with the API key `secret`, naming the scanner `identity`.
async fn submit_as(app: &TestApp, secret: &str, identity: Option<&str>, vars: &Value) -> (u16, Value) {
    post_with_key(app, secret, identity, SUBMIT, vars.clone()).await
}

/// Posts `query` with the API key `secret`, naming the scanner `identity`.
async fn post_with_key(app: &TestApp, secret: &str, identity: Option<&str>, query: &str, vars: Value) -> (u16, Value) {
    let mut req = app
        .http
        .post(app.url("/graphql"))
        .header("authorization", format!("ApiKey {secret}"))
        .json(&json!({ "query": query, "variables": vars }));
    if let Some(id) = identity {
        req = req.header("x-rollcall-scanner-id", id);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn revoke(app: &TestApp, who: &crate::helpers::Session, key: &str) {
    app.ok(&who.auth(), "mutation($id: ID!) { revokeApiKey(id: $id) { id } }", json!({ "id": key })).await;
}

#[tokio::test]
async fn a_batch_resent_under_a_rotated_key_is_counted_once() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let scanner = uuid::Uuid::new_v4().to_string();
    let (old_id, old) = app.api_key(&v.org, "door", Some(vec![&v.event])).await;
    let vars = batch(vec![sighting(&v.ada_ble, at(&v, 10), -60), sighting(&v.ada_ble, at(&v, 11), -62)]);
    let (_, first) = submit_as(&app, &old, Some(&scanner), &vars).await;
    assert_eq!(first["data"]["submitSightings"]["accepted"], 2, "{first}");
    assert_eq!(attendance(&app, &v).await[0]["sightings"], 2);

    // The answer never reached the scanner; meanwhile its key was rotated,
    // and it sends the same sealed batch again with the new key.
    let (_, new) = app.api_key(&v.org, "door, rotated", Some(vec![&v.event])).await;
    revoke(&app, &v.org, &old_id).await;
    let (status, again) = submit_as(&app, &new, Some(&scanner), &vars).await;
    assert_eq!(status, 200, "{again}");
    let again = &again["data"]["submitSightings"];
    assert_eq!(again["replayed"], true, "acknowledged as the batch already applied: {again}");
    assert_eq!(again["accepted"], 2);
    assert_eq!(attendance(&app, &v).await[0]["sightings"], 2, "counted once");

    // A new batch under the new key is applied as usual.
    let next = batch(vec![sighting(&v.ada_ble, at(&v, 20), -60)]);
    let (_, r) = submit_as(&app, &new, Some(&scanner), &next).await;
    assert_eq!(r["data"]["submitSightings"]["replayed"], false, "{r}");
    assert_eq!(attendance(&app, &v).await[0]["sightings"], 3);

    // Without an identity, batches are kept per key, as before.
    let (_, r) = submit_as(&app, &new, None, &vars).await;
    assert_eq!(r["data"]["submitSightings"]["replayed"], false, "{r}");
}

#[tokio::test]
async fn another_owners_key_cannot_use_a_scanners_identity() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let scanner = uuid::Uuid::new_v4().to_string();
    let (_, door) = app.api_key(&v.org, "door", Some(vec![&v.event])).await;
    let (_, r) = submit_as(&app, &door, Some(&scanner), &batch(vec![sighting(&v.ada_ble, at(&v, 10), -60)])).await;
    assert_eq!(r["data"]["submitSightings"]["accepted"], 1, "{r}");

    // Another organiser learns the identity and a batch id the scanner has yet
    // to send, and sends it first with a key of their own.
    let mallory = app.organizer("mallory@example.org").await;
    let theirs = app.create_event(&mallory, "Elsewhere").await;
    app.activate(&mallory, &theirs).await;
    let (_, stolen) = app.api_key(&mallory, "not that door", Some(vec![&theirs])).await;
    let coming = batch(vec![sighting(&v.ada_ble, at(&v, 30), -60)]);
    let (status, refused) = submit_as(&app, &stolen, Some(&scanner), &coming).await;
    assert_eq!(code(&refused).as_deref(), Some("FORBIDDEN"), "HTTP {status}: {refused}");
    let message = refused["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("belongs to another owner's API keys"), "{message}");

    // The scanner's own batch with that id is applied, not answered as a replay.
    let (_, r) = submit_as(&app, &door, Some(&scanner), &coming).await;
    assert_eq!(r["data"]["submitSightings"]["replayed"], false, "{r}");
    assert_eq!(attendance(&app, &v).await[0]["sightings"], 2);

    // An identity that is not a UUID is refused, not ignored.
    let (status, bad) = submit_as(&app, &door, Some("door-1"), &coming).await;
    assert_eq!((status, code(&bad).as_deref()), (400, Some("VALIDATION")), "{bad}");
    assert!(bad["errors"][0]["message"].as_str().unwrap().contains("x-rollcall-scanner-id"));
}

const RELEASE: &str = "mutation($id: UUID!) { releaseScannerIdentity(id: $id) }";

#[tokio::test]
async fn a_released_identity_is_bound_anew_and_keeps_its_batch_ids() {
    let app = spawn_app().await;
    let v = venue(&app, json!({})).await;
    let scanner = uuid::Uuid::new_v4().to_string();
    let (_, door) = app.api_key(&v.org, "door", Some(vec![&v.event])).await;
    let sent = batch(vec![sighting(&v.ada_ble, at(&v, 10), -60)]);
    let (_, r) = submit_as(&app, &door, Some(&scanner), &sent).await;
    assert_eq!(r["data"]["submitSightings"]["accepted"], 1, "{r}");

    // The box is handed to another organiser, with its outbox and its identity.
    let bea = app.organizer("bea@example.org").await;
    let theirs = app.create_event(&bea, "Next door").await;
    app.activate(&bea, &theirs).await;
    let (_, beas) = app.api_key(&bea, "their door", Some(vec![&theirs])).await;
    let next = batch(vec![sighting(&v.ada_ble, at(&v, 20), -60)]);
    let (_, refused) = submit_as(&app, &beas, Some(&scanner), &next).await;
    assert_eq!(code(&refused).as_deref(), Some("FORBIDDEN"), "still the first owner's: {refused}");
    let message = refused["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("releaseScannerIdentity"), "the refusal says how to move it: {message}");

    // Only its owner (or an admin) may release it.
    let (_, body) = app.post_gql(&bea.auth(), RELEASE, json!({ "id": scanner })).await;
    assert_eq!(code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    let released = app.ok(&v.org.auth(), RELEASE, json!({ "id": scanner })).await;
    assert_eq!(released["releaseScannerIdentity"], true);

    // The next batch binds it to the new owner's key.
    let (status, r) = submit_as(&app, &beas, Some(&scanner), &next).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["data"]["submitSightings"]["replayed"], false, "{r}");
    // Its batch ids still protect against replays: the batch sent under the
    // first owner, resent from the outbox, is not applied a second time.
    let (_, again) = submit_as(&app, &beas, Some(&scanner), &sent).await;
    assert_eq!(again["data"]["submitSightings"]["replayed"], true, "{again}");
    assert_eq!(attendance(&app, &v).await[0]["sightings"], 1, "counted once");
    // Now the first owner's key is the foreign one.
    let (_, r) = submit_as(&app, &door, Some(&scanner), &batch(vec![sighting(&v.ada_ble, at(&v, 30), -60)])).await;
    assert_eq!(code(&r).as_deref(), Some("FORBIDDEN"), "{r}");
    assert_eq!(app.err(&v.org.auth(), RELEASE, json!({ "id": scanner })).await, "FORBIDDEN");

    // An admin may release anyone's.
    let admin = app.admin().await;
    assert_eq!(app.ok(&admin.auth(), RELEASE, json!({ "id": scanner })).await["releaseScannerIdentity"], true);
}

#[tokio::test]
async fn releasing_an_unknown_identity_is_not_found() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let (_, body) = app.post_gql(&org.auth(), RELEASE, json!({ "id": unknown })).await;
    assert_eq!(code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains(&unknown) && message.contains("not bound"), "{message}");
    // Not a UUID: refused before anything is looked up.
    let (_, body) = app.post_gql(&org.auth(), RELEASE, json!({ "id": "door-1" })).await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("UUID"), "{body}");
    // A scanner's key may not release identities.
    let event = app.create_event(&org, "E").await;
    let (_, key) = app.api_key(&org, "k", Some(vec![&event])).await;
    let (_, body) = post_with_key(&app, &key, None, RELEASE, json!({ "id": unknown })).await;
    assert!(matches!(code(&body).as_deref(), Some("FORBIDDEN" | "UNAUTHENTICATED")), "{body}");
}
