//! Soak: many live subscribers for a long time, with check-ins flowing and
//! sockets coming and going, to show that the server's memory stays flat and
//! that every socket it counted is gone at the end.
//!
//! ```text
//! cargo run --release --example soak -- --subscribers 1000 --minutes 30 --churn 10 --rate 5
//! ```
//!
//! The server runs as a child process (this program in `--serve` mode) on
//! embedded SurrealKV. `--subscribers` sockets subscribe to one event's
//! `checkIns`; a batch a second makes `--rate` new check-ins; every minute
//! `--churn` percent of the sockets close and new ones take their place.
//! With `--resume`, each newcomer resumes after the last cursor of the one it
//! replaces (`checkIns(after: $a)`), as a reconnecting dashboard does: it
//! replays, then hands over to the live group (`http::ws::handover`).
//! Each newcomer pings the server after subscribing and counts as present
//! once the pong comes back (the server handles a socket's messages in
//! order, so its subscription is in place by then), and the load waits for
//! every newcomer: so `delivered` is exactly check-ins times subscribers when
//! nothing is lost.
//! Every minute a line gives the server's RSS (from `/proc`) and its socket
//! gauge. After the last minute every client closes, and the socket gauge is
//! read until it is 0 (or 30 s pass).
//!
//! The last line is `soak: minutes <m>, subscribers <n>, check-ins <c>,
//! delivered <d>, rss start <kb> KB, peak <kb> KB, end <kb> KB, sockets at end
//! <s>; anonymous start <kb> KB, end <kb> KB; file-backed start <kb> KB, end
//! <kb> KB; server cpu <s> s`. Anonymous memory is the heap and stacks; file-backed is mostly
//! the embedded store's files mapped into memory, which grows with the data
//! and which the kernel takes back under pressure.
//! The start is taken once every subscriber is connected.

#[path = "support/child.rs"]
mod child;
#[path = "support/seed.rs"]
mod seed;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use rollcall::config::{DbArgs, ServeArgs};
use rollcall::domain::Role;
use rollcall::startup::Application;
use serde_json::json;
use tokio::sync::{oneshot, watch};

use child::Server;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The server child runs in this binary: the same allocator as `rollcall`'s.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: rollcall::memory::Allocator = rollcall::memory::Allocator;

/// Soak: live subscribers for a long time, with check-ins flowing and
/// sockets churning; prints the server's memory every minute and its
/// socket gauge at the end (see the top of examples/soak.rs).
#[derive(Parser, Debug)]
struct Args {
    /// Live subscribers at any time.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// How long, in minutes.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Percent of the sockets replaced every minute.
    #[arg(long, default_value_t = 10)]
    churn: usize,
    /// New check-ins per second.
    #[arg(long, default_value_t = 5)]
    rate: usize,
    /// Check-ins each event's live ring keeps for subscribers that fall
    /// behind (the server's `--live-buffer`). Once a ring is full, it stops
    /// growing: a smaller one shows the flat part of the curve sooner.
    #[arg(long, default_value_t = rollcall::live::DEFAULT_BUFFER)]
    live_buffer: usize,
    /// Newcomers resume after the last cursor of the socket they replace
    /// (`checkIns(after: $a)`), as dashboards reconnecting with their
    /// cursors do; by default they subscribe live.
    #[arg(long)]
    resume: bool,
    /// The embedded store's write buffer, in MiB (the server's
    /// `--db-memtable-mb`). The server's memory rises by up to this much
    /// between two flushes of it to disk.
    #[arg(long, default_value_t = rollcall::store::EmbeddedMemory::DEFAULT_MEMTABLE_MIB)]
    db_memtable_mb: u64,
    /// The embedded store's block cache, in MiB (the server's
    /// `--db-cache-mb`): it fills with what is read back from disk.
    #[arg(long, default_value_t = rollcall::store::EmbeddedMemory::DEFAULT_BLOCK_CACHE_MIB)]
    db_cache_mb: u64,
    /// Internal: run as the server child, seeding this many attendees.
    #[arg(long, hide = true)]
    serve_people: Option<usize>,
}

fn ble(i: usize) -> String {
    format!("0000501a-0000-4000-8000-{i:012x}")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.serve_people {
        Some(people) => rt.block_on(serve(people, &args)),
        None => rt.block_on(soak(args)),
    }
}

