//! Starting the real server and the real scanner as children, and typed helpers for
//! the GraphQL calls the tests make.
//!
//! The server binary is `ROLLCALL_SERVER_BIN` if set, else the `rollcall` binary that
//! `cargo test --workspace` builds next to this test's directory (`target/debug/`).
//! This crate does not depend on the server crate, so nothing else builds it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery";

/// The `rollcall` server binary.
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ROLLCALL_SERVER_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/e2e-HASH → target/debug/rollcall
    let exe = std::env::current_exe().expect("current exe");
    let candidate = exe.parent().and_then(Path::parent).map(|d| d.join("rollcall"));
    match candidate {
        Some(p) if p.exists() => p,
        _ => panic!(
            "the `rollcall` server binary was not found next to {}: run `cargo build -p rollcall` first \
             (or `cargo test --workspace`, which builds it), or set ROLLCALL_SERVER_BIN",
            exe.display()
        ),
    }
}

/// The scanner binary under test.
pub fn scanner_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rollcall-scanner")
}

/// A child process that is killed when dropped, so no test leaves one behind.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.0.as_mut().is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// Waits for the child to exit by itself, at most `limit`.
    pub fn wait_for_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.0.as_mut().expect("running");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.0 = None;
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "the child did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The real server on an on-disk SurrealKV store in a temp dir, with an admin.
pub struct Server {
    pub child: ChildGuard,
    pub port: u16,
    pub base: String,
    pub db: String,
    pub admin: String,
    pub http: reqwest::Client,
    /// Extra environment for `rollcall serve` (limits).
    env: Vec<(String, String)>,
    _dir: TempDir,
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with_env(&[]).await
    }

    /// [`Self::start`] with extra environment for `rollcall serve`, e.g. `ROLLCALL_MAX_BODY_BYTES`.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("surrealkv://{}", dir.path().join("data").display());
        // An admin, made with the CLI on the same store before the server opens it.
        let mut admin = Command::new(server_bin())
            .args([
                "admin",
                "create",
                "--email",
                "admin@example.org",
                "--name",
                "Admin",
                "--password-stdin",
                "--db",
                &db,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rollcall admin create starts");
        {
            use std::io::Write as _;
            admin.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
        }
        let out = admin.wait_with_output().unwrap();
        assert!(out.status.success(), "admin create: {}", String::from_utf8_lossy(&out.stderr));

        let port = free_port();
        let mut server = Self {
            child: ChildGuard(None),
            port,
            base: format!("http://127.0.0.1:{port}"),
            db,
            admin: String::new(),
            http: reqwest::Client::new(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            _dir: dir,
        };
        server.up().await;
        let data = server
            .gql(
                None,
                "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }",
                json!({ "e": "admin@example.org", "p": PASSWORD }),
            )
            .await;
        server.admin = format!("Bearer {}", data["logIn"]["token"].as_str().unwrap());
        server
    }

    /// Starts the server process (again) on the same port and store; waits until ready.
    pub async fn up(&mut self) {
        assert!(self.child.0.is_none(), "already running");
        let child = Command::new(server_bin())
            .args(["serve", "--bind", &format!("127.0.0.1:{}", self.port), "--db", &self.db])
            .env_remove("ROLLCALL_JWT_SECRET")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rollcall serve starts");
        self.child = ChildGuard(Some(child));
        for _ in 0..600 {
            if let Ok(r) = self.http.get(format!("{}/ready", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("rollcall serve did not become ready on port {}", self.port);
    }

    /// Stops the server (SIGKILL: a crash, or a cable pulled).
    pub fn down(&mut self) {
        self.child.kill9();
    }

    /// POSTs an operation that must succeed; returns `data`.
    pub async fn gql(&self, auth: Option<&str>, query: &str, variables: Value) -> Value {
        let mut req =
            self.http.post(format!("{}/graphql", self.base)).json(&json!({ "query": query, "variables": variables }));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let body: Value = req.send().await.expect("sent").json().await.expect("JSON");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    pub async fn admin_gql(&self, query: &str, variables: Value) -> Value {
        self.gql(Some(&self.admin.clone()), query, variables).await
    }

    /// An active event over [starts, ends] (RFC 3339); returns its id.
    pub async fn active_event(&self, name: &str, starts: &str, ends: &str) -> String {
        self.active_event_with_policy(name, starts, ends, Value::Null).await
    }

    /// [`Self::active_event`] with an attendance policy (`AttendancePolicyInput`).
    pub async fn active_event_with_policy(&self, name: &str, starts: &str, ends: &str, policy: Value) -> String {
        let data = self
            .admin_gql(
                "mutation($i: CreateEventInput!) { createEvent(input: $i) { id } }",
                json!({ "i": { "name": name, "startsAt": starts, "endsAt": ends, "policy": policy } }),
            )
            .await;
        let id = data["createEvent"]["id"].as_str().unwrap().to_owned();
        self.admin_gql("mutation($id: ID!) { activateEvent(id: $id) { state } }", json!({ "id": id })).await;
        id
    }

    /// A user with `ble_uuid`, registered for `event`; returns the user id.
    pub async fn attendee(&self, email: &str, ble_uuid: &str, event: &str) -> String {
        let data = self
            .admin_gql(
                "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
                json!({ "i": { "email": email, "name": email, "bleUuid": ble_uuid } }),
            )
            .await;
        let id = data["createUser"]["id"].as_str().unwrap().to_owned();
        self.admin_gql(
            "mutation($e: ID!, $u: ID) { registerForEvent(eventId: $e, userId: $u) { status } }",
            json!({ "e": event, "u": id }),
        )
        .await;
        id
    }

    /// An API key scoped to `event`; returns the secret.
    pub async fn api_key(&self, event: &str) -> String {
        let data = self
            .admin_gql(
                "mutation($s: [ID!]) { createApiKey(name: \"test scanner\", scopes: $s) { secret } }",
                json!({ "s": [event] }),
            )
            .await;
        data["createApiKey"]["secret"].as_str().unwrap().to_owned()
    }

    /// The event's attendance rows, by the user's BLE UUID.
    pub async fn attendance(&self, event: &str) -> std::collections::BTreeMap<String, Value> {
        let data = self
            .admin_gql(
                "query($e: ID!) { attendance(eventId: $e, first: 500) { edges { node {
                    user { bleUuid } checkedInAt firstSeen lastSeen stays { from to } sightings bestRssi } } } }",
                json!({ "e": event }),
            )
            .await;
        data["attendance"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["node"]["user"]["bleUuid"].as_str().unwrap().to_owned(), e["node"].clone()))
            .collect()
    }

    /// The (only) API key's server-side view: last batch, unknown devices, heartbeat.
    pub async fn key_info(&self) -> Value {
        let data = self
            .admin_gql(
                "{ apiKeys { lastBatchId unknownDevices heartbeat { version outboxDepth lastUploadAt } } }",
                json!({}),
            )
            .await;
        data["apiKeys"][0].clone()
    }
}

