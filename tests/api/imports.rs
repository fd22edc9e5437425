//! `importAttendees`: the CLI's CSV import through the API, with a preview.

use serde_json::json;

use crate::helpers::{code, spawn_app};

const IMPORT: &str = "mutation($c: String!, $e: ID, $d: Boolean!) {
  importAttendees(csv: $c, eventId: $e, dryRun: $d) {
    dryRun created existing registered rows { line email eventId } refused { line reason }
  }
}";

#[tokio::test]
async fn a_preview_writes_nothing_and_the_import_registers_one_person_for_several_events() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let (talk, workshop) = (app.create_event(&org, "Talk").await, app.create_event(&org, "Workshop").await);
    let csv = format!(
        "email,name,eventId\n\
         ada@example.org,Ada Lovelace,{talk}\n\
         ada@example.org,Ada Lovelace,{workshop}\n\
         grace@example.org,Grace Hopper,{talk}\n\
         ada@example.org,Ada Lovelace,{talk}\n\
         not-an-email,Nobody,{talk}\n"
    );

    let preview = app.ok(&org.auth(), IMPORT, json!({ "c": csv, "d": true })).await["importAttendees"].clone();
    assert_eq!(preview["dryRun"], true);
    assert_eq!((preview["created"].as_i64(), preview["registered"].as_i64()), (Some(2), Some(3)), "{preview}");
    assert_eq!(preview["rows"].as_array().unwrap().len(), 3);
    let refused: Vec<i64> =
        preview["refused"].as_array().unwrap().iter().map(|r| r["line"].as_i64().unwrap()).collect();
    assert_eq!(refused, [5, 6], "{preview}");
    assert!(preview["refused"][0]["reason"].as_str().unwrap().contains("same event"), "{preview}");
    let count = "query($id: ID!) { event(id: $id) { registeredCount } }";
    assert_eq!(app.ok(&org.auth(), count, json!({ "id": talk })).await["event"]["registeredCount"], 0);

    let done = app.ok(&org.auth(), IMPORT, json!({ "c": csv, "d": false })).await["importAttendees"].clone();
    assert_eq!((done["created"].as_i64(), done["registered"].as_i64()), (Some(2), Some(3)), "{done}");
    assert_eq!(app.ok(&org.auth(), count, json!({ "id": talk })).await["event"]["registeredCount"], 2);
    assert_eq!(app.ok(&org.auth(), count, json!({ "id": workshop })).await["event"]["registeredCount"], 1);

    // Again: nothing new; each person counted once however many rows they have.
    let again = app.ok(&org.auth(), IMPORT, json!({ "c": csv, "d": false })).await["importAttendees"].clone();
    assert_eq!(
        (again["created"].as_i64(), again["existing"].as_i64(), again["registered"].as_i64()),
        (Some(0), Some(2), Some(0))
    );
}

#[tokio::test]
async fn an_organiser_imports_only_into_events_they_run() {
    let app = spawn_app().await;
    let mine = app.organizer("mine@example.org").await;
    let other = app.organizer("other@example.org").await;
    let (my_event, their_event) = (app.create_event(&mine, "Mine").await, app.create_event(&other, "Theirs").await);
    let csv = format!("a@example.org,A,,{my_event}\nb@example.org,B,,{their_event}\nc@example.org,C\n");

    let r = app.ok(&mine.auth(), IMPORT, json!({ "c": csv, "d": false })).await["importAttendees"].clone();
    assert_eq!(r["created"], 1, "{r}");
    let reasons: Vec<&str> = r["refused"].as_array().unwrap().iter().map(|x| x["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].contains("you do not run the event Theirs"), "{reasons:?}");
    assert!(reasons[1].contains("no event"), "{reasons:?}");

    // Naming someone else's event for the whole file is refused outright.
    let (status, body) = app.post_gql(&mine.auth(), IMPORT, json!({ "c": csv, "e": their_event, "d": true })).await;
    assert_eq!(code(&body).as_deref(), Some("FORBIDDEN"), "{status} {body}");
    // Attendees may not import at all.
    let attendee = app.sign_up("someone@example.org", "Someone").await;
    let (_, body) = app.post_gql(&attendee.auth(), IMPORT, json!({ "c": csv, "d": true })).await;
    assert_eq!(code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
}
