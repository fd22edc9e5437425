//! Crash loop: the server is killed with SIGKILL again and again while
//! scanners upload, and nothing acknowledged is lost or counted twice.
//!
//! ```text
//! cargo run --release --example crash_loop -- --cycles 20 --scanners 4
//! ```
//!
//! 1. The server runs as a child process (this program in `--serve` mode) on
//!    embedded SurrealKV in a temporary directory, with its default
//!    durability. On its first start it seeds an active event, `--users`
//!    registered people and one API key per scanner.
//! 2. `--scanners` clients upload batches of distinct sightings through
//!    `submitSightings`, as a real scanner does: a batch keeps its id until
//!    the server acknowledges it, and any failure (refused connection, a
//!    dropped request, `UNAVAILABLE`) is retried with the same id.
//! 3. `--cycles` times, after a random 0.3–1.5 s, the server is killed with
//!    SIGKILL and started again on the same data.
//! 4. As the real scanner does (`scanner/src/outbox/kept.rs`), each scanner
//!    keeps the batches acknowledged to it with the store's epoch from the
//!    answer, and when an answer brings a new epoch (the store started after
//!    a kill), asks which of those kept under an earlier one the store no
//!    longer has (`storedBatches`) and sends them again with `resent: true`;
//!    the store takes them again (`restored`). `--no-resend` leaves this out,
//!    to see what the store alone loses.
//! 5. After the last restart the scanners finish their batch in hand, and
//!    any re-derivation the restart asked for (rows the writer held back
//!    when it was killed; see `app::writer`) is waited for. Every
//!    acknowledged batch, sent again, must come back `replayed` (it is in the
//!    raw log, once), and each person's stored sighting count must equal the
//!    sightings acknowledged for them: more is `doubled`, fewer is `lost`.
//!
//! The last line is `crash-loop: cycles <n>, acked <n>, lost <n>, doubled <n>`.

#[path = "support/seed.rs"]
mod seed;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use rand::Rng;
use rollcall::config::{DbArgs, ServeArgs};
use rollcall::domain::Role;
use rollcall::startup::Application;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::RwLock;

/// The server runs in this binary: the same allocator as `rollcall`'s.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: rollcall::memory::Allocator = rollcall::memory::Allocator;

/// Crash loop: kills the server with SIGKILL again and again while
/// scanners that retry upload; checks that every acknowledged batch is
/// stored once (see the top of examples/crash_loop.rs).
#[derive(Parser, Debug)]
struct Args {
    /// How many times the server is killed.
    #[arg(long, default_value_t = 20)]
    cycles: usize,
    /// Concurrent scanners, each with its own key.
    #[arg(long, default_value_t = 4)]
    scanners: usize,
    /// People registered for the event.
    #[arg(long, default_value_t = 500)]
    users: usize,
    /// Sightings per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// The embedded store's write buffer, in MiB (the server's
    /// `--db-memtable-mb`): a small one is flushed to disk between kills.
    #[arg(long, default_value_t = rollcall::store::EmbeddedMemory::DEFAULT_MEMTABLE_MIB)]
    db_memtable_mb: u64,
    /// Do not send acknowledged batches again when the store's epoch changes
    /// (what the store alone keeps).
    #[arg(long)]
    no_resend: bool,
    /// Internal: run the server on this data directory.
    #[arg(long, hide = true)]
    serve: Option<String>,
    /// Internal: the scanners' key secrets, for the server to seed.
    #[arg(long, hide = true, value_delimiter = ',')]
    secrets: Vec<String>,
}

const SUBMIT: &str =
    "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) { accepted replayed storeEpoch } }";

/// The server's answer to a batch.
struct Answer {
    replayed: bool,
    epoch: Option<String>,
}

