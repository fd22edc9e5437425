//! The built `surreal` starts, answers `/ready`, and is the version the
//! `surrealdb` client is. (Also: because this package has an integration
//! test, `cargo test --workspace` builds `target/debug/surreal` before any
//! test runs, for the server's tests in `tests/api/`.)

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_surreal");

#[test]
fn reports_the_client_s_version() {
    let out = Command::new(BIN).arg("version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.lines().any(|l| l.starts_with("3.3.5 ")), "{text}");
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    Some(reply)
}

#[test]
fn starts_in_memory_and_becomes_ready() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(BIN)
        .args(["start", "--no-banner", "--log", "warn", "--user", "root", "--pass", "secret", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("memory")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        if let Some(reply) = get(port, "/ready")
            && reply.split_whitespace().nth(1) == Some("200")
        {
            break true;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ready, "surreal did not answer /ready within 30 s");
}
