//! Scanner API keys: issued once, hashed, scoped, revocable.

use serde_json::json;

use crate::helpers::{Auth, spawn_app};

#[tokio::test]
async fn a_key_is_shown_once_and_authenticates_both_header_forms() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let org = app.organizer("org@example.org").await;
    let event = app.create_event(&org, "Live").await;
    app.activate(&org, &event).await;
    let (id, secret) = app.api_key(&admin, "north door", None).await;
    assert!(secret.starts_with("rck_") && secret.len() >= 4 + 32, "prefix and >=128 bits: {secret}");

    let list = app.ok(&admin.auth(), "{ apiKeys { id name prefix allEvents lastUsedAt revoked } }", json!({})).await;
    let listed = &list["apiKeys"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["allEvents"], true);
    assert!(listed["lastUsedAt"].is_null());
    assert!(secret.starts_with(listed["prefix"].as_str().unwrap()));
    assert!(!list.to_string().contains(&secret), "the list never shows the secret");
    let stored = app.state.store.api_keys().get(id.parse().unwrap()).await.unwrap().unwrap();
    assert_ne!(stored.key_hash, secret, "only a hash is stored");

    for auth in [Auth::ApiKey(secret.clone()), Auth::XApiKey(secret.clone())] {
        let data = app.ok(&auth, "{ activeEvents { id } }", json!({})).await;
        assert_eq!(data["activeEvents"][0]["id"], event.as_str());
    }
    let list = app
        .ok_eventually(&admin.auth(), "{ apiKeys { lastUsedAt } }", json!({}), |d| {
            d["apiKeys"][0]["lastUsedAt"].is_string()
        })
        .await;
    assert!(list["apiKeys"][0]["lastUsedAt"].is_string(), "lastUsedAt is recorded");
}

#[tokio::test]
async fn a_key_may_only_do_scanner_things() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (_, secret) = app.api_key(&admin, "scanner", None).await;
    let key = Auth::ApiKey(secret);
    assert_eq!(app.err(&key, "{ me { id } }", json!({})).await, "FORBIDDEN");
    assert_eq!(app.err(&key, "{ apiKeys { id } }", json!({})).await, "FORBIDDEN");
    assert_eq!(app.err(&key, "{ events { edges { node { id } } } }", json!({})).await, "FORBIDDEN");
    assert_eq!(app.err(&key, "mutation { createApiKey(name: \"more\") { secret } }", json!({})).await, "FORBIDDEN");
}

