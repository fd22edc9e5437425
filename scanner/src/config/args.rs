//! The command line: `rollcall-scanner`'s subcommands and their flags, each
//! flag with its environment variable (see the parent module for the order
//! in which they win).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// Rollcall's venue scanner: hears attendees' phones over Bluetooth LE, keeps every
/// sighting in a durable outbox, and uploads them to the Rollcall server exactly once.
#[derive(Debug, Parser)]
#[command(name = "rollcall-scanner", version, about, long_about = None)]
pub struct Cli {
    /// TOML config file; flags and environment variables override it.
    #[arg(long, global = true, env = "ROLLCALL_SCANNER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the outbox lives [default: /var/lib/rollcall-scanner as root, else
    /// $XDG_STATE_HOME/rollcall-scanner, i.e. ~/.local/state/rollcall-scanner].
    #[arg(long, global = true, env = "ROLLCALL_SCANNER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format (RUST_LOG filters, default `info`).
    #[arg(long, global = true, env = "ROLLCALL_SCANNER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
/// Which identifiers the scanner records (`--record`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Record {
    /// Those that may count for the active events.
    Registered,
    /// Every identifier heard.
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per record.
    Text,
    /// One JSON object per line.
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scan (or replay, or simulate) and upload, until stopped. A replay or a
    /// simulation exits once everything it produced is delivered.
    Run(Box<RunArgs>),
    /// Show the outbox: sightings waiting, batches, last upload. Safe while `run` runs.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Upload everything waiting in the outbox now, then exit: 0 when everything
    /// was delivered, 1 while batches the server refused (dead batches) remain.
    Flush(FlushArgs),
    /// Check the adapter, D-Bus, BlueZ, the clock, free disk, the outbox's
    /// integrity, the server and the key, and say what to fix. Changes nothing;
    /// exits 1 when a check fails.
    Doctor(DoctorArgs),
    /// Show the identifiers the radio hears, with their RSSI, live: for placing a
    /// scanner at a door. Records and uploads nothing.
    Listen(ListenArgs),
    /// Print the ground truth of `--source simulate:N` for a seed and start, as JSON.
    Simulate {
        /// Attendees.
        #[arg(default_value_t = crate::source::DEFAULT_SIMULATED_ATTENDEES)]
        attendees: usize,
        #[command(flatten)]
        sim: SimArgs,
    },
}

/// Where the server is and how to authenticate.
#[derive(Debug, Args, Default)]
pub struct ServerArgs {
    /// The Rollcall server's base URL, e.g. https://rollcall.example.org.
    #[arg(long, env = "ROLLCALL_SCANNER_SERVER")]
    pub server: Option<String>,
    /// File holding this scanner's API key (made with `createApiKey` or `rollcall apikey create`).
    #[arg(long, env = "ROLLCALL_SCANNER_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Sightings per batch, at most 5000 [default: 500].
    #[arg(long, env = "ROLLCALL_SCANNER_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// HTTP request timeout in seconds [default: 30].
    #[arg(long, env = "ROLLCALL_SCANNER_HTTP_TIMEOUT_SECS")]
    pub http_timeout_secs: Option<u64>,
    /// Keep each batch the server acknowledged for this many seconds, and send it
    /// again if the server's store starts after an unclean stop meanwhile (it may
    /// have lost it); 0 keeps none [default: 86400, a day].
    #[arg(long, env = "ROLLCALL_SCANNER_KEEP_ACKED_SECS")]
    pub keep_acked_secs: Option<f64>,
}

/// `flush`'s settings.
#[derive(Debug, Args, Default)]
pub struct FlushArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// First give the batches the server refused as a whole (dead batches, see
    /// `status`) another go, under their own batch ids.
    #[arg(long)]
    pub retry_dead: bool,
}

/// `doctor`'s settings.
#[derive(Debug, Args, Default)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Bluetooth adapter to check, e.g. `hci1` [default: the first].
    #[arg(long, env = "ROLLCALL_SCANNER_ADAPTER")]
    pub adapter: Option<String>,
    /// Scan this many seconds to see what is heard; 0 skips the scan [default: 5].
    #[arg(long, default_value_t = 5.0)]
    pub scan_secs: f64,
}

/// `listen`'s settings.
#[derive(Debug, Args, Default)]
pub struct ListenArgs {
    /// Bluetooth adapter to use, e.g. `hci1` [default: the first].
    #[arg(long, env = "ROLLCALL_SCANNER_ADAPTER")]
    pub adapter: Option<String>,
    /// Stop after this many seconds [default: run until Ctrl-C].
    #[arg(long)]
    pub secs: Option<f64>,
    /// When the output is not a terminal, print the table every this many seconds [default: 5].
    #[arg(long, default_value_t = 5.0)]
    pub every_secs: f64,
    /// Mark identifiers weaker than this (dBm), e.g. the event's `minRssi`.
    #[arg(long, env = "ROLLCALL_SCANNER_MIN_RSSI", allow_hyphen_values = true)]
    pub min_rssi: Option<i16>,
}

/// The simulation's knobs.
#[derive(Debug, Args, Default)]
pub struct SimArgs {
    /// Seed for `simulate` [default: 1].
    #[arg(long, env = "ROLLCALL_SCANNER_SEED")]
    pub seed: Option<u64>,
    /// When the simulation starts, RFC 3339 [default: now].
    #[arg(long, env = "ROLLCALL_SCANNER_SIM_START")]
    pub sim_start: Option<String>,
    /// Seconds between two advertisements of a simulated phone [default: 2].
    #[arg(long, env = "ROLLCALL_SCANNER_SIM_AD_INTERVAL_SECS")]
    pub sim_ad_interval_secs: Option<f64>,
    /// A file of beacon secrets, one per line in hex (`me { beacon { secret } }`):
    /// simulated attendee i advertises the rotating identifiers of line i
    /// instead of its BLE UUID.
    #[arg(long, env = "ROLLCALL_SCANNER_SIM_BEACON_SECRETS")]
    pub sim_beacon_secrets: Option<PathBuf>,
    /// The rotating identifiers' slot, in seconds (the server's `slotSeconds`) [default: 600].
    #[arg(long, env = "ROLLCALL_SCANNER_SIM_BEACON_SLOT_SECS")]
    pub sim_beacon_slot_secs: Option<i64>,
}

