//! Command-line and environment configuration. Every flag has a
//! `ROLLCALL_*` environment variable; secrets are never printed (not even in
//! `--help`'s "env" hints).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::store::{DEFAULT_DB_URL, DbAuthLevel, EmbeddedMemory, StoreOptions};

/// Rollcall: automatic event attendance over Bluetooth LE.
#[derive(Debug, Parser)]
#[command(name = "rollcall", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, env = "ROLLCALL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (GraphQL API, playground, health and metrics).
    Serve(Box<ServeArgs>),
    /// Print the GraphQL schema (SDL) to standard output.
    Schema,
    /// Manage administrator accounts.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Manage scanner API keys.
    #[command(subcommand, name = "apikey")]
    ApiKey(ApiKeyCommand),
    /// Import data from files.
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an ADMIN account (reads the password from standard input).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// Read the password from the first line of standard input. Required,
        /// so that it never appears in shell history or `ps`.
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print its secret (shown this once only).
    Create {
        /// A name to recognise the scanner by, e.g. "north door".
        #[arg(long)]
        name: String,
        /// An event id the key may report for; repeat for several. Without
        /// any, the key covers every event.
        #[arg(long = "scope", value_name = "EVENT_ID")]
        scopes: Vec<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a key by id.
    Revoke {
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import attendees from a CSV file with rows `email,name[,bleUuid][,eventId]`.
    ///
    /// A header row is recognised and skipped. Existing e-mails are left as
    /// they are (re-running an import is harmless); rows with an event id are
    /// registered for that event, and one person may have a row per event.
    /// Bad rows are reported with their line number and skipped. The
    /// console's import page applies the same rules through the API.
    Users {
        file: PathBuf,
        /// Register every imported user for this event (overrides the column).
        #[arg(long, value_name = "EVENT_ID")]
        event: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// Where the database is. Shared by every command that touches it, so an
/// operator can run `admin` and `apikey` against the server's data.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Database URL: `surrealkv://PATH` (embedded, on disk), `mem://`,
    /// or `ws://HOST:PORT` (a SurrealDB server).
    #[arg(long = "db", env = "ROLLCALL_DB", default_value = DEFAULT_DB_URL)]
    pub url: String,
    /// SurrealDB namespace.
    #[arg(long, env = "ROLLCALL_DB_NAMESPACE", default_value = "rollcall")]
    pub db_namespace: String,
    /// SurrealDB database name.
    #[arg(long, env = "ROLLCALL_DB_DATABASE", default_value = "rollcall")]
    pub db_database: String,
    /// User for a SurrealDB server (`ws://`); see `--db-auth` for its level.
    #[arg(long, env = "ROLLCALL_DB_USER")]
    pub db_user: Option<String>,
    /// Password for `--db-user`.
    #[arg(long, env = "ROLLCALL_DB_PASSWORD", hide_env_values = true)]
    pub db_password: Option<String>,
    /// Where `--db-user` is defined: `database` (a user defined `ON
    /// DATABASE`, the least privilege Rollcall needs), `namespace` or `root`.
    #[arg(long, env = "ROLLCALL_DB_AUTH", value_enum, default_value_t = DbAuthLevel::Database)]
    pub db_auth: DbAuthLevel,
    /// Embedded store only: the write buffer, in MiB. Writes collect in
    /// memory until this much is there, then go to disk; the process's
    /// memory rises by up to this much between flushes. (SurrealDB's own
    /// default is sized from the RAM: 1 GiB on a 16-64 GiB machine.)
    #[arg(long, env = "ROLLCALL_DB_MEMTABLE_MB", value_name = "MIB",
          default_value_t = EmbeddedMemory::DEFAULT_MEMTABLE_MIB,
          value_parser = clap::value_parser!(u64).range(EmbeddedMemory::MIN_MEMTABLE_MIB..=65_536))]
    pub db_memtable_mb: u64,
    /// Embedded store only: the cache of blocks read from disk, in MiB.
    /// (SurrealDB's own default is half the RAM less 1 GiB.)
    #[arg(long, env = "ROLLCALL_DB_CACHE_MB", value_name = "MIB",
          default_value_t = EmbeddedMemory::DEFAULT_BLOCK_CACHE_MIB,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub db_cache_mb: u64,
}

