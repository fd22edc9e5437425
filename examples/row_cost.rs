//! What one attendance-row write costs inside SurrealDB, and how much of it
//! the table's indexes and field definitions take.
//!
//! Ingest's commit (`AttendanceLog::commit`) writes every changed
//! attendance row once per group; in the venue profile of `ingest_bench`
//! that is thousands of rows per commit, and the commit's time is most of
//! the batch's. This example writes `--rows` rows through that same commit
//! path on embedded SurrealKV, then updates all of them `--rounds` times,
//! in three set-ups of the same data:
//!
//! 1. the table as the migrations define it;
//! 2. without its three indexes (`event`, `user`, `event, cursor`);
//! 3. also without its field definitions (no type checks on write).
//!
//! Each line gives the best round's time per row; the last line is
//! `row cost: deployed <a> µs, no indexes <b> µs, schemaless <c> µs`.
//!
//! ```sh
//! cargo run --release --example row_cost -- --rows 3000 --rounds 5
//! ```

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use rollcall::domain::{Attendance, Mark, Stay};
use rollcall::store::{AttendanceRecord, GroupWrite, StoreOptions, SurrealStore};
use uuid::Uuid;

/// The server runs in this binary: the same allocator as `rollcall`'s.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: rollcall::memory::Allocator = rollcall::memory::Allocator;

/// What one attendance-row write costs inside SurrealDB, with and without
/// the table's indexes and field definitions.
#[derive(Parser)]
struct Args {
    /// Attendance rows, all in one event, all written in each commit.
    #[arg(long, default_value_t = 3000)]
    rows: usize,
    /// Update commits per set-up; the best is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// What each set-up removes from the table before it is measured.
const SETUPS: [(&str, &str); 3] = [
    ("deployed", ""),
    (
        "no indexes",
        "REMOVE INDEX attendance_event ON attendance; REMOVE INDEX attendance_user ON attendance;
         REMOVE INDEX attendance_event_cursor ON attendance;",
    ),
    (
        "schemaless",
        "DEFINE TABLE OVERWRITE attendance SCHEMALESS;
         REMOVE FIELD event ON attendance; REMOVE FIELD user ON attendance;
         REMOVE FIELD first_seen ON attendance; REMOVE FIELD first_scanner ON attendance;
         REMOVE FIELD last_seen ON attendance; REMOVE FIELD stays ON attendance;
         REMOVE FIELD sightings ON attendance; REMOVE FIELD best_rssi ON attendance;
         REMOVE FIELD dwell_secs ON attendance; REMOVE FIELD version ON attendance;
         REMOVE FIELD cursor ON attendance; REMOVE FIELD mark_scanners ON attendance;
         REMOVE FIELD mark_times ON attendance;",
    ),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rollcall::telemetry::init_logging(rollcall::config::LogFormat::Text, "warn");
    let dir = tempfile::tempdir()?;
    let url = format!("surrealkv://{}", dir.path().join("db").display());
    let opts = StoreOptions::default();
    let event = Uuid::new_v4();
    let users: Vec<Uuid> = (0..args.rows).map(|_| Uuid::new_v4()).collect();
    let scanners: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    let mut rows: Vec<AttendanceRecord> = Vec::new();
    let mut results = Vec::new();
    for (name, change) in SETUPS {
        if !change.is_empty() {
            // The store keeps SurrealKV's lock while open: change the table
            // through a plain client in between.
            let db = surrealdb::engine::any::connect(url.as_str()).await?;
            db.use_ns(&opts.namespace).use_db(&opts.database).await?;
            db.query(change).await?.check()?;
            drop(db);
            rollcall::store::embedded_closed(&dir.path().join("db"), Duration::from_secs(30)).await;
        }
        let store = SurrealStore::open(&url, &opts).await?;
        let log = store.attendance();
        if rows.is_empty() {
            let now = Utc::now();
            rows = users.iter().map(|u| record(event, *u, now, &scanners)).collect();
            let mut created = GroupWrite {
                batches: Vec::new(),
                created: rows.clone(),
                updated: Vec::new(),
                walk_ins: Vec::new(),
                deferred: Vec::new(),
                pending: Vec::new(),
            };
            log.commit(&mut created, now).await.map_err(|e| anyhow::anyhow!("creating the rows: {e}"))?;
            rows = log.for_event(event, None, usize::MAX / 2).await?;
        }
        let mut best = Duration::MAX;
        for _ in 0..args.rounds {
            let now = Utc::now();
            for r in &mut rows {
                r.version += 1;
                r.attendance.last_seen = now;
                r.attendance.sightings += 1;
                if let Some(stay) = r.attendance.stays.last_mut() {
                    stay.to = now;
                }
                if let Some(mark) = r.attendance.marks.first_mut() {
                    mark.at = now;
                }
            }
            let mut updated = GroupWrite {
                batches: Vec::new(),
                created: Vec::new(),
                updated: rows.clone(),
                walk_ins: Vec::new(),
                deferred: Vec::new(),
                pending: Vec::new(),
            };
            let t = Instant::now();
            log.commit(&mut updated, now).await.map_err(|e| anyhow::anyhow!("updating the rows: {e}"))?;
            best = best.min(t.elapsed());
        }
        let per_row = best.as_secs_f64() * 1e6 / rows.len() as f64;
        println!(
            "{name}: {} rows updated in one commit in {best:.1?} (best of {}): {per_row:.0} µs a row",
            rows.len(),
            args.rounds
        );
        results.push(per_row);
        // Waits until the engine has let go of its lock.
        store.close(Duration::from_secs(30)).await;
    }
    println!(
        "row cost: deployed {:.0} µs, no indexes {:.0} µs, schemaless {:.0} µs",
        results[0], results[1], results[2]
    );
    Ok(())
}

/// A row as a person seen a few times by a few scanners leaves it.
fn record(event: Uuid, user: Uuid, now: chrono::DateTime<Utc>, scanners: &[Uuid]) -> AttendanceRecord {
    let first = now - chrono::Duration::minutes(30);
    let mut marks: Vec<Mark> = scanners.iter().take(3).map(|s| Mark { scanner: *s, at: now }).collect();
    marks.sort_by_key(|m| m.scanner);
    AttendanceRecord {
        event_id: event,
        user_id: user,
        attendance: Attendance {
            first_seen: first,
            first_scanner: scanners[0],
            last_seen: now,
            stays: vec![
                Stay { from: first, to: now - chrono::Duration::minutes(20) },
                Stay { from: now - chrono::Duration::minutes(5), to: now },
            ],
            sightings: 12,
            best_rssi: Some(-55),
            marks,
        },
        version: 1,
        cursor: String::new(),
    }
}
