//! `rollcall-scanner doctor`: checks what a scanner needs, one line each, and
//! says what to fix. It changes nothing: a damaged outbox is reported, not moved
//! (the next `run` does that), and no heartbeat is sent.
//!
//! In order: the data directory and its free space, the outbox's integrity, the
//! clock (against the build-time floor and the server's time), the server's
//! reachability and the API key, D-Bus and the Bluetooth adapter, BlueZ's
//! version, and a short scan that shows whether advertisements are heard and
//! whether BlueZ reports repeated advertisements (duplicate data) or only the
//! first of each device.

use std::path::Path;
use std::time::Duration;

use btleplug::api::{Central as _, Manager as _};
use tokio::sync::mpsc;

use crate::api::{ApiError, ServerClient};
use crate::clock::FLOOR_MS;
use crate::config::ServerSettings;
use crate::health::{BleHealth, free_disk_bytes};
use crate::outbox::{OUTBOX_FILE, Outbox};
use crate::sighting::{Sighting, now_ms, rfc3339_ms};
use crate::source::Source as _;
use crate::source::ble::BtleplugSource;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Works, but worth a look.
    Warn,
    /// Scanning or uploading will not work until this is fixed.
    Fail,
    /// Not checked (not configured).
    Skip,
}

/// What `doctor` checks, resolved.
#[derive(Debug)]
pub struct DoctorSettings {
    /// The data directory.
    pub data_dir: std::path::PathBuf,
    /// The server and key, when configured.
    pub server: Option<ServerSettings>,
    /// The adapter to use, if not the first.
    pub adapter: Option<String>,
    /// How long to scan; zero skips the scan.
    pub scan: Duration,
}

/// Runs every check, printing one line each; returns whether none failed.
pub async fn run(s: &DoctorSettings) -> bool {
    let mut failed = false;
    let mut report = |verdict: Verdict, what: &str, detail: String| {
        let tag = match verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        };
        failed |= verdict == Verdict::Fail;
        println!("{tag} {what:<10} {detail}");
    };
    let (v, d) = check_disk(&s.data_dir);
    report(v, "disk", d);
    let (v, d) = check_outbox(&s.data_dir);
    report(v, "outbox", d);
    let server_ms = match &s.server {
        Some(server) => server_time(&server.server).await,
        None => Err("no server configured".into()),
    };
    let (v, d) = check_clock(server_ms.as_ref().ok().copied());
    report(v, "clock", d);
    match (&s.server, &server_ms) {
        (None, _) => report(Verdict::Skip, "server", "no --server (or config) given".into()),
        (Some(server), Err(e)) => report(Verdict::Fail, "server", format!("{}: {e}", server.server)),
        (Some(server), Ok(_)) => report(Verdict::Ok, "server", format!("{} answers /health", server.server)),
    }
    match &s.server {
        None => report(Verdict::Skip, "key", "no server configured".into()),
        Some(server) => {
            let (v, d) = check_key(server).await;
            report(v, "key", d);
        }
    }
    let (v, d) = check_bluetooth(s.adapter.as_deref()).await;
    let bluetooth_ok = v == Verdict::Ok;
    report(v, "bluetooth", d);
    let (v, d) = bluez_version();
    report(v, "bluez", d);
    if s.scan.is_zero() {
        report(Verdict::Skip, "scan", "--scan-secs 0".into());
    } else if !bluetooth_ok {
        report(Verdict::Skip, "scan", "no adapter to scan with".into());
    } else {
        let (v, d) = check_scan(s.adapter.clone(), s.scan).await;
        report(v, "scan", d);
    }
    !failed
}

fn check_disk(dir: &Path) -> (Verdict, String) {
    let probe = if dir.exists() { dir } else { dir.parent().unwrap_or(Path::new("/")) };
    let Some(free) = free_disk_bytes(probe) else {
        return (Verdict::Fail, format!("cannot read the filesystem of {}", dir.display()));
    };
    let mb = free / 1_000_000;
    let writable = std::fs::create_dir_all(dir).is_ok() && probe_write(dir).is_ok();
    match (writable, mb) {
        (false, _) => (Verdict::Fail, format!("{} is not writable: fix its owner, or pass --data-dir", dir.display())),
        (_, 0..=9) => (Verdict::Fail, format!("{mb} MB free for {}: free some space", dir.display())),
        (_, 10..=99) => (Verdict::Warn, format!("{mb} MB free for {}: little room for an outbox", dir.display())),
        _ => (Verdict::Ok, format!("{mb} MB free for {}", dir.display())),
    }
}

/// Creates and removes a file in `dir`.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(".doctor-probe");
    std::fs::write(&path, b"probe")?;
    std::fs::remove_file(path)
}

fn check_outbox(dir: &Path) -> (Verdict, String) {
    if !dir.join(OUTBOX_FILE).exists() {
        return (Verdict::Ok, "none yet (made at the first `run`)".into());
    }
    match Outbox::integrity(dir) {
        Ok(None) => match Outbox::open(dir).and_then(|o| o.stats()) {
            Ok(st) if st.dead_batches > 0 => (
                Verdict::Warn,
                format!(
                    "sound; {} sightings waiting, {} dead batches (see `status`; `flush --retry-dead` resends them)",
                    st.depth, st.dead_batches
                ),
            ),
            Ok(st) => (Verdict::Ok, format!("sound; {} sightings waiting", st.depth)),
            Err(e) => (Verdict::Fail, format!("cannot read it: {e}")),
        },
        Ok(Some(problem)) => {
            (Verdict::Fail, format!("damaged ({problem}): the next `run` moves it aside and salvages what it can read"))
        }
        Err(e) => (Verdict::Fail, format!("cannot check it: {e}")),
    }
}

