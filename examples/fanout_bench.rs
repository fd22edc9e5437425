//! Live fan-out: how fast a check-in reaches many WebSocket subscribers.
//!
//! ```text
//! cargo run --release --example fanout_bench -- --subscribers 1000 --rate 100 --seconds 20
//! ```
//!
//! 1. Starts the real server as a child process (this same binary, in
//!    server mode) on embedded SurrealKV in a temporary directory, so the
//!    server's memory can be read from `/proc/<pid>/status` apart from the
//!    clients'. It seeds an organiser, an active event, a scanner key and
//!    enough attendees for every check-in to be new.
//! 2. Opens `--subscribers` real WebSockets (graphql-transport-ws), each
//!    subscribed to `checkIns` of the event, and measures the server's RSS
//!    before and after them (idle cost per subscriber).
//! 3. For `--seconds`, submits batches through `submitSightings` over HTTP
//!    that create `--rate` new check-ins a second (ten batches a second), and
//!    records, for every (check-in, subscriber) pair, the time from sending
//!    the batch to the subscriber receiving the check-in.
//!
//! 4. Prints what the server's `/metrics` say about it: groups of identical
//!    subscriptions, renders (one per check-in per group) and deliveries.
//!
//! `--seconds 0` measures idle memory only. `--no-subscribe` opens the
//! sockets and completes the handshake without subscribing, to tell the
//! socket's share of the memory from the subscription's. Subscribers all
//! send the same subscription, so they form one group; `--distinct` gives
//! each its own alias, so nothing is shared (the cost without groups).
//!
//! The last line is `fanout: subscribers <S>, delivered <D>/<E>, p50 <ms> ms,
//! p99 <ms> ms, max <ms> ms, rss per subscriber <KB> KB`.

#[path = "support/child.rs"]
mod child;
#[path = "support/seed.rs"]
mod seed;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::Utc;
use clap::{Parser, ValueEnum as _};
use futures_util::{SinkExt, StreamExt};
use rollcall::config::{DbArgs, ServeArgs};
use rollcall::domain::Role;
use rollcall::startup::Application;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use child::Server;

/// The server child runs in this binary: the same allocator as `rollcall`'s.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: rollcall::memory::Allocator = rollcall::memory::Allocator;

/// Fan-out benchmark: WebSocket subscribers to one event's check-ins while
/// check-ins arrive at a steady rate; prints delivery latency and the
/// server's memory per subscriber (see the top of examples/fanout_bench.rs).
#[derive(Parser, Debug)]
struct Args {
    /// WebSocket subscribers to the one event.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// New check-ins per second.
    #[arg(long, default_value_t = 100)]
    rate: usize,
    /// How long to submit for, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Open the sockets, but do not subscribe.
    #[arg(long)]
    no_subscribe: bool,
    /// Give each subscriber a distinct document (no shared rendering).
    #[arg(long)]
    distinct: bool,
    /// Print the server's address, a token and the event, then wait this
    /// long before the load, for other clients to subscribe (see
    /// `examples/graphql-ws-client`).
    #[arg(long, default_value_t = 0)]
    pause_secs: u64,
    /// The database: by default a fresh SurrealKV store in a temporary
    /// directory; `--db ws://HOST:PORT` (with `--db-user`, `--db-password`,
    /// and a fresh `--db-database`) puts the server on a SurrealDB server.
    #[command(flatten)]
    db: DbArgs,
    /// Rollcall instances over the database (more than one needs a `ws://`
    /// `--db`): batches go to the first, subscribers connect to the others
    /// in turn, so every delivery crosses instances.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Each server reads the change feed on its poll alone, never on a
    /// hint, as for check-ins written through another SurrealDB node.
    #[arg(long)]
    no_hints: bool,
    /// Each server's change-feed poll interval (`ROLLCALL_LIVE_POLL_MS`).
    #[arg(long)]
    live_poll_ms: Option<u64>,
    /// Internal: run as an extra server child, seeding nothing.
    #[arg(long, hide = true)]
    join: bool,
    /// Internal: run as the server child, seeding this many attendees.
    #[arg(long, hide = true)]
    serve_people: Option<usize>,
}

const BATCHES_PER_SECOND: usize = 10;

fn ble(i: usize) -> String {
    format!("0000fa00-0000-4000-8000-{i:012x}")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.serve_people {
        Some(people) => rt.block_on(serve(people, &args)),
        None => rt.block_on(bench(args)),
    }
}

