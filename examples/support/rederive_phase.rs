//! `ingest_bench --rederive`: an event's policy changes, and its attendance
//! is derived again from the raw log in the background while two clients
//! upload batches for another event; progress is printed as it goes.
//! Included with `#[path = "support/rederive_phase.rs"] mod rederive_phase;`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use rollcall::domain::{AttendancePolicy, EventState, EventWindow};
use rollcall::store::NewEvent;
use serde_json::{Value, json};

/// Changes the event's policy, then follows its re-derivation while two
/// clients upload for another event.
#[allow(clippy::too_many_arguments)]
pub async fn rederive(
    store: &rollcall::store::SurrealStore,
    ingest: &rollcall::app::Ingest,
    event: &rollcall::store::Event,
    org: &rollcall::store::User,
    addr: std::net::SocketAddr,
    secrets: &[rollcall::auth::ApiKeySecret],
    bles: &[String],
    start: DateTime<Utc>,
    logged: usize,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let other = store
        .events()
        .create(
            NewEvent {
                name: "Side room".into(),
                description: None,
                location: None,
                window: EventWindow::new(event.starts_at, event.ends_at)?,
                organizer: org.id,
                policy: AttendancePolicy { require_registration: false, ..AttendancePolicy::default() },
            },
            now,
        )
        .await?;
    store.events().set_state(other.id, EventState::Active, now).await?;
    let changes = rollcall::store::EventChanges {
        name: event.name.clone(),
        description: None,
        location: None,
        window: EventWindow::new(event.starts_at, event.ends_at)?,
        policy: AttendancePolicy { min_rssi: -80, ..event.policy },
    };
    let began = Instant::now();
    store.events().update(event, changes, true, Utc::now()).await?;
    ingest.rederivation_requested();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Sightings acknowledged for the other event so far.
    let side = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut uploaders = Vec::new();
    for (c, secret) in secrets.iter().take(2).enumerate() {
        let (done, side, key, url) =
            (done.clone(), side.clone(), secret.expose().to_owned(), format!("http://{addr}/graphql"));
        let (bles, other) = (bles.to_vec(), other.id);
        uploaders.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut b = 0i64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let sightings: Vec<Value> = (0..500)
                    .map(|i| {
                        let at = start + chrono::Duration::seconds(b * 10) + chrono::Duration::milliseconds(i + c as i64);
                        json!({ "bleUuid": bles[(b as usize * 500 + i as usize) % bles.len()], "seenAt": at, "rssi": -60, "eventId": other })
                    })
                    .collect();
                let body = json!({ "query": "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) { accepted } }",
                    "variables": { "b": { "batchId": uuid::Uuid::new_v4(), "sightings": sightings } } });
                let v: Value =
                    http.post(&url).header("x-api-key", &key).json(&body).send().await?.json().await?;
                if v.get("errors").is_none() {
                    side.fetch_add(500, std::sync::atomic::Ordering::Relaxed);
                }
                b += 1;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    // When the paged read was done, and how much the other event had by then.
    let mut read_done: Option<(Instant, usize)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = store.rederivations().get(event.id).await?.context("rederivation")?;
        if read_done.is_none() && r.batches_total > 0 && r.batches_done >= r.batches_total {
            read_done = Some((Instant::now(), side.load(std::sync::atomic::Ordering::Relaxed)));
        }
        println!(
            "rederive: {:.1}s, {}/{} batches read{}",
            began.elapsed().as_secs_f64(),
            r.batches_done,
            r.batches_total,
            if r.running { ", running" } else { "" }
        );
        if !r.pending() {
            let (ended, side_total) = (Instant::now(), side.load(std::sync::atomic::Ordering::Relaxed));
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            for u in uploaders {
                u.await??;
            }
            let secs = (ended - began).as_secs_f64();
            println!(
                "rederive: {logged} raw sightings derived again in {secs:.1}s ({} rows); meanwhile {:.0} sightings/s ingested for another event",
                r.rows.unwrap_or(0),
                side_total as f64 / secs
            );
            if let Some((at, before)) = read_done {
                let last = (ended - at).as_secs_f64();
                println!(
                    "rederive: its last step took about {last:.1}s; during it {:.0} sightings/s ingested for another event",
                    side_total.saturating_sub(before) as f64 / last.max(0.001)
                );
            }
            return Ok(());
        }
    }
}
