//! Shared rendering over real WebSockets: subscriptions that would receive
//! the same bytes form one group, which renders each result once for all
//! its members (whatever their protocol or layout, and once resumed ones
//! have caught up); subscribers who see differently do not share.

use std::time::Duration;

use serde_json::{Value, json};

use super::{CHECK_INS, STATS, check_in, names, subscribers, take, venue};
use crate::helpers::spawn_app;
use crate::websocket::WsClient;

#[tokio::test]
async fn a_hundred_identical_subscriptions_cost_one_render_per_check_in() {
    let app = spawn_app().await;
    let v = venue(&app, 3).await;
    let mut clients = Vec::new();
    for i in 0..100 {
        // Both protocols, and layouts that differ only in white space, share.
        let (protocol, query) = match i % 3 {
            0 => ("graphql-transport-ws", CHECK_INS.to_owned()),
            1 => ("graphql-ws", CHECK_INS.to_owned()),
            _ => ("graphql-transport-ws", CHECK_INS.split_whitespace().collect::<Vec<_>>().join("\n  ")),
        };
        let auth = json!({ "authorization": format!("Bearer {}", v.org.token) });
        let mut c = WsClient::signed_in(&app, protocol, auth).await;
        c.subscribe(&format!("s{i}"), &query, json!({ "e": v.event })).await;
        clients.push(c);
    }
    subscribers(&app, &v, 100).await;
    let groups = app.state.live.groups();
    assert_eq!(groups.len(), 1, "one group for one subscription");
    let (renders, deliveries) = (groups.renders(), groups.deliveries());
    check_in(&app, &v, 0..3).await;
    let mut first = None;
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.len() < 3 {
            let msg = c.recv().await;
            assert_eq!(msg["id"], format!("s{i}"), "each gets its own id spliced in: {msg}");
            assert_eq!(msg["type"], if c.protocol == "graphql-ws" { "data" } else { "next" });
            got.push(msg["payload"].clone());
        }
        // Every member gets the very same result.
        assert_eq!(first.get_or_insert_with(|| got.clone()), &got);
    }
    assert_eq!(groups.renders() - renders, 3, "one render per check-in, not one per subscriber");
    assert_eq!(groups.deliveries() - deliveries, 300);
    // The metrics say so too.
    let metrics = app.http.get(format!("http://{}/metrics", app.addr)).send().await.unwrap().text().await.unwrap();
    for name in
        ["rollcall_live_groups", "rollcall_live_renders_total", "rollcall_live_deliveries_total", "rollcall_ws_sockets"]
    {
        assert!(metrics.contains(name), "{name} in /metrics");
    }
    // Members leave; the last one ends the group.
    drop(clients);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !groups.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the group outlived its members");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Twenty door screens watching one event's counters share each render:
/// a change of the counts is rendered once for all of them, not once each.
#[tokio::test]
async fn identical_stats_subscriptions_share_each_render() {
    let app = spawn_app().await;
    let v = venue(&app, 3).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = WsClient::bearer(&app, &v.org.token).await;
        c.subscribe("s", STATS, json!({ "e": v.event })).await;
        assert_eq!(c.recv().await["payload"]["data"]["eventStats"]["checkedIn"], 0, "the counts now, first");
        clients.push(c);
    }
    let groups = app.state.live.groups();
    assert_eq!(groups.len(), 1, "one group for one subscription");
    let (renders, deliveries) = (groups.renders(), groups.deliveries());
    check_in(&app, &v, [0]).await;
    let mut frames = 0;
    for c in &mut clients {
        loop {
            frames += 1;
            if c.recv().await["payload"]["data"]["eventStats"]["checkedIn"] == 1 {
                break;
            }
        }
    }
    let rendered = groups.renders() - renders;
    assert!((1..=3).contains(&rendered), "a change of the counts rendered once for all twenty: {rendered} renders");
    assert_eq!(groups.deliveries() - deliveries, frames, "every frame delivered came from those renders");
}