#[tokio::test]
async fn scopes_limit_what_a_key_sees() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let other = app.organizer("other@example.org").await;
    let mine = app.create_event(&org, "Mine").await;
    let also_mine = app.create_event(&org, "Also mine").await;
    let theirs = app.create_event(&other, "Theirs").await;
    for (who, e) in [(&org, &mine), (&org, &also_mine), (&other, &theirs)] {
        app.activate(who, e).await;
    }
    let ids = |v: serde_json::Value| -> Vec<String> {
        let mut ids: Vec<String> =
            v["activeEvents"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    let (_, scoped) = app.api_key(&org, "one event", Some(vec![&mine])).await;
    assert_eq!(
        ids(app.ok(&Auth::ApiKey(scoped.clone()), "{ activeEvents { id } }", json!({})).await),
        vec![mine.clone()]
    );
    let one = "query($id: ID!) { event(id: $id) { id } }";
    assert!(app.ok(&Auth::ApiKey(scoped), one, json!({ "id": theirs })).await["event"].is_null());

    let (_, all_mine) = app.api_key(&org, "all my events", None).await;
    let mut expected = vec![mine.clone(), also_mine.clone()];
    expected.sort();
    assert_eq!(ids(app.ok(&Auth::ApiKey(all_mine), "{ activeEvents { id } }", json!({})).await), expected);

    let q = "mutation($s: [ID!]) { createApiKey(name: \"x\", scopes: $s) { secret } }";
    assert_eq!(app.err(&org.auth(), q, json!({ "s": [theirs] })).await, "FORBIDDEN");
    assert_eq!(app.err(&org.auth(), q, json!({ "s": [uuid::Uuid::now_v7().to_string()] })).await, "NOT_FOUND");
    let att = app.sign_up("att@example.org", "Att").await;
    assert_eq!(app.err(&att.auth(), q, json!({ "s": null })).await, "FORBIDDEN");
}

#[tokio::test]
async fn revoked_and_unknown_keys_are_refused() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let other = app.organizer("other@example.org").await;
    let (id, secret) = app.api_key(&org, "door", None).await;
    let q = "{ activeEvents { id } }";
    app.ok(&Auth::ApiKey(secret.clone()), q, json!({})).await;

    let revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { revoked revokedAt } }";
    assert_eq!(app.err(&other.auth(), revoke, json!({ "id": id })).await, "FORBIDDEN");
    let r = app.ok(&org.auth(), revoke, json!({ "id": id })).await;
    assert_eq!(r["revokeApiKey"]["revoked"], true);

    let (status, body) = app.post_gql(&Auth::XApiKey(secret), q, json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(crate::helpers::code(&body).as_deref(), Some("UNAUTHENTICATED"));
    assert_eq!(body["errors"][0]["message"], "API key revoked");

    let unknown = format!("rck_{}", "0".repeat(64));
    let (status, body) = app.post_gql(&Auth::ApiKey(unknown), q, json!({})).await;
    assert_eq!((status, crate::helpers::code(&body).as_deref()), (401, Some("UNAUTHENTICATED")));
    let (status, _) = app.post_gql(&Auth::ApiKey("garbage".into()), q, json!({})).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn scanners_send_heartbeats_that_organisers_see() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let (_, secret) = app.api_key(&org, "door", None).await;
    let beat =
        "mutation($i: ScannerHeartbeatInput!) { scannerHeartbeat(input: $i) { version outboxDepth clockSkewMs } }";
    let ahead = chrono::Utc::now() + chrono::Duration::seconds(90);
    let vars =
        json!({ "i": { "version": "0.1.0", "outboxDepth": 42, "lastUploadAt": chrono::Utc::now(), "clock": ahead } });
    let r = app.ok(&Auth::ApiKey(secret.clone()), beat, vars.clone()).await;
    assert_eq!(r["scannerHeartbeat"]["outboxDepth"], 42);
    let skew = r["scannerHeartbeat"]["clockSkewMs"].as_i64().unwrap();
    assert!((85_000..=90_000).contains(&skew), "the scanner's clock is 90 s ahead: {skew}");

    let keys =
        app.ok(&org.auth(), "{ apiKeys { heartbeat { version outboxDepth at lastUploadAt } } }", json!({})).await;
    assert_eq!(keys["apiKeys"][0]["heartbeat"]["version"], "0.1.0");
    assert_eq!(keys["apiKeys"][0]["heartbeat"]["outboxDepth"], 42);

    assert_eq!(app.err(&org.auth(), beat, vars).await, "FORBIDDEN", "a person cannot send a heartbeat");
    let negative = json!({ "i": { "version": "0.1.0", "outboxDepth": -1, "clock": chrono::Utc::now() } });
    assert_eq!(app.err(&Auth::ApiKey(secret), beat, negative).await, "VALIDATION");
}

#[tokio::test]
async fn a_heartbeat_carries_the_scanners_identity_and_health() {
    let app = spawn_app().await;
    let org = app.organizer("fleet@example.org").await;
    let (_, secret) = app.api_key(&org, "door", None).await;
    let beat = "mutation($i: ScannerHeartbeatInput!) { scannerHeartbeat(input: $i) { scannerId } }";
    let id = "6f1c1c7e-0000-4000-8000-000000000001";
    let health = json!({ "advertsPerMinute": 600, "devicesPerMinute": 12, "bleRestarts": 1, "adapterState": "PoweredOn",
        "deadBatches": 2, "deadSightings": 40, "heldInMemory": 0, "droppedSightings": 0, "freeDiskMb": 900,
        "clockState": "CORRECTED" });
    let vars = json!({ "i": { "version": "0.2.0", "outboxDepth": 3, "clock": chrono::Utc::now(), "scannerId": id,
        "health": health } });
    let r = app.ok(&Auth::ApiKey(secret.clone()), beat, vars).await;
    assert_eq!(r["scannerHeartbeat"]["scannerId"], id);
    let keys = app
        .ok(
            &org.auth(),
            "{ apiKeys { heartbeat { scannerId health { advertsPerMinute devicesPerMinute bleRestarts adapterState
                deadBatches deadSightings heldInMemory droppedSightings freeDiskMb clockState } } } }",
            json!({}),
        )
        .await;
    assert_eq!(keys["apiKeys"][0]["heartbeat"]["scannerId"], id);
    assert_eq!(keys["apiKeys"][0]["heartbeat"]["health"], health);

    // An older scanner sends neither; a negative count is refused.
    let old = json!({ "i": { "version": "0.1.0", "outboxDepth": 0, "clock": chrono::Utc::now() } });
    app.ok(&Auth::ApiKey(secret.clone()), beat, old).await;
    let keys = app.ok(&org.auth(), "{ apiKeys { heartbeat { scannerId health { clockState } } } }", json!({})).await;
    assert_eq!(keys["apiKeys"][0]["heartbeat"], json!({ "scannerId": null, "health": null }));
    let bad = json!({ "i": { "version": "0.1.0", "outboxDepth": 0, "clock": chrono::Utc::now(),
        "health": { "advertsPerMinute": -1 } } });
    assert_eq!(app.err(&Auth::ApiKey(secret), beat, bad).await, "VALIDATION");
}