impl DbArgs {
    /// Connection settings for [`crate::store::SurrealStore::open`].
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            namespace: self.db_namespace.clone(),
            database: self.db_database.clone(),
            username: self.db_user.clone(),
            password: self.db_password.clone(),
            auth_level: self.db_auth,
            memory: EmbeddedMemory::mib(self.db_memtable_mb, self.db_cache_mb),
        }
    }

    /// An in-memory database; for tests.
    pub fn memory() -> Self {
        Self {
            url: "mem://".into(),
            db_namespace: "rollcall".into(),
            db_database: "rollcall".into(),
            db_user: None,
            db_password: None,
            db_auth: DbAuthLevel::Database,
            db_memtable_mb: EmbeddedMemory::DEFAULT_MEMTABLE_MIB,
            db_cache_mb: EmbeddedMemory::DEFAULT_BLOCK_CACHE_MIB,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. Use 0.0.0.0:4000 to accept other machines.
    #[arg(long, env = "ROLLCALL_BIND", default_value = "127.0.0.1:4000")]
    pub bind: SocketAddr,
    #[command(flatten)]
    pub db: DbArgs,
    /// Secret for signing login tokens (HS256), at least 32 bytes. Without
    /// it, one is generated on first start and kept in the database.
    #[arg(long, env = "ROLLCALL_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// A secret that signed tokens before `--jwt-secret` replaced it: tokens
    /// it signed are still accepted until they expire, so a rotation logs
    /// nobody out. New tokens are signed with `--jwt-secret` only; drop this
    /// once `--jwt-ttl-hours` have passed.
    #[arg(long, env = "ROLLCALL_JWT_PREVIOUS_SECRET", hide_env_values = true, requires = "jwt_secret")]
    pub jwt_previous_secret: Option<String>,
    /// How long login tokens stay valid, in hours.
    #[arg(long, env = "ROLLCALL_JWT_TTL_HOURS", default_value_t = 12)]
    pub jwt_ttl_hours: i64,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub live: LiveLimits,
    #[command(flatten)]
    pub web: WebArgs,
    /// Seconds to let in-flight requests finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "ROLLCALL_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    /// Length of a rotating beacon identifier's time slot, in seconds
    /// (docs/identity.md); phones learn it from `me { beacon { slotSeconds } }`.
    #[arg(long, env = "ROLLCALL_BEACON_SLOT_SECS", default_value_t = crate::domain::identity::DEFAULT_SLOT_SECS,
          value_parser = clap::value_parser!(i64).range(10..=86_400))]
    pub beacon_slot_secs: i64,
    /// How long a changed attendance row (last seen, stays) may wait in
    /// memory before it is written, in milliseconds; 0 writes it with its
    /// batch. Batches' raw records and check-ins are always written before
    /// the batch is answered, and reads through this server see every
    /// acknowledged batch. With several instances over one database, the
    /// one holding the rows' lease holds them back; reads through another
    /// see a changed row up to about this much later.
    #[arg(long, env = "ROLLCALL_ROW_FLUSH_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub row_flush_ms: u64,
}

impl ServeArgs {
    /// How long a changed attendance row may wait (`None`: not at all).
    pub fn row_flush(&self) -> Option<std::time::Duration> {
        (self.row_flush_ms > 0).then(|| std::time::Duration::from_millis(self.row_flush_ms))
    }

    /// Defaults with `db` as the database and an ephemeral port; for tests.
    pub fn for_tests(db: DbArgs) -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            db,
            jwt_secret: None,
            jwt_previous_secret: None,
            jwt_ttl_hours: 12,
            limits: Limits::default(),
            live: LiveLimits::default(),
            web: WebArgs::default(),
            shutdown_grace_secs: 5,
            beacon_slot_secs: crate::domain::identity::DEFAULT_SLOT_SECS,
            row_flush_ms: 1000,
        }
    }
}

