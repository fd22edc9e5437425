//! The installer's tools, through the real binary: `doctor` on a healthy scanner
//! and on a broken one, and `listen` against the fake BlueZ.

use std::process::Command;

use serde_json::json;

use crate::ble::{DbusDaemon, start_fake_bluez};
use crate::helpers::*;

fn doctor(home: &ScannerHome, bus: &DbusDaemon, server: &str) -> (bool, String) {
    let out = Command::new(scanner_bin())
        .args(["--data-dir", home.path("data").to_str().unwrap(), "doctor", "--scan-secs", "2"])
        .args(["--server", server, "--api-key-file", home.path("api-key").to_str().unwrap()])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn doctor_says_what_works_and_what_to_fix() {
    let server = Server::start().await;
    let now = rollcall_scanner::sighting::now_ms();
    let event = server.active_event("Doctor", &iso(now - 3_600_000), &iso(now + 3_600_000)).await;
    let home = ScannerHome::new(&server.api_key(&event).await);
    let phone = "d0c70000-0000-4000-8000-000000000001";
    std::fs::write(
        home.path("phones.json"),
        json!([{ "address": "5C:F3:70:11:22:09", "rssi": [-58, -61], "uuids": [phone] }]).to_string(),
    )
    .unwrap();
    let bus = DbusDaemon::start();
    let fake = start_fake_bluez(&home, &bus, 1_000).await;

    let (ok, text) = doctor(&home, &bus, &server.base);
    println!("{text}");
    assert!(ok, "{text}");
    for line in ["ok   disk", "ok   outbox", "ok   clock", "ok   server", "ok   bluetooth", "ok   scan"] {
        assert!(text.contains(line), "{line}: {text}");
    }
    assert!(text.contains("ok   key        accepted; active events in its scope: Doctor"), "{text}");
    assert!(text.contains("from 1 devices") && text.contains("(repeats reported)"), "{text}");

    // `listen` shows the phone with its RSSI.
    let out = Command::new(scanner_bin())
        .args(["listen", "--secs", "2", "--min-rssi", "-60"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    assert!(out.status.success(), "{table}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("identifier") && table.contains("1 identifiers heard"), "{table}");
    let row = table.lines().rev().find(|l| l.starts_with(phone)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("-58"), "the best RSSI: {row}");

    // Broken: a revoked-looking key, a damaged outbox, BlueZ gone.
    drop(fake);
    std::fs::write(home.path("api-key"), "rck_not_a_real_key\n").unwrap();
    std::fs::create_dir_all(home.path("data")).unwrap();
    std::fs::write(home.path("data/outbox.sqlite3"), vec![0x42; 8192]).unwrap();
    let (ok, text) = doctor(&home, &bus, &server.base);
    println!("{text}");
    assert!(!ok, "{text}");
    assert!(text.contains("FAIL key        refused"), "{text}");
    assert!(text.contains("FAIL outbox     damaged") && text.contains("moves it aside"), "{text}");
    assert!(text.contains("FAIL bluetooth") && text.contains("is bluetoothd running?"), "{text}");
    assert!(text.contains("skip scan"), "{text}");
    assert!(home.path("data/outbox.sqlite3").exists(), "doctor changes nothing");
}
