//! Registrations by attendees and by organisers on their behalf.

use serde_json::json;

use crate::helpers::spawn_app;

const REGISTER: &str = "mutation($e: ID!, $u: ID) { registerForEvent(eventId: $e, userId: $u) { status walkIn user { id } event { id } } }";
const CANCEL: &str = "mutation($e: ID!, $u: ID) { cancelRegistration(eventId: $e, userId: $u) { status cancelledAt } }";

#[tokio::test]
async fn attendees_register_cancel_and_register_again() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let event = app.create_event(&org, "Talk").await;

    let r = app.ok(&ada.auth(), REGISTER, json!({ "e": event })).await;
    assert_eq!(r["registerForEvent"]["status"], "REGISTERED");
    assert_eq!(r["registerForEvent"]["user"]["id"], ada.id.as_str());
    assert_eq!(r["registerForEvent"]["walkIn"], false);
    // Registering twice is harmless.
    app.ok(&ada.auth(), REGISTER, json!({ "e": event })).await;
    let count = "query($id: ID!) { event(id: $id) { registeredCount } }";
    assert_eq!(app.ok(&ada.auth(), count, json!({ "id": event })).await["event"]["registeredCount"], 1);

    let c = app.ok(&ada.auth(), CANCEL, json!({ "e": event })).await;
    assert_eq!(c["cancelRegistration"]["status"], "CANCELLED");
    assert!(c["cancelRegistration"]["cancelledAt"].is_string());
    assert_eq!(app.ok(&ada.auth(), count, json!({ "id": event })).await["event"]["registeredCount"], 0);
    assert_eq!(app.err(&ada.auth(), CANCEL, json!({ "e": event })).await, "NOT_FOUND");

    let again = app.ok(&ada.auth(), REGISTER, json!({ "e": event })).await;
    assert_eq!(again["registerForEvent"]["status"], "REGISTERED");

    let mine =
        app.ok(&ada.auth(), "{ me { registrations { edges { node { status event { id } } } } } }", json!({})).await;
    assert_eq!(mine["me"]["registrations"]["edges"][0]["node"]["event"]["id"], event.as_str());
}

#[tokio::test]
async fn organisers_register_others_attendees_cannot() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let other_org = app.organizer("other@example.org").await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let bob = app.sign_up("bob@example.org", "Bob").await;
    let event = app.create_event(&org, "Talk").await;

    assert_eq!(app.err(&bob.auth(), REGISTER, json!({ "e": event, "u": ada.id })).await, "FORBIDDEN");
    assert_eq!(app.err(&other_org.auth(), REGISTER, json!({ "e": event, "u": ada.id })).await, "FORBIDDEN");
    let r = app.ok(&org.auth(), REGISTER, json!({ "e": event, "u": ada.id })).await;
    assert_eq!(r["registerForEvent"]["user"]["id"], ada.id.as_str());
    assert_eq!(app.err(&bob.auth(), CANCEL, json!({ "e": event, "u": ada.id })).await, "FORBIDDEN");
    app.ok(&org.auth(), CANCEL, json!({ "e": event, "u": ada.id })).await;

    let missing_user = json!({ "e": event, "u": uuid::Uuid::now_v7().to_string() });
    assert_eq!(app.err(&org.auth(), REGISTER, missing_user).await, "NOT_FOUND");
    let missing_event = json!({ "e": uuid::Uuid::now_v7().to_string() });
    assert_eq!(app.err(&ada.auth(), REGISTER, missing_event).await, "NOT_FOUND");
}

#[tokio::test]
async fn event_registrations_are_for_its_organiser() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let event = app.create_event(&org, "Talk").await;
    app.ok(&ada.auth(), REGISTER, json!({ "e": event })).await;
    let q = "query($id: ID!) { event(id: $id) { registrations { edges { node { user { id email } status } } } } }";
    let regs = app.ok(&org.auth(), q, json!({ "id": event })).await;
    assert_eq!(regs["event"]["registrations"]["edges"][0]["node"]["user"]["id"], ada.id.as_str());
    assert_eq!(regs["event"]["registrations"]["edges"][0]["node"]["user"]["email"], "ada@example.org");
    assert_eq!(app.err(&ada.auth(), q, json!({ "id": event })).await, "FORBIDDEN");

    let bob = app.sign_up("bob@example.org", "Bob").await;
    let theirs = "query($id: ID!) { user(id: $id) { registrations { edges { node { id } } } } }";
    assert_eq!(app.err(&bob.auth(), theirs, json!({ "id": ada.id })).await, "FORBIDDEN");
}

#[tokio::test]
async fn registration_closes_when_an_event_ends() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let ada = app.sign_up("ada@example.org", "Ada").await;
    let event = app.create_event(&org, "Over").await;
    app.ok(&org.auth(), "mutation($id: ID!) { endEvent(id: $id) { state } }", json!({ "id": event })).await;
    assert_eq!(app.err(&ada.auth(), REGISTER, json!({ "e": event })).await, "CONFLICT");
}