/// How much of itself the server shows to the web.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Profile {
    /// The playground and introspection on, `/metrics` open: for a laptop.
    #[default]
    Development,
    /// The playground and introspection off unless asked for, `/metrics`
    /// only with `--metrics-token`, HSTS sent: for a server others reach.
    Production,
}

/// The web surface: profile, cross-origin callers, metrics access.
#[derive(Debug, Clone, Default, Args)]
pub struct WebArgs {
    /// `development` or `production` (see the README's "Running in production").
    #[arg(long, env = "ROLLCALL_PROFILE", value_enum, default_value_t = Profile::Development)]
    pub profile: Profile,
    /// Serve the GraphiQL playground in production too.
    #[arg(long, env = "ROLLCALL_PLAYGROUND")]
    pub playground: bool,
    /// Answer introspection queries in production too.
    #[arg(long, env = "ROLLCALL_INTROSPECTION")]
    pub introspection: bool,
    /// Require `Authorization: Bearer <token>` on `/metrics`. In production
    /// `/metrics` is not served without it.
    #[arg(long, env = "ROLLCALL_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// An origin (`https://admin.example.org`) whose pages may call the API
    /// from a browser. Repeat it, or separate with commas in the variable.
    /// None by default: only pages served by Rollcall itself.
    #[arg(long = "cors-origin", env = "ROLLCALL_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// A load balancer or reverse proxy (an address, or a network like
    /// `10.0.0.0/8`) whose `X-Forwarded-For` names the client. Repeat it, or
    /// separate with commas in the variable. None by default: the peer's
    /// address is the client's, and the per-address caps (live sockets,
    /// failed log-ins) count the balancer as one client.
    #[arg(long = "trusted-proxy", env = "ROLLCALL_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::http::client::ProxyNet>,
}

impl WebArgs {
    pub fn production(&self) -> bool {
        self.profile == Profile::Production
    }

    /// Whether `/` and `GET /graphql` serve the playground.
    pub fn playground_on(&self) -> bool {
        !self.production() || self.playground
    }

    /// Whether introspection (`__schema`, `__type`) is answered.
    pub fn introspection_on(&self) -> bool {
        !self.production() || self.introspection
    }
}

/// Limits on what one request may ask of the server.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest accepted request body, in bytes (413 beyond).
    #[arg(long, env = "ROLLCALL_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Deepest accepted query nesting.
    #[arg(long = "max-query-depth", env = "ROLLCALL_MAX_QUERY_DEPTH", default_value_t = 16)]
    pub max_depth: usize,
    /// Largest accepted query complexity: one point per field, times the
    /// page size for each list it is in (a page of 500 events with 20 fields
    /// is about 10,000).
    #[arg(long = "max-query-complexity", env = "ROLLCALL_MAX_QUERY_COMPLEXITY", default_value_t = 20_000)]
    pub max_complexity: usize,
    /// Milliseconds a query may run before it is stopped with `TIMEOUT`.
    /// Mutations run to the end: stopping one halfway would leave its
    /// outcome unknown to the client.
    #[arg(long = "request-timeout-ms", env = "ROLLCALL_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
}

impl Limits {
    /// How long a query may run (at least a millisecond).
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.request_timeout_ms.max(1))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 1024 * 1024, max_depth: 16, max_complexity: 20_000, request_timeout_ms: 10_000 }
    }
}