/// Server mode: seed once, print `READY <port> <token> <event>`, serve until killed.
async fn serve(args: &Args, dir: &str) -> anyhow::Result<()> {
    rollcall::telemetry::init_logging(rollcall::config::LogFormat::Text, "error");
    let db = DbArgs { url: format!("surrealkv://{dir}"), db_memtable_mb: args.db_memtable_mb, ..DbArgs::memory() };
    let serve = ServeArgs::for_tests(db);
    let app = Application::build(serve).await?;
    let state = app.state().clone();
    let store = state.store.clone();
    let org = match store.users().by_email("crash@example.org").await? {
        Some(org) => org,
        None => seed(args, &store).await?,
    };
    let mine = rollcall::store::EventFilter { organizer: Some(org.id), ..Default::default() };
    let event = store.events().list(&mine, None, 1).await?.into_iter().next().context("the seeded event")?;
    let (token, _) = state.jwt.issue(org.id, Role::Organizer, org.token_version)?;
    println!("READY {} {token} {}", app.local_addr().port(), event.id);
    app.run_until(std::future::pending()).await?;
    Ok(())
}

async fn seed(args: &Args, store: &rollcall::store::SurrealStore) -> anyhow::Result<rollcall::store::User> {
    let (org, _) = seed::event_with_people(store, "crash@example.org", "Crash loop", args.users, ble).await?;
    for (c, raw) in args.secrets.iter().enumerate() {
        let secret = rollcall::auth::ApiKeySecret::parse(raw).context("a scanner secret")?;
        seed::scanner_key(store, format!("scanner {c}"), &secret).await?;
    }
    Ok(org)
}

fn ble(i: usize) -> String {
    uuid::Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 | i as u128).to_string()
}

/// The server child process and what it said when it was ready.
struct Server {
    child: tokio::process::Child,
    base: String,
    token: String,
    event: String,
}

