//! Ingest throughput: the whole server against the bare storage engine.
//!
//! ```text
//! cargo run --release --example ingest_bench -- --clients 4 --batches 200 --batch-size 500
//! cargo run --release --example ingest_bench -- --profile venue --clients 8 --batches 100 --batch-size 500
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
//!    through the crowd so that every user is seen (`--profile own`, the
//!    default). With `--profile venue`, every batch of every client is drawn
//!    at random from the one shared crowd, so the same people arrive in many
//!    concurrent batches, as at a venue where scanners hear the same room;
//!    each scanner's clock still moves forward batch by batch.
//!    A refused batch is counted, not retried.
//! 3. Consistency: every sighting the server acknowledged is folded in
//!    memory with the event's policy (`Attendance::fold`), and the result is
//!    compared with the attendance the server stored (`consistent: yes`),
//!    once the rows the writer held back are written (`rows settled`, the
//!    time that took). `--row-flush-ms` sets how long a changed row may wait
//!    (the server's `ROLLCALL_ROW_FLUSH_MS`; `0` writes rows with each
//!    commit, as before).
//! 4. The ceiling: the same sightings written to a fresh SurrealKV store of
//!    the same engine through the SDK, one record per batch, with no GraphQL,
//!    auth or rules, by the same number of concurrent writers.
//!
//! 5. With `--rederive`: the event's policy changes, and its attendance is
//!    derived again from the raw log in the background while two clients
//!    upload batches for another event; progress is printed as it goes.
//! 6. With `--erase`: one person is erased (`deleteUser`'s use case), and the
//!    time it took is printed.
//!
//! The last line is `ingest: <N> sightings/s, ceiling <M> sightings/s, ratio <R>`.

#[path = "support/rederive_phase.rs"]
mod rederive_phase;
#[path = "support/seed.rs"]
mod seed;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Parser;
use rollcall::config::{DbArgs, ServeArgs};
use rollcall::domain::{Attendance, EventWindow, Sighting};
use rollcall::startup::Application;
use rollcall::store::Conn;
use serde_json::{Value, json};

/// The server runs in this binary: the same allocator as `rollcall`'s.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: rollcall::memory::Allocator = rollcall::memory::Allocator;

/// Ingest benchmark: scanners upload sighting batches over HTTP; prints
/// sightings/s beside the raw write ceiling and checks attendance against
/// every acknowledged batch (see the top of examples/ingest_bench.rs).
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
    /// Who each batch sees: `own` (each client walks through its own part of
    /// the crowd) or `venue` (every batch drawn from one shared crowd).
    #[arg(long, value_enum, default_value_t = Profile::Own)]
    profile: Profile,
    /// Afterwards, change the event's policy and time the background
    /// re-derivation of its attendance from the raw log, while two clients
    /// keep uploading for another event.
    #[arg(long)]
    rederive: bool,
    /// Phones advertise rotating identifiers (docs/identity.md) instead of
    /// their bleUuids: every user gets a beacon secret, and every sighting
    /// is resolved through the server's rotating-identifier table.
    #[arg(long)]
    rotating: bool,
    /// The database: by default a fresh SurrealKV store in a temporary
    /// directory; `--db ws://HOST:PORT` (with `--db-user`, `--db-password`
    /// and a fresh `--db-database`) puts the server on a SurrealDB server.
    #[command(flatten)]
    db: DbArgs,
    /// Rollcall instances over the database (more than one needs a `ws://`
    /// `--db`), in this process; the clients are split between them.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// At the end, erase one person (`deleteUser`) and print how long it took.
    #[arg(long)]
    erase: bool,
    /// How long a changed attendance row may wait in memory (embedded store).
    #[arg(long, default_value_t = 1000)]
    row_flush_ms: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Profile {
    Own,
    Venue,
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
    if args.profile == Profile::Venue {
        // A deterministic shuffle of the crowd per (client, batch); the
        // scanner's clock moves on 10 s per batch, a millisecond per sighting.
        let mut state = ((c as u64) << 32 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        return (0..args.batch_size)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let person = &bles[(state % bles.len() as u64) as usize];
                let at = start
                    + chrono::Duration::seconds(b as i64 * 10)
                    + chrono::Duration::milliseconds(i as i64 * 3 + c as i64);
                (person.clone(), at, -50 - ((i * 7) % 40) as i32)
            })
            .collect();
    }
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

