//! Data on the embedded SurrealKV store survives `kill -9` and a restart;
//! with `ROLLCALL_TEST_DB=ws`, data on a SurrealDB server (on SurrealKV)
//! survives `kill -9` of both Rollcall and the database server.

use rollcall::config::DbArgs;
use serde_json::json;

use crate::helpers::{PASSWORD, ServerProcess, run_cli};
use crate::surreal::{self, SurrealServer};

#[tokio::test]
async fn data_survives_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut surreal_server = None;
    let db = if surreal::wanted() {
        let server = SurrealServer::on_disk(&dir.path().join("surreal")).await;
        let db = server.database("tests").await;
        surreal_server = Some(server);
        db
    } else {
        DbArgs { url: format!("surrealkv://{}", dir.path().join("data").display()), ..DbArgs::memory() }
    };

    // An admin made with the CLI, on the same database, before the server starts.
    let mut args: Vec<String> =
        ["admin", "create", "--email", "root@example.org", "--name", "Root", "--password-stdin"]
            .map(String::from)
            .into();
    args.extend(surreal::cli_args(&db));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = run_cli(&args, &format!("{PASSWORD}\n"));
    assert!(ok, "{err}");

    let server = ServerProcess::start_on(&db).await;
    let login = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }";
    let admin = server.ok(None, login, json!({ "e": "root@example.org", "p": PASSWORD })).await["logIn"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin = format!("Bearer {admin}");
    let event = server
        .ok(Some(&admin), "mutation { createEvent(input: { name: \"Durable\", startsAt: \"2030-01-01T09:00:00Z\", endsAt: \"2030-01-01T17:00:00Z\" }) { id } }", json!({}))
        .await["createEvent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.ok(Some(&admin), "mutation($id: ID!) { activateEvent(id: $id) { id } }", json!({ "id": event })).await;
    let att = server
        .ok(None, "mutation { signUp(email: \"ada@example.org\", name: \"Ada\", password: \"correct horse battery\") { token } }", json!({}))
        .await["signUp"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let att = format!("Bearer {att}");
    server.ok(Some(&att), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": event })).await;
    let key = server.ok(Some(&admin), "mutation { createApiKey(name: \"door\") { secret } }", json!({})).await["createApiKey"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    // The last write was acknowledged; now pull the plug (on the database server too).
    server.kill9();
    if let Some(surreal_server) = &mut surreal_server {
        surreal_server.kill();
        surreal_server.restart().await;
    }

    let server = ServerProcess::start_on(&db).await;
    // Tokens issued before the crash still verify: the generated JWT secret persisted too.
    let me = server
        .ok(Some(&att), "{ me { email registrations { edges { node { status event { name state } } } } } }", json!({}))
        .await;
    assert_eq!(me["me"]["email"], "ada@example.org");
    let reg = &me["me"]["registrations"]["edges"][0]["node"];
    assert_eq!(reg["status"], "REGISTERED");
    assert_eq!(reg["event"], json!({ "name": "Durable", "state": "ACTIVE" }));
    let active = server.ok(Some(&format!("ApiKey {key}")), "{ activeEvents { id } }", json!({})).await;
    assert_eq!(active["activeEvents"][0]["id"], event.as_str(), "the API key survived");
    let status = server.terminate();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
}