/// Limits of live subscriptions over WebSocket.
#[derive(Debug, Clone, Args)]
pub struct LiveLimits {
    /// Seconds a new WebSocket may take to send `connection_init` (closed with 4408 after).
    #[arg(long = "ws-init-timeout-secs", env = "ROLLCALL_WS_INIT_TIMEOUT_SECS", default_value_t = 3)]
    pub init_timeout_secs: u64,
    /// Largest WebSocket message accepted from a client, in bytes.
    #[arg(long = "ws-max-message-bytes", env = "ROLLCALL_WS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,
    /// Most subscriptions one WebSocket may hold at once.
    #[arg(long = "ws-max-subscriptions", env = "ROLLCALL_WS_MAX_SUBSCRIPTIONS", default_value_t = 32)]
    pub max_subscriptions: usize,
    /// Seconds between keepalive pings; a socket silent for three of them is closed.
    #[arg(long = "ws-keepalive-secs", env = "ROLLCALL_WS_KEEPALIVE_SECS", default_value_t = 15)]
    pub keepalive_secs: u64,
    /// Seconds a client may leave a message untaken before its socket is dropped.
    #[arg(long = "ws-send-timeout-secs", env = "ROLLCALL_WS_SEND_TIMEOUT_SECS", default_value_t = 10)]
    pub send_timeout_secs: u64,
    /// Check-ins a live subscriber may fall behind before it is told to resume.
    #[arg(long = "live-buffer", env = "ROLLCALL_LIVE_BUFFER", default_value_t = crate::live::DEFAULT_BUFFER)]
    pub buffer: usize,
    /// Milliseconds to wait for a hint before reading the database's change
    /// feed anyway: on a cluster of several SurrealDB nodes, how late a
    /// check-in written through another node may reach this one's subscribers.
    #[arg(long = "live-poll-ms", env = "ROLLCALL_LIVE_POLL_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_ms: u64,
    /// Read the change feed on the poll alone, never on a live query's hint:
    /// every check-in, registration change and key revocation then arrives
    /// as one written through another SurrealDB node of a cluster would.
    /// For tests and measurements.
    #[arg(long = "live-no-hints", hide = true)]
    pub no_hints: bool,
    /// Acknowledge a `connection_init` without a token or API key. Off by
    /// default: nothing live is public, so such a socket only holds memory.
    #[arg(long = "ws-allow-anonymous", env = "ROLLCALL_WS_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
    /// Most WebSockets this process holds at once (503 beyond); 0 for no cap.
    #[arg(long = "ws-max-sockets", env = "ROLLCALL_WS_MAX_SOCKETS", default_value_t = 20_000)]
    pub max_sockets: usize,
    /// Most WebSockets from one client address (429 beyond); 0 for no cap.
    /// Phones behind a venue's NAT share an address: keep it generous.
    #[arg(long = "ws-max-sockets-per-address", env = "ROLLCALL_WS_MAX_SOCKETS_PER_ADDRESS", default_value_t = 1_000)]
    pub max_sockets_per_address: usize,
    /// Most WebSockets signed in as one user or API key (closed with 1008
    /// beyond); 0 for no cap.
    #[arg(long = "ws-max-sockets-per-principal", env = "ROLLCALL_WS_MAX_SOCKETS_PER_PRINCIPAL", default_value_t = 200)]
    pub max_sockets_per_principal: usize,
    /// Operations one WebSocket may start per minute (RATE_LIMITED beyond); 0
    /// for no cap.
    #[arg(long = "ws-max-operations-per-minute", env = "ROLLCALL_WS_MAX_OPERATIONS_PER_MINUTE", default_value_t = 120)]
    pub max_operations_per_minute: u32,
}

impl LiveLimits {
    /// No caps on sockets or operations, for benchmarks that open thousands
    /// of sockets as one user from one address.
    pub fn uncapped(self) -> Self {
        Self {
            max_sockets: 0,
            max_sockets_per_address: 0,
            max_sockets_per_principal: 0,
            max_operations_per_minute: 0,
            ..self
        }
    }
}

impl Default for LiveLimits {
    fn default() -> Self {
        Self {
            init_timeout_secs: 3,
            max_message_bytes: 64 * 1024,
            max_subscriptions: 32,
            keepalive_secs: 15,
            send_timeout_secs: 10,
            buffer: crate::live::DEFAULT_BUFFER,
            poll_ms: crate::live::DEFAULT_POLL.as_millis() as u64,
            no_hints: false,
            allow_anonymous: false,
            max_sockets: 20_000,
            max_sockets_per_address: 1_000,
            max_sockets_per_principal: 200,
            max_operations_per_minute: 120,
        }
    }
}
