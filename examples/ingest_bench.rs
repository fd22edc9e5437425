//! Ingest throughput: the whole server against the bare storage engine.
//!
//! ```text
//! cargo run --release --example ingest_bench -- --clients 4 --batches 200 --batch-size 500
//! ```
//!
//! 1. Starts the real server on embedded SurrealKV in a temporary directory,
//!    with its default durability (every commit fsynced), and seeds 10,000
//!    users registered to one active event.
//! 2. `--clients` concurrent clients each send `--batches` batches through
//!    `submitSightings` over HTTP, with fresh batch ids. Each client plays a
//!    scanner: a batch holds `--batch-size` sightings of a group of
//!    `batch-size / 10` people, ten sightings each (what a scanner that
//!    coalesces per 10 s uploads after 100 s), and successive batches move
//!    through the crowd so that every user is seen.
//! 3. The ceiling: the same sightings written to a fresh SurrealKV store of
//!    the same engine through the SDK, one record per batch, with no GraphQL,
//!    auth or rules, by the same number of concurrent writers.
//!
//! The last line is `ingest: <N> sightings/s, ceiling <M> sightings/s, ratio <R>`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use rollcall::config::{DbArgs, ServeArgs};
use rollcall::domain::{AttendancePolicy, EventState, EventWindow};
use rollcall::startup::Application;
use rollcall::store::{ImportRow, NewEvent};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// Concurrent clients (scanners).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Batches each client sends.
    #[arg(long, default_value_t = 200)]
    batches: usize,
    /// Sightings per batch.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Users seeded and registered.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
}

const PER_PERSON: usize = 10;

