//! `spawn_app()` starts the real application on a fresh in-memory database
//! (or, with `ROLLCALL_TEST_DB=ws`, on a SurrealDB server of its own; see
//! `surreal.rs`) and returns a client with typed helpers for the calls the
//! tests make.

use std::net::SocketAddr;

use rollcall::config::{DbArgs, ServeArgs};
use rollcall::domain::{Email, Password, PersonName, Role};
use rollcall::startup::Application;
use rollcall::state::AppState;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::surreal::{self, SurrealServer};

pub const PASSWORD: &str = "correct horse battery";

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Bearer(String),
    /// `Authorization: ApiKey <key>`.
    ApiKey(String),
    /// `x-api-key: <key>`.
    XApiKey(String),
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub state: AppState,
    _shutdown: oneshot::Sender<()>,
    /// The SurrealDB server under a `ROLLCALL_TEST_DB=ws` run; outlives the app.
    _db: Option<SurrealServer>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(ServeArgs::for_tests(DbArgs::memory())).await
}

pub async fn spawn_with(mut args: ServeArgs) -> TestApp {
    let mut db = None;
    if args.db.url == "mem://" && surreal::wanted() {
        let server = SurrealServer::memory().await;
        args.db = server.database("tests").await;
        db = Some(server);
    }
    let app = Application::build(args).await.expect("application builds");
    let addr = app.local_addr();
    let state = app.state().clone();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp { addr, http: reqwest::Client::new(), state, _shutdown: tx, _db: db }
}

/// A signed-in user: their token and id.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: String,
    pub id: String,
}

