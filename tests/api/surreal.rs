//! A real SurrealDB server (`tools/surreal`, built by `cargo build -p
//! rollcall-surreal`) as a child process, for the tests that run Rollcall
//! over `ws://`.
//!
//! Each [`SurrealServer`] listens on a free port of its own, with a root user
//! the tests use only to prepare a database; Rollcall itself signs in as a
//! user defined `ON DATABASE`, as the README tells operators to. The process
//! is killed when the handle drops.
//!
//! `ROLLCALL_TEST_DB=ws` makes [`crate::helpers::spawn_app`] (and the
//! persistence test) run on such a server instead of `mem://`; CI runs the
//! ingest, live, API-key and persistence tests a second time that way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rollcall::config::DbArgs;
use rollcall::store::DbAuthLevel;

const ROOT_USER: &str = "root";
const ROOT_PASS: &str = "root-test-password";
/// `SURREAL_WEBSOCKET_RESPONSE_CHANNEL_SIZE`, as the README recommends.
const NOTIFICATION_QUEUE: &str = "16384";
/// The database-scoped user Rollcall signs in as, in every test database.
pub const APP_USER: &str = "rollcall";
pub const APP_PASS: &str = "app-test-password";

/// Whether `ROLLCALL_TEST_DB=ws` asks for the tests to run on a server.
pub fn wanted() -> bool {
    std::env::var("ROLLCALL_TEST_DB").is_ok_and(|v| v == "ws")
}

/// The `surreal` binary: `ROLLCALL_SURREAL_BIN`, else the workspace's debug build.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ROLLCALL_SURREAL_BIN") {
        return path.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("debug").join("surreal")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A SurrealDB server process; killed on drop.
pub struct SurrealServer {
    child: Option<Child>,
    port: u16,
    /// `memory`, or `surrealkv://DIR` for a server whose data outlives it.
    storage: String,
}

impl SurrealServer {
    /// A server on an in-memory store.
    pub async fn memory() -> Self {
        Self::start(free_port(), "memory".to_owned()).await
    }

    /// A server on a SurrealKV store in `dir`, so that it can be killed and
    /// started again on the same data.
    pub async fn on_disk(dir: &Path) -> Self {
        Self::start(free_port(), format!("surrealkv://{}", dir.display())).await
    }

    async fn start(port: u16, storage: String) -> Self {
        let mut server = Self { child: None, port, storage };
        server.restart().await;
        server
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and storage; waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill();
        let bin = binary();
        assert!(bin.exists(), "{} is missing: run `cargo build -p rollcall-surreal` first", bin.display());
        let child = Command::new(&bin)
            .args(["start", "--no-banner", "--log", "warn", "--bind"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--user", ROOT_USER, "--pass", ROOT_PASS])
            .arg(&self.storage)
            // As the README tells operators: the server closes a connection
            // whose notifications queue past this (100 by default), and one
            // batch may create thousands of check-ins at once.
            .env("SURREAL_WEBSOCKET_RESPONSE_CHANNEL_SIZE", NOTIFICATION_QUEUE)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("surreal starts");
        self.child = Some(child);
        let client = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{}/ready", self.port);
        for _ in 0..600 {
            if let Ok(r) = client.get(&ready).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("surreal exited before it was ready: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("surreal did not become ready on port {} in 30 s", self.port);
    }

    /// A client signed in as root, with no namespace selected.
    pub async fn root(&self) -> surrealdb::Surreal<surrealdb::engine::any::Any> {
        let db = surrealdb::engine::any::connect(self.url()).await.expect("root connects");
        db.signin(surrealdb::opt::auth::Root { username: ROOT_USER.into(), password: ROOT_PASS.into() })
            .await
            .expect("root signs in");
        db
    }

    /// Defines database `name` with the app's database-scoped user (as
    /// root, as an operator would once) and returns Rollcall's settings for it.
    pub async fn database(&self, name: &str) -> DbArgs {
        self.root()
            .await
            .query(format!(
                "DEFINE NAMESPACE IF NOT EXISTS rollcall; USE NS rollcall;
             DEFINE DATABASE IF NOT EXISTS {name}; USE DB {name};
             DEFINE USER IF NOT EXISTS {APP_USER} ON DATABASE PASSWORD '{APP_PASS}' ROLES OWNER;"
            ))
            .await
            .expect("database defined")
            .check()
            .expect("database defined");
        DbArgs {
            url: self.url(),
            db_namespace: "rollcall".into(),
            db_database: name.to_owned(),
            db_user: Some(APP_USER.into()),
            db_password: Some(APP_PASS.into()),
            db_auth: DbAuthLevel::Database,
            ..DbArgs::memory()
        }
    }
}

impl Drop for SurrealServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `rollcall serve` flags (beyond `--db`) that select `args`'s database and user.
pub fn cli_args(args: &DbArgs) -> Vec<String> {
    let mut out = vec!["--db".to_owned(), args.url.clone()];
    out.extend(["--db-namespace".to_owned(), args.db_namespace.clone()]);
    out.extend(["--db-database".to_owned(), args.db_database.clone()]);
    if let (Some(user), Some(pass)) = (&args.db_user, &args.db_password) {
        out.extend(["--db-user".to_owned(), user.clone(), "--db-password".to_owned(), pass.clone()]);
    }
    out
}
