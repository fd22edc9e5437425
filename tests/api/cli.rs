//! The operator CLI: schema, admin, apikey and import, run as a user would.

use std::fmt::Write as _;

use serde_json::json;

use crate::helpers::{PASSWORD, ServerProcess, run_cli};

#[test]
fn schema_prints_the_sdl() {
    let (ok, out, _) = run_cli(&["schema"], "");
    assert!(ok);
    assert_eq!(out, rollcall::graphql::sdl());
}

#[test]
fn admin_create_refuses_weak_passwords_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("surrealkv://{}", dir.path().join("data").display());
    let args = ["admin", "create", "--email", "a@example.org", "--name", "A", "--password-stdin", "--db", &db];
    let (ok, _, err) = run_cli(&args, "short\n");
    assert!(!ok && err.contains("too weak"), "{err}");
    let (ok, out, err) = run_cli(&args, &format!("{PASSWORD}\n"));
    assert!(ok, "{err}");
    assert!(out.contains("created ADMIN"), "{out}");
    let (ok, _, err) = run_cli(&args, &format!("{PASSWORD}\n"));
    assert!(!ok && err.contains("already exists"), "{err}");
}

#[test]
fn apikey_create_list_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("surrealkv://{}", dir.path().join("data").display());
    let (ok, secret, err) = run_cli(&["apikey", "create", "--name", "north door", "--db", &db], "");
    assert!(ok, "{err}");
    let secret = secret.trim();
    assert!(secret.starts_with("rck_"), "{secret}");
    assert!(err.contains("shown only now"), "{err}");
    let created = err.lines().find(|l| l.starts_with("created API key")).expect("creation reported");
    let id = created.split_whitespace().nth(3).unwrap().to_owned();

    let (ok, list, _) = run_cli(&["apikey", "list", "--db", &db], "");
    assert!(ok && list.contains("north door") && list.contains("active"), "{list}");
    assert!(!list.contains(secret), "the secret is never listed");

    let (ok, out, err) = run_cli(&["apikey", "revoke", &id, "--db", &db], "");
    assert!(ok, "{err}");
    assert!(out.contains("revoked"), "{out}");
    let (_, list, _) = run_cli(&["apikey", "list", "--db", &db], "");
    assert!(list.contains("revoked"), "{list}");
    let (ok, _, err) = run_cli(&["apikey", "revoke", "not-an-id", "--db", &db], "");
    assert!(!ok && err.contains("not an API key id"), "{err}");
}

#[tokio::test]
async fn import_users_is_idempotent_reports_bad_rows_and_registers() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("surrealkv://{}", dir.path().join("data").display());
    let (ok, _, err) = run_cli(
        &["admin", "create", "--email", "root@example.org", "--name", "Root", "--password-stdin", "--db", &db],
        &format!("{PASSWORD}\n"),
    );
    assert!(ok, "{err}");

    // An event to register people for, made through the API; then a clean stop.
    let server = ServerProcess::start(&db).await;
    let login = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }";
    let token = server.ok(None, login, json!({ "e": "root@example.org", "p": PASSWORD })).await["logIn"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {token}");
    let event = server
        .ok(Some(&bearer), "mutation { createEvent(input: { name: \"Import\", startsAt: \"2030-01-01T09:00:00Z\", endsAt: \"2030-01-01T17:00:00Z\" }) { id } }", json!({}))
        .await["createEvent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = server
        .ok(Some(&bearer), "mutation { createEvent(input: { name: \"Import II\", startsAt: \"2030-01-02T09:00:00Z\", endsAt: \"2030-01-02T17:00:00Z\" }) { id } }", json!({}))
        .await["createEvent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(server.terminate().success());

    let mut csv = String::from("email,name,bleUuid,eventId\n");
    for i in 0..2500 {
        writeln!(csv, "user{i}@example.org,User {i},,{event}").unwrap();
    }
    csv.push_str("not-an-email,Bad,,\n"); // line 2502
    csv.push_str("bad-uuid@example.org,Bad,xyz,\n"); // line 2503
    csv.push_str("user0@example.org,Twice,,\n"); // line 2504
    csv.push_str("badge@example.org,\"Badge, Holder\",6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a,\n"); // line 2505
    // One person, one row per event: a second event is fine, the same event again is not.
    writeln!(csv, "user1@example.org,User 1,,{second}").unwrap(); // line 2506
    writeln!(csv, "user1@example.org,User 1,,{event}").unwrap(); // line 2507
    let file = dir.path().join("people.csv");
    std::fs::write(&file, &csv).unwrap();
    let path = file.to_str().unwrap();

    let (ok, out, err) = run_cli(&["import", "users", path, "--db", &db], "");
    assert!(!ok, "bad rows make the exit status non-zero");
    assert!(out.contains("2501 created"), "{out}");
    assert!(out.contains("2501 registrations added"), "{out}");
    assert!(out.contains("4 rows refused"), "{out}");
    for line in [":2502:", ":2503:", ":2504:", ":2507:"] {
        assert!(err.contains(line), "line {line} reported: {err}");
    }

    // Again: nothing new, and the same bad rows.
    let (_, out, _) = run_cli(&["import", "users", path, "--db", &db], "");
    assert!(out.contains("0 created, 2501 already existed, 0 registrations added"), "{out}");

    let server = ServerProcess::start(&db).await;
    let q = "query($id: ID!) { event(id: $id) { registeredCount } }";
    assert_eq!(server.ok(Some(&bearer), q, json!({ "id": event })).await["event"]["registeredCount"], 2500);
    assert_eq!(server.ok(Some(&bearer), q, json!({ "id": second })).await["event"]["registeredCount"], 1);
    let q = "query($b: String!) { userByBleUuid(bleUuid: $b) { name email } }";
    let badge = server.ok(Some(&bearer), q, json!({ "b": "6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a" })).await;
    assert_eq!(badge["userByBleUuid"], json!({ "name": "Badge, Holder", "email": "badge@example.org" }));
}