/// Server mode: seed, print `READY <port> <token> <event> <key>`, serve until stdin closes.
async fn serve(people: usize, args: &Args) -> anyhow::Result<()> {
    let (mut db, join) = (args.db.clone(), args.join);
    rollcall::telemetry::init_logging(rollcall::config::LogFormat::Text, "warn");
    let dir = tempfile::tempdir()?;
    if db.url == rollcall::store::DEFAULT_DB_URL {
        db.url = format!("surrealkv://{}", dir.path().join("server").display());
    }
    let mut serve = ServeArgs::for_tests(db);
    // Thousands of sockets as one organiser from one address.
    serve.live = serve.live.uncapped();
    serve.live.no_hints = args.no_hints;
    if let Some(ms) = args.live_poll_ms {
        serve.live.poll_ms = ms;
    }
    let app = Application::build(serve).await?;
    if join {
        println!("READY {} - - -", app.port());
        return app.run_until(child::stdin_closed()).await.map_err(Into::into);
    }
    let state = app.state().clone();
    let store = state.store.clone();
    let (org, event) = seed::event_with_people(&store, "bench@example.org", "Arena", people, ble).await?;
    let secret = rollcall::auth::ApiKeySecret::generate();
    seed::scanner_key(&store, "bench door".into(), &secret).await?;
    let (token, _) = state.jwt.issue(org.id, Role::Organizer, org.token_version)?;
    let port = app.port();
    println!("READY {port} {token} {} {}", event.id, secret.expose());
    // Only the server may hold the store now, or it cannot close it.
    drop((state, store));
    app.run_until(child::stdin_closed()).await?;
    Ok(())
}

/// Starts a server child for `people` attendees (a joining instance
/// seeds nothing) over `args`' database.
fn start(people: usize, args: &Args, join: bool) -> anyhow::Result<Server> {
    let db = &args.db;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(args.no_hints.then_some("--no-hints"));
    if let Some(ms) = args.live_poll_ms {
        cmd.args(["--live-poll-ms", &ms.to_string()]);
    }
    cmd.args(["--serve-people", &people.to_string(), "--db", &db.url]).args(join.then_some("--join")).args([
        "--db-namespace",
        &db.db_namespace,
        "--db-database",
        &db.db_database,
    ]);
    if let (Some(user), Some(password)) = (&db.db_user, &db.db_password) {
        cmd.args(["--db-user", user]).env("ROLLCALL_DB_PASSWORD", password);
    }
    let db_auth = db.db_auth.to_possible_value().context("auth level")?;
    cmd.args(["--db-auth", db_auth.get_name()]);
    Server::start(cmd)
}

/// A server child's resident memory, in KB; an error if `/proc` could not be read.
fn rss_kb(server: &Server) -> anyhow::Result<u64> {
    Some(server.rss().total).filter(|kb| *kb > 0).context("VmRSS in /proc")
}

/// The server's `/metrics` samples whose names start with `rollcall_live_` or `rollcall_ws_`.
async fn live_metrics(http: &reqwest::Client, port: u16) -> anyhow::Result<String> {
    let text = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await?.text().await?;
    let samples: Vec<&str> =
        text.lines().filter(|l| l.starts_with("rollcall_live_") || l.starts_with("rollcall_ws_")).collect();
    Ok(samples.join(", "))
}

/// What one subscriber does.
#[derive(Clone)]
struct Plan {
    subscribe: bool,
    distinct: Option<usize>,
}