impl Session {
    pub fn auth(&self) -> Auth {
        Auth::Bearer(self.token.clone())
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn authed(&self, mut req: reqwest::RequestBuilder, auth: &Auth) -> reqwest::RequestBuilder {
        req = match auth {
            Auth::None => req,
            Auth::Bearer(t) => req.header("authorization", format!("Bearer {t}")),
            Auth::ApiKey(k) => req.header("authorization", format!("ApiKey {k}")),
            Auth::XApiKey(k) => req.header("x-api-key", k),
        };
        req
    }

    /// POSTs an operation; returns the HTTP status and the JSON body.
    pub async fn post_gql(&self, auth: &Auth, query: &str, variables: Value) -> (u16, Value) {
        let req = self.http.post(self.url("/graphql")).json(&json!({ "query": query, "variables": variables }));
        let resp = self.authed(req, auth).send().await.expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON body"))
    }

    /// POSTs an operation that must succeed; returns `data`.
    pub async fn ok(&self, auth: &Auth, query: &str, variables: Value) -> Value {
        let (status, body) = self.post_gql(auth, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors (HTTP {status}): {body}");
        assert_eq!(status, 200);
        body["data"].clone()
    }

    /// Runs an operation until `done` holds of its `data`, for up to 5 s: for
    /// bookkeeping the server writes off the request's path (`lastUsedAt`).
    pub async fn ok_eventually(
        &self,
        auth: &Auth,
        query: &str,
        variables: Value,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let data = self.ok(auth, query, variables.clone()).await;
            if done(&data) || std::time::Instant::now() > deadline {
                return data;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// POSTs an operation that must fail; returns the first error's code.
    pub async fn err(&self, auth: &Auth, query: &str, variables: Value) -> String {
        let (_, body) = self.post_gql(auth, query, variables).await;
        code(&body).unwrap_or_else(|| panic!("expected an error, got {body}"))
    }

    pub async fn sign_up(&self, email: &str, name: &str) -> Session {
        let data = self
            .ok(
                &Auth::None,
                "mutation($e: String!, $n: String!, $p: String!) { signUp(email: $e, name: $n, password: $p) { token user { id } } }",
                json!({ "e": email, "n": name, "p": PASSWORD }),
            )
            .await;
        Session {
            token: data["signUp"]["token"].as_str().expect("token").to_owned(),
            id: data["signUp"]["user"]["id"].as_str().expect("id").to_owned(),
        }
    }

    /// A user with `role`, created directly in the store (as `admin create` does).
    pub async fn user_with_role(&self, email: &str, role: Role) -> Session {
        let user = rollcall::accounts::create_account(
            &self.state.store,
            Email::parse(email).expect("email"),
            PersonName::parse("Test User").expect("name"),
            role,
            Some(Password::parse(PASSWORD).expect("password")),
            None,
        )
        .await
        .expect("account created");
        let (token, _) = self.state.jwt.issue(user.id, role, user.token_version).expect("token");
        Session { token, id: user.id.to_string() }
    }

    pub async fn admin(&self) -> Session {
        self.user_with_role("admin@example.org", Role::Admin).await
    }

    pub async fn organizer(&self, email: &str) -> Session {
        self.user_with_role(email, Role::Organizer).await
    }

    /// Creates an event as `who`, one hour from now for two hours; returns its id.
    pub async fn create_event(&self, who: &Session, name: &str) -> String {
        let data = self
            .ok(
                &who.auth(),
                "mutation($i: CreateEventInput!) { createEvent(input: $i) { id } }",
                json!({ "i": {
                    "name": name,
                    "startsAt": "2030-05-01T09:00:00Z",
                    "endsAt": "2030-05-01T17:00:00Z",
                } }),
            )
            .await;
        data["createEvent"]["id"].as_str().expect("event id").to_owned()
    }

    pub async fn activate(&self, who: &Session, event: &str) {
        self.ok(&who.auth(), "mutation($id: ID!) { activateEvent(id: $id) { state } }", json!({ "id": event })).await;
    }

    /// Creates an API key as `who`; returns (key id, secret).
    pub async fn api_key(&self, who: &Session, name: &str, scopes: Option<Vec<&str>>) -> (String, String) {
        let data = self
            .ok(
                &who.auth(),
                "mutation($n: String!, $s: [ID!]) { createApiKey(name: $n, scopes: $s) { secret apiKey { id } } }",
                json!({ "n": name, "s": scopes }),
            )
            .await;
        (
            data["createApiKey"]["apiKey"]["id"].as_str().expect("key id").to_owned(),
            data["createApiKey"]["secret"].as_str().expect("secret").to_owned(),
        )
    }
}

/// The `extensions.code` of the first error in a response body.
pub fn code(body: &Value) -> Option<String> {
    body["errors"][0]["extensions"]["code"].as_str().map(str::to_owned)
}

/// The real `rollcall` binary, run as a child process.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub base: String,
}

/// Runs `rollcall ARGS` to completion with `stdin`; returns (success, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rollcall starts");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin written");
    let out = child.wait_with_output().expect("rollcall runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl ServerProcess {
    /// Starts `rollcall serve` on a free port with `db`, and waits until it is healthy.
    pub async fn start(db: &str) -> Self {
        Self::start_with(&["--db".to_owned(), db.to_owned()], std::process::Stdio::null()).await
    }

    /// Starts `rollcall serve` on a free port on `db` (a server's database
    /// and user included), and waits until it is healthy.
    pub async fn start_on(db: &DbArgs) -> Self {
        Self::start_with(&surreal::cli_args(db), std::process::Stdio::null()).await
    }

    /// As [`ServerProcess::start_on`], with more `serve` flags.
    pub async fn start_with_flags(db: &DbArgs, flags: &[&str]) -> Self {
        let mut args = surreal::cli_args(db);
        args.extend(flags.iter().map(|f| f.to_string()));
        Self::start_with(&args, std::process::Stdio::null()).await
    }

    /// As [`ServerProcess::start`], with the server's log (stderr) written to `log`.
    pub async fn start_logging(db: &str, log: &std::path::Path) -> Self {
        let log = std::fs::File::create(log).expect("log file");
        Self::start_with(&["--db".to_owned(), db.to_owned()], log.into()).await
    }

    async fn start_with(db_args: &[String], stderr: std::process::Stdio) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(db_args)
            .env_remove("ROLLCALL_JWT_SECRET")
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("rollcall serve starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = client.get(format!("{base}/ready")).send().await
                && r.status().is_success()
            {
                return Self { child, base };
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("rollcall serve did not become ready on port {port}");
    }

    /// POSTs an operation that must succeed; returns `data`.
    pub async fn ok(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut req = reqwest::Client::new()
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            req = req.header("authorization", t);
        }
        let body: Value = req.send().await.expect("sent").json().await.expect("JSON");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// The server process's id, to read its memory from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The value of an unlabelled gauge or counter on `/metrics`, if shown.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.base)).await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("killed");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success());
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("rollcall did not stop within 10 s of SIGTERM");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