/// The sightings of client `c`'s batch `b`: (bleUuid, seenAt, rssi).
fn batch_sightings(
    args: &Args,
    bles: &[String],
    start: DateTime<Utc>,
    c: usize,
    b: usize,
) -> Vec<(String, DateTime<Utc>, i32)> {
    let group = (args.batch_size / PER_PERSON).max(1);
    let groups = (bles.len() / group).max(1);
    let g = (b + c * groups / args.clients.max(1)) % groups;
    let mut out = Vec::with_capacity(args.batch_size);
    for i in 0..args.batch_size {
        let person = &bles[(g * group + i % group) % bles.len()];
        let k = (i / group) as i64;
        let at =
            start + chrono::Duration::seconds((b as i64) * 100 + k * 10) + chrono::Duration::milliseconds(c as i64);
        out.push((person.clone(), at, -50 - ((i * 7) % 40) as i32));
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    rollcall::telemetry::init_logging(rollcall::config::LogFormat::Text, "warn");
    let dir = tempfile::tempdir()?;
    let db_url = format!("surrealkv://{}", dir.path().join("server").display());
    let mut serve = ServeArgs::for_tests(DbArgs { url: db_url.clone(), ..DbArgs::memory() });
    serve.limits.max_body_bytes = 8 * 1024 * 1024;
    let app = Application::build(serve).await?;
    let addr = app.local_addr();
    let store = app.state().store.clone();

    // Seed: an organiser, an active event around now, users registered to it, a key.
    let now = Utc::now();
    let start = now - chrono::Duration::hours(1);
    let org = rollcall::accounts::create_account(
        &store,
        rollcall::domain::Email::parse("bench@example.org")?,
        rollcall::domain::PersonName::parse("Bench")?,
        rollcall::domain::Role::Organizer,
        None,
        None,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let event = store
        .events()
        .create(
            NewEvent {
                name: "Stadium".into(),
                description: None,
                location: None,
                window: EventWindow::new(start, now + chrono::Duration::hours(22))?,
                organizer: org.id,
                policy: AttendancePolicy::default(),
            },
            now,
        )
        .await?;
    store.events().set_state(event.id, EventState::Active, now).await?;
    let bles: Vec<String> = (0..args.users).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let seeding = Instant::now();
    for (chunk_no, chunk) in bles.chunks(1000).enumerate() {
        let rows = chunk
            .iter()
            .enumerate()
            .map(|(i, ble)| ImportRow {
                line: chunk_no * 1000 + i,
                email: format!("fan{}@example.org", chunk_no * 1000 + i),
                name: "Fan".into(),
                ble_uuid: ble.clone(),
                event: Some(event.id),
            })
            .collect();
        store.users().import(rows, now).await?;
    }
    // One key per client, as every scanner has its own.
    let mut secrets = Vec::new();
    for c in 0..args.clients {
        let secret = rollcall::auth::ApiKeySecret::generate();
        let name = format!("scanner {c}");
        store.api_keys().create(name, secret.display_prefix(), secret.hash(), true, vec![], None, now).await?;
        secrets.push(secret);
    }
    println!("seeded {} registered users in {:.1?}", args.users, seeding.elapsed());

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));

    // Prepare every request body up front, so only the server is timed.
    let query = "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) { accepted checkIns duplicates rejected { reason } } }";
    let mut bodies: Vec<Vec<String>> = Vec::new();
    for c in 0..args.clients {
        let mut mine = Vec::new();
        for b in 0..args.batches {
            let sightings: Vec<Value> = batch_sightings(&args, &bles, start, c, b)
                .into_iter()
                .map(|(ble, at, rssi)| json!({ "bleUuid": ble, "seenAt": at, "rssi": rssi }))
                .collect();
            let body = json!({ "query": query, "variables": { "b": { "batchId": uuid::Uuid::new_v4(), "sightings": sightings } } });
            mine.push(body.to_string());
        }
        bodies.push(mine);
    }

    let total = args.clients * args.batches * args.batch_size;
    let began = Instant::now();
    let mut tasks = Vec::new();
    for (mine, secret) in bodies.into_iter().zip(&secrets) {
        let url = format!("http://{addr}/graphql");
        let key = secret.expose().to_owned();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut latencies = Vec::with_capacity(mine.len());
            let mut check_ins = 0i64;
            for body in mine {
                let sent = Instant::now();
                let resp = http
                    .post(&url)
                    .header("x-api-key", &key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let v: Value = resp.json().await?;
                latencies.push(sent.elapsed());
                if let Some(errors) = v.get("errors") {
                    bail!("batch failed: {errors}");
                }
                check_ins += v["data"]["submitSightings"]["checkIns"].as_i64().unwrap_or(0);
            }
            Ok::<_, anyhow::Error>((latencies, check_ins))
        }));
    }
    let mut latencies = Vec::new();
    let mut check_ins = 0;
    for t in tasks {
        let (l, c) = t.await??;
        latencies.extend(l);
        check_ins += c;
    }
    let elapsed = began.elapsed();
    latencies.sort();
    let ingest_rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "server: {total} sightings in {} batches over HTTP in {:.2?} by {} clients: {:.0} sightings/s, {check_ins} check-ins",
        args.clients * args.batches,
        elapsed,
        args.clients,
        ingest_rate
    );
    println!(
        "batch latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    drop(store);
    let _ = stop_tx.send(());
    server.await.context("server task")??;

    // The ceiling: the same sightings, one record per batch, straight into SurrealKV.
    let raw = surrealdb::engine::any::connect(format!("surrealkv://{}", dir.path().join("ceiling").display())).await?;
    raw.use_ns("bench").use_db("bench").await?;
    let raw = Arc::new(raw);
    let event_id = event.id.to_string();
    let mut batches: Vec<Vec<Value>> = Vec::new();
    for c in 0..args.clients {
        for b in 0..args.batches {
            batches.push(
                batch_sightings(&args, &bles, start, c, b)
                    .into_iter()
                    .map(|(ble, at, rssi)| json!({ "identifier": ble, "seen_at": at.to_rfc3339(), "rssi": rssi, "event": event_id }))
                    .collect(),
            );
        }
    }
    let began = Instant::now();
    let per_client = args.batches;
    let mut tasks = Vec::new();
    for (c, mine) in batches.chunks(per_client).map(<[Vec<Value>]>::to_vec).enumerate() {
        let raw = raw.clone();
        tasks.push(tokio::spawn(async move {
            for (b, sightings) in mine.into_iter().enumerate() {
                raw.query("CREATE bench_batch CONTENT { scanner: $c, batch: $b, sightings: $s }")
                    .bind(("c", c as i64))
                    .bind(("b", b as i64))
                    .bind(("s", serde_json::Value::Array(sightings)))
                    .await?
                    .check()?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let ceiling = total as f64 / began.elapsed().as_secs_f64();
    println!(
        "ceiling: {total} sightings as {} records through the SDK in {:.2?}",
        args.clients * args.batches,
        began.elapsed()
    );
    println!(
        "ingest: {ingest_rate:.0} sightings/s, ceiling {ceiling:.0} sightings/s, ratio {:.2}",
        ingest_rate / ceiling
    );
    Ok(())
}
