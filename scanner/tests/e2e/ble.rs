//! The BLE path without hardware: btleplug against a fake BlueZ (`tests/fake_bluez.py`)
//! on a private `dbus-daemon`, found through `DBUS_SYSTEM_BUS_ADDRESS`. Simulated phones'
//! advertisements (an iBeacon, a 128-bit service UUID, service data) become uploaded
//! sightings, a too-weak one is filtered out by the scanner, and when the fake falls
//! silent the watchdog restarts the scan on the same D-Bus connection, and what is
//! heard after the restart is uploaded too. With BlueZ gone, the scanner gives up
//! after a few failed sessions and exits non-zero, for systemd to start it afresh.
//!
//! Needs `dbus-daemon` and Python 3 with `dbus` and `gi` (Debian: `dbus`,
//! `python3-dbus`, `python3-gi`; `.ci/run` installs them). The Python is
//! `/usr/bin/python3` unless `ROLLCALL_TEST_PYTHON` names another.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// A private bus, run as our child (`--nofork`, so it dies with the guard).
pub struct DbusDaemon {
    pub address: String,
    _child: ChildGuard,
}

impl DbusDaemon {
    pub fn start() -> Self {
        use std::io::BufRead as _;
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon runs (Debian package `dbus`; .ci/run installs it)");
        let mut address = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut address).unwrap();
        assert!(address.starts_with("unix:"), "dbus-daemon printed no address: {address:?}");
        Self { address: address.trim().to_owned(), _child: ChildGuard(Some(child)) }
    }
}