/// Whether the stored attendance equals an in-memory fold of every
/// acknowledged sighting.
async fn consistent(
    args: &Args,
    store: &rollcall::store::SurrealStore,
    event: &rollcall::store::Event,
    bles: &[String],
    start: DateTime<Utc>,
    secrets: &[rollcall::auth::ApiKeySecret],
    acked: &[(usize, usize)],
) -> anyhow::Result<bool> {
    use std::collections::HashMap;
    // Scanner ids: the keys, in client order.
    let mut keys = HashMap::new();
    for (c, secret) in secrets.iter().enumerate() {
        let key = store.api_keys().by_hash(&secret.hash()).await?.context("bench key")?;
        keys.insert(c, key.id);
    }
    let users: HashMap<String, uuid::Uuid> = store.users().resolve(bles.to_vec()).await?;
    let mut sightings: HashMap<uuid::Uuid, Vec<Sighting>> = HashMap::new();
    for &(c, b) in acked {
        for (ble, at, rssi) in batch_sightings(args, bles, start, c, b) {
            let user = users[&ble];
            // The server keeps times to the millisecond, as its raw log does.
            let at = DateTime::<Utc>::from_timestamp_millis(at.timestamp_millis()).context("time")?;
            sightings.entry(user).or_default().push(Sighting { scanner: keys[&c], seen_at: at, rssi: Some(rssi) });
        }
    }
    let window = EventWindow::new(event.starts_at, event.ends_at)?;
    let expected: HashMap<uuid::Uuid, Attendance> =
        sightings.iter().filter_map(|(u, s)| Attendance::fold(&event.policy, &window, s).map(|a| (*u, a))).collect();
    let mut stored = HashMap::new();
    let mut after = None;
    loop {
        let page = store.attendance().for_event(event.id, after, 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.user_id);
        for r in page {
            stored.insert(r.user_id, r.attendance);
        }
    }
    let mut ok = stored.len() == expected.len();
    for (user, want) in &expected {
        let Some(got) = stored.get(user) else {
            ok = false;
            continue;
        };
        let same = got.first_seen == want.first_seen
            && got.last_seen == want.last_seen
            && got.stays == want.stays
            && got.sightings == want.sightings
            && got.best_rssi == want.best_rssi;
        if !same && ok {
            println!("first difference, user {user}: stored {got:?}, expected {want:?}");
        }
        ok &= same;
    }
    println!("checked {} users' attendance against {} acknowledged batches", expected.len(), acked.len());
    Ok(ok)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    rollcall::telemetry::init_logging(rollcall::config::LogFormat::Text, "warn");
    let dir = tempfile::tempdir()?;
    let mut db = args.db.clone();
    if db.url == rollcall::store::DEFAULT_DB_URL {
        db.url = format!("surrealkv://{}", dir.path().join("server").display());
    }
    let serve = || {
        let mut serve = ServeArgs::for_tests(db.clone());
        serve.limits.max_body_bytes = 8 * 1024 * 1024;
        serve.row_flush_ms = args.row_flush_ms;
        Application::build(serve)
    };
    let app = serve().await?;
    let addr = app.local_addr();
    let mut others = Vec::new();
    for _ in 1..args.instances {
        others.push(serve().await?);
    }
    let addrs: Vec<_> = std::iter::once(addr).chain(others.iter().map(Application::local_addr)).collect();
    let store = app.state().store.clone();
    // With several instances, the one holding the rows' lease folds in what
    // the others left pending and writes the rows; any may be it.
    let ingests: Vec<_> = std::iter::once(&app).chain(others.iter()).map(|a| a.state().ingest.clone()).collect();
    let ingest = ingests[0].clone();

    // Seed: an organiser, an active event around now, users registered to it, a key.
    let now = Utc::now();
    let start = now - chrono::Duration::hours(1);
    let bles: Vec<String> = (0..args.users).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let seeding = Instant::now();
    let (org, event) =
        seed::event_with_people(&store, "bench@example.org", "Stadium", args.users, |i| bles[i].clone()).await?;
    // One key per client, as every scanner has its own.
    let mut secrets = Vec::new();
    for c in 0..args.clients {
        let secret = rollcall::auth::ApiKeySecret::generate();
        seed::scanner_key(&store, format!("scanner {c}"), &secret).await?;
        secrets.push(secret);
    }
    println!("seeded {} registered users in {:.1?}", args.users, seeding.elapsed());
    // With --rotating: each user's beacon secret, by bleUuid.
    let mut beacon: std::collections::HashMap<String, rollcall::domain::identity::Secret> =
        std::collections::HashMap::new();
    if args.rotating {
        let users = store.users().resolve(bles.clone()).await?;
        for (ble, user) in users {
            let secret = rollcall::domain::identity::new_secret();
            store.beacons().set(user, &secret, now).await?;
            beacon.insert(ble, secret);
        }
        println!("issued {} beacon secrets; phones advertise rotating identifiers", beacon.len());
    }
    let slot_secs = rollcall::domain::identity::DEFAULT_SLOT_SECS;
    let heard = |ble: &str, at: DateTime<Utc>| match beacon.get(ble) {
        Some(secret) => rollcall::domain::identity::identifier(
            secret,
            rollcall::domain::identity::slot_of(at.timestamp(), slot_secs),
        )
        .to_string(),
        None => ble.to_owned(),
    };

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = futures_util::FutureExt::shared(async move {
        let _ = stop_rx.await;
    });
    let server = tokio::spawn(app.run_until(stop.clone()));
    let others: Vec<_> = others.into_iter().map(|app| tokio::spawn(app.run_until(stop.clone()))).collect();

    // Prepare every request body up front, so only the server is timed.
    let query = "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) { accepted checkIns duplicates rejected { reason } } }";
    let mut bodies: Vec<Vec<(usize, String)>> = Vec::new();
    for c in 0..args.clients {
        let mut mine = Vec::new();
        for b in 0..args.batches {
            let sightings: Vec<Value> = batch_sightings(&args, &bles, start, c, b)
                .into_iter()
                .map(|(ble, at, rssi)| json!({ "bleUuid": heard(&ble, at), "seenAt": at, "rssi": rssi }))
                .collect();
            let body = json!({ "query": query, "variables": { "b": { "batchId": uuid::Uuid::new_v4(), "sightings": sightings } } });
            mine.push((b, body.to_string()));
        }
        bodies.push(mine);
    }

    let total = args.clients * args.batches * args.batch_size;
    let began = Instant::now();
    let mut tasks = Vec::new();
    for (c, (mine, secret)) in bodies.into_iter().zip(&secrets).enumerate() {
        let url = format!("http://{}/graphql", addrs[c % addrs.len()]);
        let key = secret.expose().to_owned();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut latencies = Vec::with_capacity(mine.len());
            let mut check_ins = 0i64;
            let mut acked = Vec::new();
            let mut refused = Vec::new();
            for (b, body) in mine {
                let sent = Instant::now();
                let resp = http
                    .post(&url)
                    .header("x-api-key", &key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = resp.status();
                let v: Value = resp.json().await.with_context(|| format!("HTTP {status}"))?;
                latencies.push(sent.elapsed());
                if let Some(errors) = v.get("errors") {
                    refused.push(errors.to_string());
                    continue;
                }
                check_ins += v["data"]["submitSightings"]["checkIns"].as_i64().unwrap_or(0);
                acked.push(b);
            }
            Ok::<_, anyhow::Error>((latencies, check_ins, acked, refused))
        }));
    }
    let mut latencies = Vec::new();
    let mut check_ins = 0;
    let mut acked: Vec<(usize, usize)> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for (c, t) in tasks.into_iter().enumerate() {
        let (l, n, a, r) = t.await??;
        latencies.extend(l);
        check_ins += n;
        acked.extend(a.into_iter().map(|b| (c, b)));
        refused.extend(r);
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
    println!("refused: {} of {} batches", refused.len(), args.clients * args.batches);
    if let Some(first) = refused.first() {
        println!("first refusal: {first}");
    }
    // Rows held back by the writer (embedded store) are written first, as
    // they are before any read through the API.
    let settled = Instant::now();
    for ingest in &ingests {
        ingest.settle(rollcall::app::Scope::Event(event.id)).await;
    }
    println!("rows settled for the check in {:.2?}", settled.elapsed());
    let consistent = consistent(&args, &store, &event, &bles, start, &secrets, &acked).await?;
    println!("consistent: {}", if consistent { "yes" } else { "no" });
    if args.rederive {
        rederive_phase::rederive(&store, &ingest, &event, &org, addr, &secrets, &bles, start, total).await?;
    }
    if args.erase {
        // The right to erasure: one person's sightings leave every batch.
        let user = store.users().resolve(vec![bles[0].clone()]).await?[&bles[0]];
        let t = Instant::now();
        ingest.erase_user(user).await?;
        println!("erase: one person's sightings erased from a raw log of {total} in {:.2?}", t.elapsed());
    }
    // The server's store closes once every handle on it is gone.
    drop((store, ingest));
    let _ = stop_tx.send(());
    server.await.context("server task")??;
    for other in others {
        other.await.context("server task")??;
    }

    // The ceiling: the same sightings, one record per batch, straight into
    // SurrealKV, opened with the same buffers as the server's store.
    let raw =
        Conn::embedded(&format!("surrealkv://{}", dir.path().join("ceiling").display()), args.db.options().memory)
            .await?;
    raw.use_ns_db("bench", "bench").await?;
    // Defined before the writers start: the first writes of a table that does
    // not exist yet define it, and concurrent definitions conflict.
    raw.query("DEFINE TABLE bench_batch SCHEMALESS").await?.check()?;
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
    // Its directory is removed on return: let the engine finish first.
    drop(raw);
    rollcall::store::embedded_closed(&dir.path().join("ceiling"), Duration::from_secs(10)).await;
    println!(
        "ingest: {ingest_rate:.0} sightings/s, ceiling {ceiling:.0} sightings/s, ratio {:.2}",
        ingest_rate / ceiling
    );
    Ok(())
}