/// A scanner's data dir, key file and log file.
pub struct ScannerHome {
    pub dir: TempDir,
}

impl ScannerHome {
    pub fn new(api_key: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-key"), format!("{api_key}\n")).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The arguments of `rollcall-scanner run` against `server` with `extra` args, logging JSON.
    pub fn run_args(&self, server: &str, source: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["--data-dir", self.path("data").to_str().unwrap(), "--log-format", "json", "run"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let key = self.path("api-key");
        args.extend(
            ["--server", server, "--api-key-file", key.to_str().unwrap(), "--source", source].map(String::from),
        );
        args.extend(
            ["--heartbeat-secs", "1", "--events-refresh-secs", "1", "--backoff-max-secs", "1"].map(String::from),
        );
        // Every identifier, so what a test uploads does not depend on when the
        // registered list arrives; `registered.rs` passes `--record registered`.
        args.extend(["--record", "all"].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// `rollcall-scanner run` against `server` with `extra` args, logging JSON to `log`.
    pub fn spawn_run(&self, server: &str, source: &str, extra: &[&str], log: &str) -> ChildGuard {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path(log)).unwrap();
        let child = Command::new(scanner_bin())
            .args(self.run_args(server, source, extra))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("rollcall-scanner starts");
        ChildGuard(Some(child))
    }

    /// Like [`Self::spawn_run`], but the scanner's standard error goes through a pipe
    /// that a thread copies to `log`, so that limits set on the scanner's own writes
    /// (`prlimit --fsize`) do not cut its log short; `wrap` runs it (e.g. under
    /// `sh -c` to set a signal disposition, or `faketime`), with `env` added.
    pub fn spawn_run_piped(
        &self,
        wrap: &[&str],
        env: &[(&str, &str)],
        server: &str,
        source: &str,
        extra: &[&str],
        log: &str,
    ) -> ChildGuard {
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(self.path(log)).unwrap();
        let (program, rest) = wrap.split_first().map_or((scanner_bin(), &[][..]), |(p, r)| (*p, r));
        let mut command = Command::new(program);
        command.args(rest);
        if !wrap.is_empty() {
            command.arg(scanner_bin());
        }
        let mut child = command
            .args(self.run_args(server, source, extra))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rollcall-scanner starts");
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut err, &mut log));
        ChildGuard(Some(child))
    }

    /// `rollcall-scanner --data-dir <data> ARGS`, to completion.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(scanner_bin())
            .args(["--data-dir", self.path("data").to_str().unwrap()])
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .unwrap()
    }

