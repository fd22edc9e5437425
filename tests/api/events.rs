//! Events: creation with policy defaults, editing, the life cycle, listing.

use serde_json::json;

use crate::helpers::{Auth, spawn_app};

const CREATE: &str = "mutation($i: CreateEventInput!) { createEvent(input: $i) {
    id name state isActive organizer { id }
    policy { minRssi departureGapSeconds graceSeconds requireRegistration } } }";

#[tokio::test]
async fn organisers_create_events_with_default_policy() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let data = app
        .ok(&org.auth(), CREATE, json!({ "i": { "name": "RustConf", "startsAt": "2030-01-01T09:00:00Z", "endsAt": "2030-01-01T18:00:00Z" } }))
        .await;
    let e = &data["createEvent"];
    assert_eq!(e["state"], "SCHEDULED");
    assert_eq!(e["isActive"], false);
    assert_eq!(e["organizer"]["id"], org.id.as_str());
    assert_eq!(
        e["policy"],
        json!({ "minRssi": -90, "departureGapSeconds": 300, "graceSeconds": 900, "requireRegistration": true })
    );
}

#[tokio::test]
async fn event_input_is_validated() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    for input in [
        json!({ "name": "Backwards", "startsAt": "2030-01-02T00:00:00Z", "endsAt": "2030-01-01T00:00:00Z" }),
        json!({ "name": "Instant", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2030-01-01T00:00:00Z" }),
        json!({ "name": "  ", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2030-01-02T00:00:00Z" }),
        json!({ "name": "Bad RSSI", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2030-01-02T00:00:00Z", "policy": { "minRssi": -300 } }),
        json!({ "name": "Bad date", "startsAt": "yesterday", "endsAt": "2030-01-02T00:00:00Z" }),
    ] {
        assert_eq!(app.err(&org.auth(), CREATE, json!({ "i": input })).await, "VALIDATION", "{input}");
    }
}

#[tokio::test]
async fn only_organisers_and_admins_create_events() {
    let app = spawn_app().await;
    let att = app.sign_up("att@example.org", "Att").await;
    let vars = json!({ "i": { "name": "X", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2030-01-02T00:00:00Z" } });
    assert_eq!(app.err(&att.auth(), CREATE, vars.clone()).await, "FORBIDDEN");
    assert_eq!(app.err(&Auth::None, CREATE, vars).await, "UNAUTHENTICATED");
}

#[tokio::test]
async fn update_changes_only_given_fields_and_checks_the_window() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let id = app.create_event(&org, "Meetup").await;
    let q = "mutation($id: ID!, $i: UpdateEventInput!) { updateEvent(id: $id, input: $i) {
        name location endsAt policy { minRssi graceSeconds requireRegistration } } }";
    let data = app
        .ok(&org.auth(), q, json!({ "id": id, "i": { "location": "Hall B", "policy": { "minRssi": -75, "requireRegistration": false } } }))
        .await;
    let e = &data["updateEvent"];
    assert_eq!(e["name"], "Meetup");
    assert_eq!(e["location"], "Hall B");
    assert_eq!(e["policy"]["minRssi"], -75);
    assert_eq!(e["policy"]["graceSeconds"], 900, "untouched policy fields keep their value");
    assert_eq!(e["policy"]["requireRegistration"], false);
    let backwards = json!({ "id": id, "i": { "endsAt": "2030-05-01T08:00:00Z" } });
    assert_eq!(app.err(&org.auth(), q, backwards).await, "VALIDATION");
}

#[tokio::test]
async fn only_the_events_organiser_or_an_admin_manage_it() {
    let app = spawn_app().await;
    let owner = app.organizer("owner@example.org").await;
    let other = app.organizer("other@example.org").await;
    let att = app.sign_up("att@example.org", "Att").await;
    let admin = app.admin().await;
    let id = app.create_event(&owner, "Owned").await;
    let update = "mutation($id: ID!) { updateEvent(id: $id, input: { name: \"Hijacked\" }) { name } }";
    let activate = "mutation($id: ID!) { activateEvent(id: $id) { state } }";
    let delete = "mutation($id: ID!) { deleteEvent(id: $id) }";
    for q in [update, activate, delete] {
        assert_eq!(app.err(&other.auth(), q, json!({ "id": id })).await, "FORBIDDEN");
        assert_eq!(app.err(&att.auth(), q, json!({ "id": id })).await, "FORBIDDEN");
        assert_eq!(app.err(&Auth::None, q, json!({ "id": id })).await, "UNAUTHENTICATED");
    }
    assert_eq!(app.ok(&admin.auth(), activate, json!({ "id": id })).await["activateEvent"]["state"], "ACTIVE");
    let missing = json!({ "id": uuid::Uuid::now_v7().to_string() });
    assert_eq!(app.err(&owner.auth(), activate, missing).await, "NOT_FOUND");
}

#[tokio::test]
async fn life_cycle_activate_end_and_active_events() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let att = app.sign_up("att@example.org", "Att").await;
    let a = app.create_event(&org, "A").await;
    let b = app.create_event(&org, "B").await;
    let active = "{ activeEvents { id state } }";
    assert_eq!(app.ok(&att.auth(), active, json!({})).await["activeEvents"], json!([]));

    app.activate(&org, &a).await;
    let list = app.ok(&att.auth(), active, json!({})).await;
    assert_eq!(list["activeEvents"], json!([{ "id": a, "state": "ACTIVE" }]));

    let end = "mutation($id: ID!) { endEvent(id: $id) { state } }";
    assert_eq!(app.ok(&org.auth(), end, json!({ "id": a })).await["endEvent"]["state"], "ENDED");
    let again = "mutation($id: ID!) { activateEvent(id: $id) { state } }";
    assert_eq!(app.err(&org.auth(), again, json!({ "id": a })).await, "CONFLICT", "an ended event stays ended");
    assert_eq!(app.ok(&att.auth(), active, json!({})).await["activeEvents"], json!([]));

    let cancel = "mutation($id: ID!) { cancelEvent(id: $id) { state } }";
    assert_eq!(app.ok(&org.auth(), cancel, json!({ "id": b })).await["cancelEvent"]["state"], "CANCELLED");
}

#[tokio::test]
async fn events_are_listed_with_filters_and_cursors_and_read_by_id() {
    let app = spawn_app().await;
    let org1 = app.organizer("one@example.org").await;
    let org2 = app.organizer("two@example.org").await;
    let att = app.sign_up("att@example.org", "Att").await;
    let e1 = app.create_event(&org1, "E1").await;
    let e2 = app.create_event(&org1, "E2").await;
    let e3 = app.create_event(&org2, "E3").await;
    app.activate(&org1, &e2).await;

    let q = "query($f: EventFilterInput, $first: Int, $after: String) {
        events(filter: $f, first: $first, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } }";
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["events"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["id"].as_str().unwrap().to_owned()).collect()
    };
    let all = app.ok(&att.auth(), q, json!({})).await;
    assert_eq!(ids(&all), vec![e1.clone(), e2.clone(), e3.clone()]);
    let active = app.ok(&att.auth(), q, json!({ "f": { "state": "ACTIVE" } })).await;
    assert_eq!(ids(&active), vec![e2.clone()]);
    let by_org = app.ok(&att.auth(), q, json!({ "f": { "organizerId": org2.id } })).await;
    assert_eq!(ids(&by_org), vec![e3.clone()]);

    let p1 = app.ok(&att.auth(), q, json!({ "first": 2 })).await;
    assert_eq!(ids(&p1), vec![e1.clone(), e2.clone()]);
    assert_eq!(p1["events"]["pageInfo"]["hasNextPage"], true);
    let p2 = app.ok(&att.auth(), q, json!({ "first": 2, "after": p1["events"]["pageInfo"]["endCursor"] })).await;
    assert_eq!(ids(&p2), vec![e3.clone()]);
    assert_eq!(app.err(&att.auth(), q, json!({ "first": 100000 })).await, "VALIDATION");
    assert_eq!(app.err(&Auth::None, q, json!({})).await, "UNAUTHENTICATED");

    let one = "query($id: ID!) { event(id: $id) { name } }";
    assert_eq!(app.ok(&att.auth(), one, json!({ "id": e3 })).await["event"]["name"], "E3");
    assert!(app.ok(&att.auth(), one, json!({ "id": uuid::Uuid::now_v7().to_string() })).await["event"].is_null());
    assert_eq!(app.err(&att.auth(), one, json!({ "id": "nope" })).await, "VALIDATION");
}

#[tokio::test]
async fn deleting_an_event_removes_it_and_its_registrations() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let att = app.sign_up("att@example.org", "Att").await;
    let id = app.create_event(&org, "Doomed").await;
    app.ok(&att.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": id })).await;
    assert_eq!(
        app.ok(&org.auth(), "mutation($id: ID!) { deleteEvent(id: $id) }", json!({ "id": id })).await["deleteEvent"],
        true
    );
    assert!(
        app.ok(&att.auth(), "query($id: ID!) { event(id: $id) { id } }", json!({ "id": id })).await["event"].is_null()
    );
    let regs = app.ok(&att.auth(), "{ me { registrations { edges { node { id } } } } }", json!({})).await;
    assert_eq!(regs["me"]["registrations"]["edges"], json!([]));
}