async fn start(dir: &str, secrets: &[String], memtable_mb: u64) -> anyhow::Result<Server> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--serve", dir, "--secrets", &secrets.join(",")])
        .args(["--db-memtable-mb", &memtable_mb.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await??.context("the child exited")?;
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [ready, port, token, event] = parts.as_slice() else { bail!("the child said {line:?}") };
    if *ready != "READY" {
        bail!("the child said {line:?}");
    }
    Ok(Server { child, base: format!("http://127.0.0.1:{port}"), token: token.to_string(), event: event.to_string() })
}

/// The sightings of scanner `c`'s batch `b`: distinct times, each person in turn.
fn batch(args: &Args, start: DateTime<Utc>, c: usize, b: usize) -> Vec<(usize, DateTime<Utc>)> {
    (0..args.batch_size)
        .map(|i| {
            let n = b * args.batch_size + i;
            let person = (n * 7 + c * 131) % args.users;
            // A millisecond apart per scanner and moving forward, as a scanner's clock does.
            (person, start + chrono::Duration::milliseconds((n * args.scanners + c) as i64))
        })
        .collect()
}

fn batch_id(c: usize, b: usize) -> String {
    uuid::Uuid::from_u128((0xc0de_u128 << 112) | ((c as u128) << 64) | b as u128).to_string()
}

/// Sends one batch; `Some` when the server acknowledged it.
async fn send(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    id: &str,
    sightings: &[(usize, DateTime<Utc>)],
    resent: bool,
) -> Option<Answer> {
    let items: Vec<Value> =
        sightings.iter().map(|(p, at)| json!({ "bleUuid": ble(*p), "seenAt": at, "rssi": -60 })).collect();
    let b = json!({ "batchId": id, "sightings": items, "resent": resent });
    let body = json!({ "query": SUBMIT, "variables": { "b": b } });
    let resp = http.post(format!("{base}/graphql")).header("authorization", format!("ApiKey {key}")).json(&body);
    let resp = resp.timeout(Duration::from_secs(10)).send().await.ok()?;
    let body: Value = resp.json().await.ok()?;
    let answer = &body["data"]["submitSightings"];
    Some(Answer { replayed: answer["replayed"].as_bool()?, epoch: answer["storeEpoch"].as_str().map(str::to_owned) })
}

/// Sends a batch until the server acknowledges it, whatever restarts
/// meanwhile.
async fn deliver(
    http: &reqwest::Client,
    base: &RwLock<String>,
    key: &str,
    id: &str,
    sightings: &[(usize, DateTime<Utc>)],
    resent: bool,
) -> Answer {
    loop {
        let url = base.read().await.clone();
        if let Some(answer) = send(http, &url, key, id, sightings, resent).await {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which of the scanner `c`'s batches `of` the store no longer has, and its
/// epoch (`storedBatches`); `None` if the server did not answer.
async fn stored(
    http: &reqwest::Client,
    base: &RwLock<String>,
    key: &str,
    c: usize,
    of: &[usize],
) -> Option<(Option<String>, Vec<usize>)> {
    let q = "query($ids: [UUID!]!) { storedBatches(batchIds: $ids) { storeEpoch missing } }";
    let ids: Vec<String> = of.iter().map(|b| batch_id(c, *b)).collect();
    let url = base.read().await.clone();
    let resp = http
        .post(format!("{url}/graphql"))
        .header("authorization", format!("ApiKey {key}"))
        .json(&json!({ "query": q, "variables": { "ids": ids } }))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let body: Value = resp.json().await.ok()?;
    let answer = &body["data"]["storedBatches"];
    let missing: Vec<&str> = answer["missing"].as_array()?.iter().filter_map(Value::as_str).collect();
    let epoch = answer["storeEpoch"].as_str().map(str::to_owned);
    Some((epoch, of.iter().copied().filter(|b| missing.contains(&batch_id(c, *b).as_str())).collect()))
}

/// What one scanner did.
#[derive(Default)]
struct Scanned {
    /// Its batches the server acknowledged.
    acked: Vec<usize>,
    /// Batches sent again after the store's epoch changed.
    resent: usize,
    /// Of those, the ones the store had lost and took again.
    restored: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.serve {
        return serve(&args, dir).await;
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data").display().to_string();
    let secrets: Vec<String> =
        (0..args.scanners).map(|_| rollcall::auth::ApiKeySecret::generate().expose().to_owned()).collect();
    let first = start(&data, &secrets, args.db_memtable_mb).await?;
    let (token, event) = (first.token.clone(), first.event.clone());
    let base = Arc::new(RwLock::new(first.base.clone()));
    let mut server = first;
    let args = Arc::new(args);
    let begin = Utc::now() - chrono::Duration::minutes(30);
    let stop = Arc::new(AtomicBool::new(false));

    let scanners: Vec<_> = (0..args.scanners)
        .map(|c| {
            let (args, base, stop, key) = (args.clone(), base.clone(), stop.clone(), secrets[c].clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut done = Scanned::default();
                // Acknowledged batches with the epoch they were acknowledged under.
                let mut kept: Vec<(usize, Option<String>)> = Vec::new();
                for b in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let sightings = batch(&args, begin, c, b);
                    // The same id until it is acknowledged, however often the server dies.
                    let mut answer = deliver(&http, &base, &key, &batch_id(c, b), &sightings, false).await;
                    done.acked.push(b);
                    kept.push((b, answer.epoch.clone()));
                    // While an answer brings a newer epoch: ask which kept
                    // batches the store lost, and send those again.
                    while !args.no_resend
                        && let Some(epoch) = answer.epoch.clone()
                        && kept.iter().any(|(_, e)| e.as_deref() != Some(epoch.as_str()))
                    {
                        let stale: Vec<usize> = kept
                            .iter()
                            .filter(|(_, e)| e.as_deref() != Some(epoch.as_str()))
                            .map(|(b, _)| *b)
                            .take(1000)
                            .collect();
                        let Some((now, missing)) = stored(&http, &base, &key, c, &stale).await else {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        };
                        if now.as_deref() != Some(epoch.as_str()) {
                            answer.epoch = now;
                            continue;
                        }
                        for (old, e) in kept.iter_mut().filter(|(b, _)| stale.contains(b)) {
                            *e = Some(epoch.clone());
                            if !missing.contains(old) {
                                continue;
                            }
                            let sightings = batch(&args, begin, c, *old);
                            let again = deliver(&http, &base, &key, &batch_id(c, *old), &sightings, true).await;
                            done.resent += 1;
                            done.restored += usize::from(!again.replayed);
                            *e = again.epoch;
                        }
                    }
                }
                done
            })
        })
        .collect();

    let mut rng = rand::thread_rng();
    for cycle in 1..=args.cycles {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1500))).await;
        server.child.start_kill()?;
        server.child.wait().await?;
        server = start(&data, &secrets, args.db_memtable_mb).await?;
        *base.write().await = server.base.clone();
        eprintln!("cycle {cycle}: killed and restarted");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut acked, mut resent, mut restored): (Vec<(usize, usize)>, usize, usize) = (Vec::new(), 0, 0);
    for (c, s) in scanners.into_iter().enumerate() {
        let done = s.await?;
        acked.extend(done.acked.into_iter().map(|b| (c, b)));
        resent += done.resent;
        restored += done.restored;
    }

    // Every acknowledged batch is in the raw log: sent again, it is replayed.
    let http = reqwest::Client::new();
    let mut not_logged = 0;
    let mut expected: HashMap<usize, u64> = HashMap::new();
    for &(c, b) in &acked {
        let sightings = batch(&args, begin, c, b);
        if !send(&http, &server.base, &secrets[c], &batch_id(c, b), &sightings, false).await.is_some_and(|a| a.replayed)
        {
            not_logged += 1;
        }
        for (p, _) in sightings {
            *expected.entry(p).or_default() += 1;
        }
    }
    // Rows the writer held back when it was killed are derived again from
    // the raw log after the restart: wait for that, as the event shows it.
    let waited = std::time::Instant::now();
    loop {
        let q = "query($e: ID!) { event(id: $e) { rederivation { pending } } }";
        let body: Value = http
            .post(format!("{}/graphql", server.base))
            .bearer_auth(&token)
            .json(&json!({ "query": q, "variables": { "e": event } }))
            .send()
            .await?
            .json()
            .await?;
        if body["data"]["event"]["rederivation"]["pending"] != true || waited.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("re-derivation after the last restart: done within {:.1?}", waited.elapsed());
    // Each person's stored sightings against what was acknowledged.
    let mut stored: HashMap<String, u64> = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let q = "query($e: ID!, $a: String) { attendance(eventId: $e, first: 500, after: $a) { pageInfo { hasNextPage endCursor } nodes { sightings user { bleUuid } } } }";
        let body: Value = http
            .post(format!("{}/graphql", server.base))
            .bearer_auth(&token)
            .json(&json!({ "query": q, "variables": { "e": event, "a": after } }))
            .send()
            .await?
            .json()
            .await?;
        let page = &body["data"]["attendance"];
        let nodes = page["nodes"].as_array().with_context(|| format!("attendance: {body}"))?;
        for n in nodes {
            stored.insert(
                n["user"]["bleUuid"].as_str().unwrap_or_default().to_owned(),
                n["sightings"].as_u64().unwrap_or(0),
            );
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    let (mut lost, mut doubled) = (not_logged as u64, 0u64);
    for p in 0..args.users {
        let want = expected.get(&p).copied().unwrap_or(0);
        let got = stored.get(&ble(p)).copied().unwrap_or(0);
        lost += want.saturating_sub(got);
        doubled += got.saturating_sub(want);
    }
    server.child.start_kill()?;
    println!(
        "acknowledged batches not in the raw log: {not_logged}; sightings acknowledged: {}",
        expected.values().sum::<u64>()
    );
    if args.no_resend {
        println!("batches sent again after a restart: none (--no-resend)");
    } else {
        println!("batches the store had lost, sent again after a restart: {resent}, taken again: {restored}");
    }
    println!("crash-loop: cycles {}, acked {}, lost {lost}, doubled {doubled}", args.cycles, acked.len());
    Ok(())
}