/// Dashboards that resume from a cursor (a reconnect, an instance restart)
/// each replay on their own, then hand over to the group of the live
/// subscription: once they have caught up, a check-in costs one render for
/// all of them, not one each.
#[tokio::test]
async fn subscriptions_resuming_from_a_cursor_share_one_render_once_caught_up() {
    let app = spawn_app().await;
    let v = venue(&app, 6).await;
    for i in 0..4 {
        check_in(&app, &v, [i]).await;
    }
    let auth = json!({ "authorization": format!("Bearer {}", v.org.token) });
    let mut reader = WsClient::signed_in(&app, "graphql-transport-ws", auth.clone()).await;
    reader.subscribe("r", CHECK_INS, json!({ "e": v.event, "after": "" })).await;
    let cursors: Vec<String> =
        take(&mut reader, "r", 4).await.iter().map(|c| c["cursor"].as_str().unwrap().to_owned()).collect();
    drop(reader);
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = WsClient::signed_in(&app, "graphql-transport-ws", auth.clone()).await;
        let after = if i % 2 == 0 { "" } else { cursors[1].as_str() };
        c.subscribe(&format!("s{i}"), CHECK_INS, json!({ "e": v.event, "after": after })).await;
        let replayed = names(&take(&mut c, &format!("s{i}"), if i % 2 == 0 { 4 } else { 2 }).await);
        let all = ["Person 0000", "Person 0001", "Person 0002", "Person 0003"];
        assert_eq!(replayed, all[if i % 2 == 0 { 0 } else { 2 }..], "the replay from its own cursor");
        clients.push(c);
    }
    // Twenty replays and the one group behind them follow the event.
    subscribers(&app, &v, 21).await;
    let groups = app.state.live.groups();
    assert_eq!(groups.len(), 1, "one group, for the live subscription");
    // The next check-in reaches each once; the replays hand over meanwhile.
    check_in(&app, &v, [4]).await;
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(names(&take(c, &format!("s{i}"), 1).await), ["Person 0004"]);
    }
    let (renders, deliveries) = (groups.renders(), groups.deliveries());
    check_in(&app, &v, [5]).await;
    for (i, c) in clients.iter_mut().enumerate() {
        let got = take(c, &format!("s{i}"), 1).await;
        assert_eq!(names(&got), ["Person 0005"]);
        assert!(got[0]["cursor"].as_str().unwrap() > cursors[3].as_str());
    }
    assert_eq!(groups.renders() - renders, 1, "one render for all twenty");
    assert_eq!(groups.deliveries() - deliveries, 20, "each delivered from the group");
    // Nothing twice, nothing more.
    for c in &mut clients {
        assert!(c.recv_within(Duration::from_millis(200)).await.is_none());
    }
}

#[tokio::test]
async fn subscribers_who_see_differently_do_not_share_a_render() {
    let app = spawn_app().await;
    let v = venue(&app, 1).await;
    let admin = app.admin().await;
    let (_, key) = app.api_key(&v.org, "door", Some(vec![&v.event])).await;
    const EMAILS: &str = "subscription($e: ID!) { checkIns(eventId: $e) { user { name email } } }";
    let mut org = WsClient::bearer(&app, &v.org.token).await;
    let mut root = WsClient::bearer(&app, &admin.token).await;
    let mut door = WsClient::signed_in(&app, "graphql-transport-ws", json!({ "apiKey": key })).await;
    for c in [&mut org, &mut root, &mut door] {
        c.subscribe("s", EMAILS, json!({ "e": v.event })).await;
    }
    subscribers(&app, &v, 3).await;
    assert_eq!(app.state.live.groups().len(), 3);
    check_in(&app, &v, [0]).await;
    let email = |m: Value| m["payload"]["data"]["checkIns"]["user"]["email"].clone();
    assert_eq!(email(org.recv().await), "p0@example.org");
    assert_eq!(email(root.recv().await), "p0@example.org");
    assert_eq!(email(door.recv().await), Value::Null, "a scanner does not see emails");
}