/// Server mode: seed, print `READY <port> <token> <event> <key>`, serve until stdin closes.
async fn serve(people: usize, args: &Args) -> anyhow::Result<()> {
    rollcall::telemetry::init_logging(rollcall::config::LogFormat::Text, "warn");
    let dir = tempfile::tempdir()?;
    let db_url = format!("surrealkv://{}", dir.path().join("server").display());
    let db =
        DbArgs { url: db_url, db_memtable_mb: args.db_memtable_mb, db_cache_mb: args.db_cache_mb, ..DbArgs::memory() };
    let mut serve = ServeArgs::for_tests(db);
    // A thousand sockets as one organiser from one address.
    serve.live = serve.live.uncapped();
    serve.live.buffer = args.live_buffer;
    let app = Application::build(serve).await?;
    let state = app.state().clone();
    let store = state.store.clone();
    let (org, event) = seed::event_with_people(&store, "soak@example.org", "Soak", people, ble).await?;
    let secret = rollcall::auth::ApiKeySecret::generate();
    seed::scanner_key(&store, "soak door".into(), &secret).await?;
    let (token, _) = state.jwt.issue(org.id, Role::Organizer, org.token_version)?;
    println!("READY {} {token} {} {}", app.port(), event.id, secret.expose());
    drop((state, store));
    app.run_until(child::stdin_closed()).await?;
    Ok(())
}

async fn sockets_gauge(http: &reqwest::Client, port: u16) -> f64 {
    let text = match http.get(format!("http://127.0.0.1:{port}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return -1.0,
    };
    text.lines().find_map(|l| l.strip_prefix("rollcall_ws_sockets ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// One subscriber: subscribes (after `after`, if given), says so on
/// `subscribed` once the server has answered the ping sent after the
/// subscription, counts what it receives, leaves when told; returns the
/// last cursor it received (or `after`), for a successor that resumes.
async fn subscriber(
    port: u16,
    token: String,
    event: String,
    delivered: Arc<AtomicU64>,
    (after, subscribed): (Option<String>, oneshot::Sender<()>),
    mut leave: watch::Receiver<bool>,
) -> Option<String> {
    let mut last = after;
    let mut subscribed = Some(subscribed);
    let mut req = format!("ws://127.0.0.1:{port}/graphql").into_client_request().expect("request");
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().expect("header"));
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(req).await else { return last };
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    let sub = json!({ "type": "subscribe", "id": "s", "payload": {
        "query": "subscription($e: ID!, $a: String) { checkIns(eventId: $e, after: $a) { cursor user { name } } }",
        "variables": { "e": event, "a": last } } });
    for msg in [init.to_string(), sub.to_string(), r#"{"type":"ping"}"#.to_owned()] {
        if ws.send(Message::text(msg)).await.is_err() {
            return last;
        }
    }
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if t.contains("\"next\"") {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        // `"cursor":"<digits>"`, the only cursor in the message.
                        if let Some(c) = t.split("\"cursor\":\"").nth(1).and_then(|r| r.split('"').next()) {
                            last = Some(c.to_owned());
                        }
                    } else if t.contains("\"pong\"") {
                        if let Some(s) = subscribed.take() {
                            let _ = s.send(());
                        }
                    } else if t.contains("\"ping\"") {
                        let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
                    }
                }
                Some(Ok(_)) => {}
                _ => return last,
            },
            _ = leave.changed() => {
                let _ = ws.close(None).await;
                return last;
            }
        }
    }
}

/// Waits until each newcomer has subscribed (at most a minute in all); says
/// how many did not, since the delivered count then falls short by design.
async fn all_subscribed(newcomers: Vec<oneshot::Receiver<()>>) {
    let n = newcomers.len();
    match tokio::time::timeout(Duration::from_secs(60), futures_util::future::join_all(newcomers)).await {
        Ok(answers) => {
            let failed = answers.iter().filter(|a| a.is_err()).count();
            if failed > 0 {
                println!("{failed} of {n} newcomers could not subscribe");
            }
        }
        Err(_) => println!("not all of {n} newcomers subscribed within a minute"),
    }
}