pub fn fake_log(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// `rollcall-scanner run --source ble` on the private bus, logging to `log` in `home`.
fn spawn_ble_scanner(home: &ScannerHome, server: &str, bus: &DbusDaemon, log: &str, extra: &[&str]) -> ChildGuard {
    let log = std::fs::File::create(home.path(log)).unwrap();
    ChildGuard(Some(
        Command::new(scanner_bin())
            .args(["--data-dir", home.path("data").to_str().unwrap(), "--log-format", "json", "run", "--source", "ble"])
            .args(["--server", server, "--api-key-file", home.path("api-key").to_str().unwrap()])
            .args(extra)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ))
}

/// The fake BlueZ (`tests/fake_bluez.py`) on `bus`, with the phones in `home`'s
/// `phones.json`, each sending `ads_per_scan` advertisements per scan; logs its
/// calls to `bluez.log`. Returns once it owns `org.bluez`.
pub async fn start_fake_bluez(home: &ScannerHome, bus: &DbusDaemon, ads_per_scan: u32) -> ChildGuard {
    let python = std::env::var("ROLLCALL_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fake_bluez.py");
    let fake_log_path = home.path("bluez.log");
    let fake = ChildGuard(Some(
        Command::new(&python)
            .args([
                script,
                &bus.address,
                home.path("phones.json").to_str().unwrap(),
                fake_log_path.to_str().unwrap(),
                &ads_per_scan.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.path("bluez.err")).unwrap())
            .spawn()
            .expect("python3 runs the fake BlueZ"),
    ));
    eventually(Duration::from_secs(20), "the fake BlueZ to own org.bluez", || {
        let err = std::fs::read_to_string(home.path("bluez.err")).unwrap_or_default();
        assert!(!err.contains("Traceback"), "fake BlueZ failed (python3-dbus and python3-gi installed?): {err}");
        fake_log(&fake_log_path).iter().any(|e| e["call"] == "ready").then_some(())
    })
    .await;
    fake
}

/// An iBeacon frame's manufacturer data (after Apple's company id) for `uuid`.
fn ibeacon(uuid: &str) -> String {
    format!("0215{}00010002c5", uuid.replace('-', ""))
}

#[tokio::test]
async fn advertisements_heard_through_bluez_become_uploaded_sightings() {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms();
    // The event's own minRssi would let the faint phone count: only the scanner's filter keeps it out.
    let event = server
        .active_event_with_policy("Radio", &iso(now - 3_600_000), &iso(now + 3_600_000), json!({ "minRssi": -100 }))
        .await;
    let beacon = "b9407f30-f5f8-466e-aff9-25556b57fe6d";
    let service = "6e400001-b5a3-f393-e0a9-e50e24dcca9e";
    let in_data = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    let faint = "c0ffee00-0000-4000-8000-000000000001";
    let late = "1a7e0000-0000-4000-8000-000000000002";
    for (i, u) in [beacon, service, in_data, faint, late].iter().enumerate() {
        server.attendee(&format!("p{i}@example.org"), u, &event).await;
    }
    let key = server.api_key(&event).await;
    let home = ScannerHome::new(&key);

    let phones = json!([
        // An iPhone-style iBeacon, plus Google's 0xFE9F service, which is nobody's id.
        { "address": "5C:F3:70:11:22:01", "rssi": [-70, -58, -64],
          "manufacturerData": { "76": ibeacon(beacon) }, "uuids": ["0000fe9f-0000-1000-8000-00805f9b34fb"] },
        // An app advertising the user's UUID as a 128-bit service.
        { "address": "5C:F3:70:11:22:02", "rssi": [-66, -61], "uuids": [service] },
        // The UUID as a 16-byte payload of a 16-bit service's data.
        { "address": "5C:F3:70:11:22:03", "rssi": [-72],
          "serviceData": { "0000feaa-0000-1000-8000-00805f9b34fb": in_data.replace('-', "") } },
        // Too far away: below --min-rssi.
        { "address": "5C:F3:70:11:22:04", "rssi": [-99], "uuids": [faint] },
        // Turns up only once the scan has been restarted.
        { "address": "5C:F3:70:11:22:05", "rssi": [-63], "uuids": [late], "fromScan": 2 },
    ]);
    std::fs::write(home.path("phones.json"), phones.to_string()).unwrap();

    let bus = DbusDaemon::start();
    let fake_log_path = home.path("bluez.log");
    let fake = start_fake_bluez(&home, &bus, 10).await;

    let mut scanner = spawn_ble_scanner(
        &home,
        &server.base,
        &bus,
        "scanner.log",
        // Some fake phones advertise once: every hearing counts here.
        &[
            "--watchdog-secs",
            "2",
            "--window-secs",
            "1",
            "--min-rssi",
            "-90",
            "--heartbeat-secs",
            "1",
            "--min-hearings",
            "1",
        ],
    );

    // Each phone becomes a check-in of its user, with the RSSI of its strongest advertisement.
    let first_scan = [beacon, service, in_data];
    let attendance =
        attendance_until(&server, &event, Duration::from_secs(30), |a| first_scan.iter().all(|u| a.contains_key(*u)))
            .await;
    assert!(
        first_scan.iter().all(|u| attendance.contains_key(*u)),
        "{:?}\nscanner log: {}\nfake BlueZ: {}",
        attendance.keys(),
        home.log_text("scanner.log"),
        home.log_text("bluez.err")
    );

    // The fake falls silent after 10 advertisements; the watchdog restarts the scan.
    eventually(Duration::from_secs(30), "the watchdog to restart the scan", || {
        let starts = fake_log(&fake_log_path).iter().filter(|e| e["call"] == "StartDiscovery").count();
        (starts >= 2).then_some(())
    })
    .await;
    // A phone first heard after the restart is uploaded too.
    let attendance = attendance_until(&server, &event, Duration::from_secs(30), |a| a.contains_key(late)).await;
    assert!(attendance.contains_key(late), "heard after the restart: {}", home.log_text("scanner.log"));
    // The strongest of each phone's advertisements is the best RSSI, so each
    // advertisement's own RSSI was used.
    let best = |a: &std::collections::BTreeMap<String, Value>| {
        [beacon, service, in_data, late].map(|u| a[u]["bestRssi"].as_i64().unwrap_or_default())
    };
    let attendance =
        attendance_until(&server, &event, Duration::from_secs(10), |a| best(a) == [-58, -61, -72, -63]).await;
    assert_eq!(best(&attendance), [-58, -61, -72, -63]);
    let calls = fake_log(&fake_log_path);
    let filter = calls.iter().find(|e| e["call"] == "SetDiscoveryFilter").expect("a discovery filter was set");
    assert_eq!(filter["filter"]["DuplicateData"], true, "duplicates allowed: {filter}");
    assert!(calls.iter().any(|e| e["call"] == "StopDiscovery"), "the stalled scan was stopped first");
    assert!(home.log_text("scanner.log").contains("BLE scan restarting: no BLE event for 2 s"));
    // Every scan came over the same D-Bus connection, and the bus has no more
    // connections than at the first: a restart opens none.
    let starts: Vec<&Value> = calls.iter().filter(|e| e["call"] == "StartDiscovery").collect();
    assert!(starts.len() >= 2 && starts.iter().all(|e| e["sender"] == starts[0]["sender"]), "{starts:?}");
    assert!(starts.iter().all(|e| e["connections"] == starts[0]["connections"]), "{starts:?}");

    // SIGTERM is a clean stop.
    let pid = scanner.0.as_ref().unwrap().id();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let status = scanner.wait_for_exit(Duration::from_secs(20));
    assert!(status.success(), "{}", home.log_text("scanner.log"));
    // The faint phone was heard, and dropped by the scanner's own filter (its
    // event's minRssi of -100 would have counted it).
    let below: u64 = home
        .log_text("scanner.log")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "status")
        .filter_map(|v| v["fields"]["below_min_rssi"].as_u64())
        .max()
        .unwrap_or_default();
    assert!(below >= 10, "the faint phone's 10 advertisements of the first scan, at least: {below}");
    let attendance = server.attendance(&event).await;
    assert!(!attendance.contains_key(faint), "the faint phone was filtered out");
    assert_eq!(attendance.len(), 4);

    // BlueZ goes away for good: a few sessions fail, then the scanner gives up
    // (non-zero, so systemd starts a fresh process) rather than looping.
    drop(fake);
    let mut scanner =
        spawn_ble_scanner(&home, &server.base, &bus, "gone.log", &["--watchdog-secs", "1", "--ble-give-up-after", "2"]);
    let status = scanner.wait_for_exit(Duration::from_secs(60));
    let log = home.log_text("gone.log");
    assert!(!status.success(), "{log}");
    assert!(log.contains("giving up on Bluetooth after 2 scan sessions in a row"), "{log}");
}
