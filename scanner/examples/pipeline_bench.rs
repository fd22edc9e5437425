//! How many advertisements per second the scanner's pipeline takes, and its memory.
//!
//! ```sh
//! cargo run --release -p rollcall-scanner --example pipeline_bench [-- DEVICES ADS]
//! ```
//!
//! A busy venue is simulated in virtual time: `DEVICES` phones (default 2,000) each
//! advertising ten times a second, a tenth of them too faint for `minRssi`. The
//! advertisements go the way `rollcall-scanner run` sends them: through a bounded
//! channel into the filter and the 10 s coalescer; every 250 ms of virtual time the
//! closed windows are appended to the SQLite outbox in one durable (fsynced)
//! transaction, and batches of 500 are sealed and acked as an uploader would, so the
//! outbox stays at a steady state. No network is involved.
//!
//! It prints the figures and, last, `scanner: <N> ads/s, rss <MB> MB`, where RSS is
//! the process's resident memory (VmRSS) at the end, at steady state.

use std::time::Instant;

use rollcall_scanner::outbox::Outbox;
use rollcall_scanner::pipeline::{Filter, Pipeline};
use rollcall_scanner::sighting::Sighting;

/// Resident memory in MB, from /proc/self/status.
fn rss_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let devices: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2_000);
    let total_ads: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2_000_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    let dir = tempfile::tempdir()?;
    let mut outbox = Outbox::open(dir.path())?;
    let ids: Vec<String> = (0..devices).map(|i| format!("{:08x}-0000-4000-8000-{:012x}", i, i * 7919)).collect();
    let start_ms: i64 = 1_900_000_000_000;
    // Ten advertisements per device per second of virtual time.
    let step_ms = 100.0 / devices as f64;
    let commit_every_ms = 250;

    let started = Instant::now();
    let (committed, batches) = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Sighting>(8192);
        let producer = tokio::spawn(async move {
            for n in 0..total_ads {
                let d = (n % devices as u64) as usize;
                // Faint for one device in ten; otherwise a noisy signal around -65 dBm.
                let rssi = if d % 10 == 9 { -97 } else { -65 + (n % 17) as i16 - 8 };
                let s = Sighting {
                    identifier: ids[d].clone(),
                    seen_at_ms: start_ms + (n as f64 * step_ms) as i64,
                    rssi: Some(rssi),
                    event_id: None,
                };
                if tx.send(s).await.is_err() {
                    break;
                }
            }
        });
        let mut pipeline = Pipeline::new(Filter { min_rssi: Some(-90), ..Filter::default() }, 10_000, None);
        let mut next_commit = start_ms + commit_every_ms;
        let (mut committed, mut batches) = (0u64, 0u64);
        let mut drain = |outbox: &mut Outbox, out: Vec<Sighting>| -> anyhow::Result<()> {
            committed += out.len() as u64;
            outbox.append(&out)?;
            // What the uploader does once the server answers.
            while let Some(batch) = outbox.next_batch(500)? {
                outbox.ack(batch.batch_id, 0, false, None)?;
                batches += 1;
            }
            Ok(())
        };
        while let Some(s) = rx.recv().await {
            let t = s.seen_at_ms;
            pipeline.push(s);
            if t >= next_commit {
                next_commit = t + commit_every_ms;
                drain(&mut outbox, pipeline.coalescer.drain_closed())?;
            }
        }
        drain(&mut outbox, pipeline.coalescer.drain_all())?;
        producer.await?;
        println!(
            "advertisements: {} in, {} below minRssi; {committed} coalesced sightings committed, {batches} batches sealed and acked",
            pipeline.seen, pipeline.dropped
        );
        anyhow::Ok((committed, batches))
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let rate = total_ads as f64 / elapsed;
    let virtual_secs = total_ads as f64 * step_ms / 1000.0;
    println!("devices: {devices}, virtual time: {virtual_secs:.0} s, wall time: {elapsed:.2} s");
    println!("outbox left: {} sightings; committed {committed} in {batches} batches", outbox.depth()?);
    println!("peak RSS (VmHWM): {:.1} MB", rss_mb("VmHWM:"));
    println!("scanner: {rate:.0} ads/s, rss {:.1} MB", rss_mb("VmRSS:"));
    Ok(())
}