async fn soak(args: Args) -> anyhow::Result<()> {
    let people = args.rate * 60 * args.minutes as usize + 1000;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--serve-people", &people.to_string(), "--live-buffer", &args.live_buffer.to_string()]).args([
        "--db-memtable-mb",
        &args.db_memtable_mb.to_string(),
        "--db-cache-mb",
        &args.db_cache_mb.to_string(),
    ]);
    let server = Server::start(cmd)?;
    let (port, token, event, key) = (server.port, server.token.clone(), server.event.clone(), server.key.clone());
    let http = reqwest::Client::new();
    let delivered = Arc::new(AtomicU64::new(0));

    // Each subscriber has its own "leave" switch, so that a tenth can be replaced.
    type Slot = (watch::Sender<bool>, tokio::task::JoinHandle<Option<String>>);
    let mut slots: Vec<Slot> = Vec::new();
    let spawn = |delivered: &Arc<AtomicU64>, newcomers: &mut Vec<oneshot::Receiver<()>>, after: Option<String>| {
        let (tx, rx) = watch::channel(false);
        let (subscribed, is_subscribed) = oneshot::channel();
        newcomers.push(is_subscribed);
        let start = (after, subscribed);
        let task = tokio::spawn(subscriber(port, token.clone(), event.clone(), delivered.clone(), start, rx));
        (tx, task)
    };
    let mut newcomers = Vec::new();
    for _ in 0..args.subscribers {
        slots.push(spawn(&delivered, &mut newcomers, None));
    }
    all_subscribed(newcomers).await;
    let connected = Instant::now();
    while sockets_gauge(&http, port).await < args.subscribers as f64 && connected.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_start = server.rss();
    let mut rss_peak = rss_start.total;
    println!("connected {} subscribers; rss {rss_start}", args.subscribers);

    let mut next_person = 0usize;
    let mut check_ins = 0u64;
    let submit = "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) { checkIns } }";
    let begin = Instant::now();
    for minute in 1..=args.minutes {
        for _ in 0..60 {
            let second = Instant::now();
            let sightings: Vec<_> = (next_person..next_person + args.rate)
                .map(|i| json!({ "bleUuid": ble(i), "seenAt": Utc::now(), "rssi": -60 }))
                .collect();
            next_person += args.rate;
            let body = json!({ "query": submit, "variables": { "b": { "batchId": uuid::Uuid::new_v4(), "sightings": sightings } } });
            if let Ok(r) = http
                .post(format!("http://127.0.0.1:{port}/graphql"))
                .header("authorization", format!("ApiKey {key}"))
                .json(&body)
                .send()
                .await
                && let Ok(v) = r.json::<serde_json::Value>().await
            {
                check_ins += v["data"]["submitSightings"]["checkIns"].as_u64().unwrap_or(0);
            }
            rss_peak = rss_peak.max(server.rss().total);
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(second.elapsed())).await;
        }
        // Churn: the oldest tenth leave, new ones arrive.
        let replace = args.subscribers * args.churn / 100;
        let mut newcomers = Vec::new();
        for _ in 0..replace {
            let (tx, task) = slots.remove(0);
            let _ = tx.send(true);
            let last = task.await.ok().flatten();
            slots.push(spawn(&delivered, &mut newcomers, last.filter(|_| args.resume)));
        }
        all_subscribed(newcomers).await;
        println!(
            "minute {minute}: rss {}, sockets {}, check-ins {check_ins}, delivered {} ({:.0?} in)",
            server.rss(),
            sockets_gauge(&http, port).await,
            delivered.load(Ordering::Relaxed),
            begin.elapsed()
        );
    }
    let rss_end = server.rss();
    let cpu = server.cpu_seconds();
    for (tx, task) in slots {
        let _ = tx.send(true);
        let _ = task.await;
    }
    let closing = Instant::now();
    let mut sockets = sockets_gauge(&http, port).await;
    while sockets > 0.0 && closing.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sockets = sockets_gauge(&http, port).await;
    }
    // Closes the child's stdin and waits for it to stop.
    drop(server);
    println!(
        "soak: minutes {}, subscribers {}, check-ins {check_ins}, delivered {}, rss start {} KB, peak {rss_peak} KB, end {} KB, sockets at end {sockets}; anonymous start {} KB, end {} KB; file-backed start {} KB, end {} KB; server cpu {cpu:.1} s",
        args.minutes,
        args.subscribers,
        delivered.load(Ordering::Relaxed),
        rss_start.total,
        rss_end.total,
        rss_start.anon,
        rss_end.anon,
        rss_start.file,
        rss_end.file,
    );
    Ok(())
}