    /// `rollcall-scanner flush --server SERVER --api-key-file <key> EXTRA`.
    pub fn flush(&self, server: &str, extra: &[&str]) -> std::process::Output {
        let key = self.path("api-key");
        let mut args = vec!["flush", "--server", server, "--api-key-file", key.to_str().unwrap()];
        args.extend(extra);
        self.cli(&args)
    }

    /// `rollcall-scanner status --json`.
    pub fn status(&self) -> Value {
        let out = Command::new(scanner_bin())
            .args(["--data-dir", self.path("data").to_str().unwrap(), "status", "--json"])
            .output()
            .expect("status runs");
        assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// The `uploaded` log records (one per acknowledged batch), from a JSON log file.
    pub fn uploads(&self, log: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path(log)).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "uploaded")
            .map(|v| v["fields"].clone())
            .collect()
    }

    pub fn log_text(&self, log: &str) -> String {
        std::fs::read_to_string(self.path(log)).unwrap_or_default()
    }
}

/// Sums a numeric field over upload records.
pub fn sum(uploads: &[Value], field: &str) -> u64 {
    uploads.iter().map(|u| u[field].as_u64().unwrap_or_else(|| panic!("{field} in {u}"))).sum()
}

/// Polls the event's attendance every 100 ms until `done` holds, at most `limit`;
/// returns the last one read either way (the caller asserts on it).
pub async fn attendance_until(
    server: &Server,
    event: &str,
    limit: Duration,
    done: impl Fn(&std::collections::BTreeMap<String, Value>) -> bool,
) -> std::collections::BTreeMap<String, Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let attendance = server.attendance(event).await;
        if done(&attendance) || tokio::time::Instant::now() >= deadline {
            return attendance;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` every 100 ms until it returns `Some`, at most `limit`.
pub async fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// RFC 3339 (ms) of Unix ms.
pub fn iso(ms: i64) -> String {
    rollcall_scanner::sighting::rfc3339_ms(ms)
}

/// Unix ms of RFC 3339.
pub fn ms(s: &str) -> i64 {
    rollcall_scanner::sighting::parse_rfc3339_ms(s).unwrap_or_else(|| panic!("RFC 3339: {s}"))
}

/// A `[{from, to}]` list (attendance stays, or the simulation's truth) as Unix ms pairs.
pub fn stays(list: &Value) -> Vec<(i64, i64)> {
    list.as_array()
        .expect("a list of stays")
        .iter()
        .map(|s| (ms(s["from"].as_str().unwrap()), ms(s["to"].as_str().unwrap())))
        .collect()
}