/// Nanoseconds since the bench began.
fn since(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// The person index in a check-in message (`"name":"P<i>"`), without a full parse.
fn person_of(text: &str) -> Option<usize> {
    let at = text.find("\"name\":\"P")? + 9;
    let digits: &str = &text[at..at + text[at..].find('"')?];
    digits.parse().ok()
}

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    port: u16,
    token: String,
    event: String,
    origin: Instant,
    sent: Arc<Vec<AtomicU64>>,
    answered_at: Arc<Vec<AtomicU64>>,
    ready: Arc<AtomicU64>,
    warmed: Arc<AtomicU64>,
    plan: Plan,
) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
    let mut req = format!("ws://127.0.0.1:{port}/graphql").into_client_request()?;
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
    // Small buffers: ten thousand clients at the defaults take gigabytes.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false).await?;
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    ws.send(Message::text(init.to_string())).await?;
    if plan.subscribe {
        // A distinct alias makes a distinct document, so a group of one.
        let query = match plan.distinct {
            Some(i) => format!(
                "subscription($e: ID!) {{ checkIns(eventId: $e) {{ cursor checkedInAt user {{ name }} c{i}: cursor }} }}"
            ),
            None => "subscription($e: ID!) { checkIns(eventId: $e) { cursor checkedInAt user { name } } }".to_owned(),
        };
        let sub = json!({ "type": "subscribe", "id": "1", "payload": { "query": query, "variables": { "e": event } } });
        ws.send(Message::text(sub.to_string())).await?;
    }
    ready.fetch_add(1, Ordering::Relaxed);
    // Latencies in microseconds, one per check-in received: from the send,
    // and from the batch's answer (0 if it came first).
    let mut latencies = Vec::new();
    let mut after_answer = Vec::new();
    while let Some(msg) = ws.next().await {
        // The server going away at the end is how the run ends.
        let Ok(msg) = msg else { break };
        match msg {
            Message::Text(text) => {
                if let Some(p) = person_of(&text) {
                    if p == 0 {
                        warmed.fetch_add(1, Ordering::Relaxed);
                        continue; // the warm-up check-in
                    }
                    let now = since(origin);
                    let at = sent.get(p).map_or(0, |s| s.load(Ordering::Relaxed));
                    if at > 0 {
                        latencies.push(((now.saturating_sub(at)) / 1000) as u32);
                        let done = answered_at.get(p).map_or(0, |s| s.load(Ordering::Relaxed));
                        after_answer.push(if done > 0 { (now.saturating_sub(done) / 1000) as u32 } else { 0 });
                    }
                } else if text.contains("\"ping\"") {
                    ws.send(Message::text(r#"{"type":"pong"}"#)).await?;
                } else if text.contains("\"error\"") || text.contains("\"errors\"") {
                    bail!("subscription error: {text}");
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok((latencies, after_answer))
}

/// Submits one batch; how long the server took to answer, in microseconds.
async fn submit(http: &reqwest::Client, url: &str, key: &str, people: std::ops::Range<usize>) -> anyhow::Result<u32> {
    let began = Instant::now();
    let now = Utc::now();
    let sightings: Vec<_> = people.map(|i| json!({ "bleUuid": ble(i), "seenAt": now, "rssi": -60 })).collect();
    let body = json!({
        "query": "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) { checkIns } }",
        "variables": { "b": { "batchId": uuid::Uuid::new_v4(), "sightings": sightings } } });
    let resp = http.post(url).header("x-api-key", key).json(&body).send().await?;
    let v: serde_json::Value = resp.json().await?;
    if v.get("errors").is_some() {
        bail!("batch failed: {v}");
    }
    Ok(began.elapsed().as_micros() as u32)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    f64::from(sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]) / 1000.0
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let per_batch = (args.rate / BATCHES_PER_SECOND).max(1);
    let batches = BATCHES_PER_SECOND * args.seconds as usize;
    let warmup = 1;
    let people = warmup + per_batch * batches;
    let server = start(people, &args, false)?;
    let others = (1..args.instances).map(|_| start(0, &args, true)).collect::<anyhow::Result<Vec<_>>>()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kb(&server)?;
    let origin = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..people).map(|_| AtomicU64::new(0)).collect());
    let answered_at: Arc<Vec<AtomicU64>> = Arc::new((0..people).map(|_| AtomicU64::new(0)).collect());
    let ready = Arc::new(AtomicU64::new(0));
    let warmed = Arc::new(AtomicU64::new(0));

    let mut subs = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        subs.push(tokio::spawn(subscriber(
            if others.is_empty() { server.port } else { others[i % others.len()].port },
            server.token.clone(),
            server.event.clone(),
            origin,
            sent.clone(),
            answered_at.clone(),
            ready.clone(),
            warmed.clone(),
            Plan { subscribe: !args.no_subscribe, distinct: args.distinct.then_some(i) },
        )));
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while ready.load(Ordering::Relaxed) < args.subscribers as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every subscriber is live once each has the warm-up check-in.
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/graphql", server.port);
    if args.pause_secs > 0 {
        println!("server: ws://127.0.0.1:{}/graphql {} {}", server.port, server.token, server.event);
        tokio::time::sleep(Duration::from_secs(args.pause_secs)).await;
    }
    // Subscribing is not acknowledged in the protocol: give the server a
    // moment to take the last ones in.
    tokio::time::sleep(Duration::from_millis(500 + args.subscribers as u64 / 10)).await;
    let connected = Instant::now();
    sent[0].store(since(origin), Ordering::Relaxed);
    let wait_warm = Instant::now();
    submit(&http, &url, &server.key, 0..warmup).await?;
    while !args.no_subscribe
        && warmed.load(Ordering::Relaxed) < args.subscribers as u64
        && wait_warm.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{} subscribers got the warm-up check-in {:.0?} after it was sent",
        warmed.load(Ordering::Relaxed),
        wait_warm.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(connected.elapsed())).await;
    let rss_idle = rss_kb(&server)?;
    println!("server metrics when idle: {}", live_metrics(&http, server.port).await?);
    println!(
        "server rss: {:.1} MB before subscribers, {:.1} MB with {} idle subscribers",
        rss_before as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        args.subscribers
    );

    let began = Instant::now();
    let cpu_before = server.cpu_seconds();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / BATCHES_PER_SECOND as u32);
    let mut submits = Vec::new();
    for b in 0..batches {
        tick.tick().await;
        let range = warmup + b * per_batch..warmup + (b + 1) * per_batch;
        let at = since(origin);
        for p in range.clone() {
            sent[p].store(at, Ordering::Relaxed);
        }
        let (http, url, key, answered_at) = (http.clone(), url.clone(), server.key.clone(), answered_at.clone());
        submits.push(tokio::spawn(async move {
            let took = submit(&http, &url, &key, range.clone()).await?;
            let now = since(origin);
            for p in range {
                answered_at[p].store(now, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(took)
        }));
    }
    let mut answered = Vec::with_capacity(submits.len());
    for s in submits {
        answered.push(s.await??);
    }
    answered.sort_unstable();
    let submitting = began.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = rss_kb(&server)?;
    let cpu = server.cpu_seconds() - cpu_before;
    let cpu_window = began.elapsed().as_secs_f64();
    println!("server metrics after the load: {}", live_metrics(&http, server.port).await?);
    drop((server, others));

    let mut latencies = Vec::new();
    let mut after_answer = Vec::new();
    for s in subs {
        match tokio::time::timeout(Duration::from_secs(10), s).await {
            Ok(Ok(Ok((l, a)))) => {
                latencies.extend(l);
                after_answer.extend(a);
            }
            Ok(Ok(Err(e))) => println!("a subscriber failed: {e}"),
            Ok(Err(e)) => println!("a subscriber panicked: {e}"),
            Err(_) => println!("a subscriber did not finish"),
        }
    }
    let expected = args.subscribers * (people - warmup);
    latencies.sort_unstable();
    after_answer.sort_unstable();
    println!(
        "{} check-ins in {:.1?} ({:.0}/s) to {} subscribers: {} deliveries, {:.0} deliveries/s",
        people - warmup,
        submitting,
        (people - warmup) as f64 / submitting.as_secs_f64(),
        args.subscribers,
        latencies.len(),
        latencies.len() as f64 / submitting.as_secs_f64()
    );
    println!(
        "server rss: {:.1} MB before, {:.1} MB idle with subscribers, {:.1} MB after the load",
        rss_before as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "server cpu while loaded: {cpu:.1} s in {cpu_window:.1} s ({:.0} % of one core){}",
        100.0 * cpu / cpu_window,
        if args.instances > 1 { ", the first instance's" } else { "" }
    );
    println!(
        "submitSightings answered in p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (part of every delivery's time)",
        percentile(&answered, 0.50),
        percentile(&answered, 0.99),
        percentile(&answered, 1.0)
    );
    println!(
        "after the batch's answer (the change stream's share): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&after_answer, 0.50),
        percentile(&after_answer, 0.99),
        percentile(&after_answer, 1.0)
    );
    let per_sub_kb = rss_idle.saturating_sub(rss_before) as f64 / args.subscribers.max(1) as f64;
    println!(
        "fanout: subscribers {}, delivered {}/{}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, rss per subscriber {:.1} KB",
        args.subscribers,
        latencies.len(),
        expected,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        per_sub_kb
    );
    Ok(())
}