/// `run`'s settings.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// `ble`, `replay:FILE` (JSONL) or `simulate[:N]` [default: ble].
    #[arg(long, env = "ROLLCALL_SCANNER_SOURCE")]
    pub source: Option<String>,
    /// Pin every sighting to this event id; without it the server assigns sightings
    /// to the active events in the key's scope.
    #[arg(long, env = "ROLLCALL_SCANNER_EVENT")]
    pub event: Option<String>,
    /// Drop advertisements weaker than this (dBm) [default: the weakest `minRssi`
    /// of the active events in scope, or keep everything while unknown].
    #[arg(long, env = "ROLLCALL_SCANNER_MIN_RSSI", allow_hyphen_values = true)]
    pub min_rssi: Option<i16>,
    /// Coalescing window in seconds: one sighting per device per window [default: 10].
    #[arg(long, env = "ROLLCALL_SCANNER_WINDOW_SECS")]
    pub window_secs: Option<f64>,
    /// Record a device in a window only when heard at least this many times in it,
    /// so a passer-by's one strong advertisement does not count [default: 2 for
    /// `ble`, 1 for `replay` and `simulate`, whose lines are sightings already].
    #[arg(long, env = "ROLLCALL_SCANNER_MIN_HEARINGS")]
    pub min_hearings: Option<u32>,
    /// Group commit interval in milliseconds [default: 250].
    #[arg(long, env = "ROLLCALL_SCANNER_COMMIT_INTERVAL_MS")]
    pub commit_interval_ms: Option<u64>,
    /// Replay/simulation speed: 1 as recorded, 60 a minute per second, 0 as fast as possible [default: 1].
    #[arg(long, env = "ROLLCALL_SCANNER_SPEED")]
    pub speed: Option<f64>,
    #[command(flatten)]
    pub sim: SimArgs,
    /// Restart the BLE scan after this many seconds without any event [default: 30].
    #[arg(long, env = "ROLLCALL_SCANNER_WATCHDOG_SECS")]
    pub watchdog_secs: Option<f64>,
    /// Bluetooth adapter to use, e.g. `hci1` [default: the first].
    #[arg(long, env = "ROLLCALL_SCANNER_ADAPTER")]
    pub adapter: Option<String>,
    /// Exit (non-zero, so systemd starts a fresh process) after this many BLE scan
    /// sessions in a row that failed or heard nothing [default: 10].
    #[arg(long, env = "ROLLCALL_SCANNER_BLE_GIVE_UP_AFTER")]
    pub ble_give_up_after: Option<u32>,
    /// Seconds between refreshes of the active events [default: 60].
    #[arg(long, env = "ROLLCALL_SCANNER_EVENTS_REFRESH_SECS")]
    pub events_refresh_secs: Option<f64>,
    /// Seconds between heartbeats [default: 60].
    #[arg(long, env = "ROLLCALL_SCANNER_HEARTBEAT_SECS")]
    pub heartbeat_secs: Option<f64>,
    /// First retry delay after a failed upload, in milliseconds [default: 500].
    #[arg(long, env = "ROLLCALL_SCANNER_BACKOFF_INITIAL_MS")]
    pub backoff_initial_ms: Option<u64>,
    /// Longest retry delay, in seconds [default: 60].
    #[arg(long, env = "ROLLCALL_SCANNER_BACKOFF_MAX_SECS")]
    pub backoff_max_secs: Option<f64>,
    /// Keep running (uploading, heartbeating) after a replay or simulation ends.
    #[arg(long, env = "ROLLCALL_SCANNER_KEEP_RUNNING")]
    pub keep_running: bool,
    /// Which identifiers to record: `registered`, those that may count for the
    /// active events (`registeredDevices`; everything while that is not
    /// known), or `all`, so the server counts the rest as unknown devices
    /// [default: registered]. Given twice, the last one holds.
    #[arg(long, env = "ROLLCALL_SCANNER_RECORD", value_enum, overrides_with = "record")]
    pub record: Option<Record>,
    /// While the outbox refuses writes (disk full), hold at most this many
    /// sightings in memory; past it, coalesce them into wider windows, then drop
    /// the weakest [default: 100000].
    #[arg(long, env = "ROLLCALL_SCANNER_MAX_HELD")]
    pub max_held: Option<usize>,
    /// Park a batch (like one the server refused) after this many failed sends ...
    /// [default: 10].
    #[arg(long, env = "ROLLCALL_SCANNER_PARK_AFTER_ATTEMPTS")]
    pub park_after_attempts: Option<u32>,
    /// ... over at least this many seconds, while the server answered other
    /// requests meanwhile [default: 21600, 6 hours].
    #[arg(long, env = "ROLLCALL_SCANNER_PARK_AFTER_SECS")]
    pub park_after_secs: Option<f64>,
    /// After the server refuses the API key, try it again after this many seconds
    /// (doubling, up to 16 times as long), unless a new key comes first [default: 300].
    #[arg(long, env = "ROLLCALL_SCANNER_BAD_KEY_RETRY_SECS")]
    pub bad_key_retry_secs: Option<f64>,
}