fn check_clock(server_ms: Option<i64>) -> (Verdict, String) {
    let now = now_ms();
    if now < FLOOR_MS {
        return (
            Verdict::Fail,
            format!(
                "reads {}, before this build ({}): no NTP? `run` still scans, and waits for the server's time to upload",
                rfc3339_ms(now),
                rfc3339_ms(FLOOR_MS)
            ),
        );
    }
    match server_ms {
        None => (Verdict::Warn, format!("reads {}; not compared with the server's", rfc3339_ms(now))),
        Some(server) => {
            let skew = now - server;
            if skew.abs() > crate::clock::DEFAULT_TOLERANCE_MS {
                (
                    Verdict::Warn,
                    format!(
                        "{:+.1} s off the server's: check NTP (`timedatectl`); `run` corrects its sightings meanwhile",
                        skew as f64 / 1000.0
                    ),
                )
            } else {
                (Verdict::Ok, format!("within {:.1} s of the server's", skew.abs() as f64 / 1000.0))
            }
        }
    }
}

/// The server's time now, from `/health` (its `timestamp`).
async fn server_time(server: &str) -> Result<i64, String> {
    let url = format!("{}/health", server.trim_end_matches('/').trim_end_matches("/graphql"));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
    let sent = now_ms();
    let resp = http.get(&url).send().await.map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = resp.status();
    let body: serde_json::Value =
        resp.json().await.map_err(|_| format!("{url} answered HTTP {status} with something that is not Rollcall"))?;
    let at = body["timestamp"].as_i64().ok_or_else(|| format!("{url} answered without a timestamp"))?;
    // It stamped the answer about halfway through the request: its time now is later by the other half.
    Ok(at + (now_ms() - sent) / 2)
}

async fn check_key(server: &ServerSettings) -> (Verdict, String) {
    let client = match crate::scanner::client_for(server) {
        Ok(c) => c,
        Err(e) => return (Verdict::Fail, format!("{e:#}")),
    };
    key_verdict(&client).await
}

async fn key_verdict(client: &ServerClient) -> (Verdict, String) {
    match client.active_events().await {
        Ok(events) if events.is_empty() => {
            (Verdict::Ok, "accepted; no event in its scope is taking attendance now".into())
        }
        Ok(events) => {
            let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
            (Verdict::Ok, format!("accepted; active events in its scope: {}", names.join(", ")))
        }
        Err(ApiError::BadKey(why)) => {
            (Verdict::Fail, format!("refused ({why}): put a valid key in the key file (`rollcall apikey create`)"))
        }
        Err(e) => (Verdict::Fail, format!("{e}")),
    }
}

async fn check_bluetooth(want: Option<&str>) -> (Verdict, String) {
    let bus = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .unwrap_or_else(|_| "unix:path=/run/dbus/system_bus_socket (default)".into());
    let manager = match btleplug::platform::Manager::new().await {
        Ok(m) => m,
        Err(e) => {
            return (
                Verdict::Fail,
                format!("no system D-Bus at {bus}: {e}; is dbus running, and may this user use it?"),
            );
        }
    };
    let adapters = match manager.adapters().await {
        Ok(a) => a,
        Err(e) => return (Verdict::Fail, format!("BlueZ does not answer on {bus}: {e}; is bluetoothd running?")),
    };
    let mut names = Vec::new();
    for a in &adapters {
        names.push(a.adapter_info().await.unwrap_or_else(|_| "?".into()));
    }
    let chosen = match want {
        Some(w) => names.iter().find(|n| n.contains(w)),
        None => names.first(),
    };
    match chosen {
        Some(name) => (Verdict::Ok, format!("adapter {name} (of {}) via BlueZ on D-Bus", names.len())),
        None if names.is_empty() => {
            (Verdict::Fail, "BlueZ has no adapter: plug in the dongle, or `rfkill unblock bluetooth`".into())
        }
        None => (Verdict::Fail, format!("no adapter matching `{}` among {}", want.unwrap_or(""), names.join(", "))),
    }
}

fn bluez_version() -> (Verdict, String) {
    match std::process::Command::new("bluetoothd").arg("--version").output() {
        Ok(out) if out.status.success() => {
            (Verdict::Ok, format!("bluetoothd {}", String::from_utf8_lossy(&out.stdout).trim()))
        }
        _ => (Verdict::Warn, "bluetoothd not found on PATH: cannot tell BlueZ's version".into()),
    }
}

async fn check_scan(adapter: Option<String>, scan: Duration) -> (Verdict, String) {
    let source = BtleplugSource {
        watchdog: scan.max(Duration::from_secs(1)) * 2,
        adapter,
        give_up_after: 1,
        health: std::sync::Arc::new(BleHealth::default()),
    };
    let (tx, mut rx) = mpsc::channel::<Sighting>(4096);
    let task = tokio::spawn(Box::new(source).run(tx));
    let mut per_device: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + scan;
    while let Ok(Some(s)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        *per_device.entry(s.identifier).or_default() += 1;
    }
    drop(rx);
    task.abort();
    let (devices, adverts) = (per_device.len() as u64, per_device.values().sum::<u64>());
    let secs = scan.as_secs_f64();
    match devices {
        0 => (
            Verdict::Warn,
            format!("nothing heard in {secs:.0} s: no phone advertising a Rollcall id nearby, or the radio is deaf"),
        ),
        _ if adverts <= devices => (
            Verdict::Warn,
            format!(
                "{devices} devices heard once each in {secs:.0} s: BlueZ seems to drop repeated advertisements \
                 (DuplicateData); a phone is then heard once per scan session"
            ),
        ),
        _ => {
            (Verdict::Ok, format!("{adverts} advertisements from {devices} devices in {secs:.0} s (repeats reported)"))
        }
    }
}
