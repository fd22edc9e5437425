//! The command line, the config file and the environment.
//!
//! Every setting can come from three places; the first that has it wins:
//!
//! 1. a flag (`--min-rssi -85`);
//! 2. an environment variable (`ROLLCALL_SCANNER_MIN_RSSI=-85`);
//! 3. the TOML file named by `--config` / `ROLLCALL_SCANNER_CONFIG` (`min_rssi = -85`);
//!
//! and otherwise the default. The API key itself is only ever read from a file
//! (`--api-key-file`), so it never shows up in `ps`, shell history or logs.
//!
//! [`args`] holds the command line, [`file`] the TOML file; this module
//! resolves them into the settings each command runs with.

mod args;
mod file;

pub use args::*;
pub use file::FileConfig;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::source::SourceSpec;

#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Base URL.
    pub server: String,
    /// Key file.
    pub api_key_file: PathBuf,
    /// Sightings per batch.
    pub batch_size: usize,
    /// Request timeout.
    pub http_timeout: Duration,
    /// How long an acknowledged batch is kept (`outbox::kept`).
    pub keep_acked: Duration,
}

/// The largest batch the server takes.
pub const MAX_BATCH: usize = 5_000;

/// Seconds as a duration, or a clear error for a negative or non-finite number.
pub fn secs(v: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("{what} must be a non-negative number of seconds, not {v}"))
}

/// A duration that must not be zero: a zero watchdog would restart the scan in a
/// tight loop, a zero backoff would hammer the server.
pub fn positive_secs(v: f64, what: &str) -> anyhow::Result<Duration> {
    let d = secs(v, what)?;
    anyhow::ensure!(d >= Duration::from_millis(1), "{what} must be more than 0 seconds, not {v}");
    Ok(d)
}

/// Checks that `server` is an http(s) URL with a host, and says how to fix it if not.
pub fn check_server_url(server: &str) -> anyhow::Result<()> {
    let example = "e.g. https://rollcall.example.org";
    let url = reqwest::Url::parse(server).map_err(|e| {
        anyhow::anyhow!("server `{server}` is not a URL ({e}): give its base URL with http:// or https://, {example}")
    })?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https"),
        "server `{server}` must start with http:// or https://, {example}"
    );
    anyhow::ensure!(url.host_str().is_some_and(|h| !h.is_empty()), "server `{server}` has no host, {example}");
    anyhow::ensure!(
        url.query().is_none() && url.fragment().is_none(),
        "server `{server}` must be a base URL without ?query or #fragment, {example}"
    );
    Ok(())
}

/// The data directory.
pub fn data_dir(cli: &Cli, file: &FileConfig) -> PathBuf {
    cli.data_dir.clone().or_else(|| file.data_dir.clone()).unwrap_or_else(|| {
        let is_root = {
            use std::os::unix::fs::MetadataExt as _;
            // /proc/self belongs to the process's effective user.
            std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        };
        default_data_dir(is_root, std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
    })
}

/// The default data directory: always absolute, so that `status` run from
/// another directory finds the same outbox as `run`.
pub fn default_data_dir(
    is_root: bool,
    xdg_state_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    const SYSTEM: &str = "/var/lib/rollcall-scanner";
    if is_root {
        return PathBuf::from(SYSTEM);
    }
    let absolute = |p: PathBuf| p.is_absolute().then_some(p);
    xdg_state_home
        .map(PathBuf::from)
        .and_then(absolute)
        .or_else(|| home.map(PathBuf::from).and_then(absolute).map(|h| h.join(".local/state")))
        .map_or_else(|| PathBuf::from(SYSTEM), |state| state.join("rollcall-scanner"))
}

impl ServerSettings {
    /// Resolves flags/env over the file.
    pub fn resolve(args: &ServerArgs, file: &FileConfig) -> anyhow::Result<Self> {
        let server = args
            .server
            .clone()
            .or_else(|| file.server.clone())
            .context("no server: pass --server URL (or ROLLCALL_SCANNER_SERVER, or `server` in the config file)")?;
        check_server_url(&server)?;
        let api_key_file = args.api_key_file.clone().or_else(|| file.api_key_file.clone()).context(
            "no API key: pass --api-key-file FILE (or ROLLCALL_SCANNER_API_KEY_FILE, or `api_key_file` in the config file)",
        )?;
        let batch_size = args.batch_size.or(file.batch_size).unwrap_or(500);
        anyhow::ensure!((1..=MAX_BATCH).contains(&batch_size), "batch size must be 1 to {MAX_BATCH}, not {batch_size}");
        let http_timeout = Duration::from_secs(args.http_timeout_secs.or(file.http_timeout_secs).unwrap_or(30).max(1));
        let keep_acked = secs(args.keep_acked_secs.or(file.keep_acked_secs).unwrap_or(86_400.0), "keep_acked_secs")?;
        Ok(Self { server, api_key_file, batch_size, http_timeout, keep_acked })
    }
}

/// The simulation, resolved.
#[derive(Clone, Debug)]
pub struct SimSettings {
    /// Seed.
    pub seed: u64,
    /// Start, Unix ms.
    pub start_ms: i64,
    /// Advertising interval, ms.
    pub ad_interval_ms: i64,
    /// Whether the start is this machine's clock now (no `--sim-start`).
    pub start_from_clock: bool,
    /// Rotating identifiers to advertise instead of BLE UUIDs.
    pub rotating: Option<crate::rotating::Rotating>,
}

impl SimSettings {
    /// Resolves flags/env over the file.
    pub fn resolve(args: &SimArgs, file: &FileConfig) -> anyhow::Result<Self> {
        let start_from_clock = args.sim_start.is_none() && file.sim_start.is_none();
        let start_ms = match args.sim_start.as_ref().or(file.sim_start.as_ref()) {
            Some(s) => {
                crate::sighting::parse_rfc3339_ms(s).with_context(|| format!("--sim-start `{s}` is not RFC 3339"))?
            }
            None => crate::sighting::now_ms() / 1000 * 1000,
        };
        let ad = args.sim_ad_interval_secs.or(file.sim_ad_interval_secs).unwrap_or(2.0);
        Ok(Self {
            seed: args.seed.or(file.seed).unwrap_or(1),
            start_ms,
            ad_interval_ms: secs(ad, "sim_ad_interval_secs")?.as_millis().max(1) as i64,
            start_from_clock,
            rotating: match args.sim_beacon_secrets.as_ref().or(file.sim_beacon_secrets.as_ref()) {
                Some(path) => Some(crate::rotating::Rotating::from_file(
                    path,
                    args.sim_beacon_slot_secs.or(file.sim_beacon_slot_secs).unwrap_or(600),
                )?),
                None => None,
            },
        })
    }
}

/// Everything `run` needs, resolved.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// Server and key.
    pub server: ServerSettings,
    /// Outbox location.
    pub data_dir: PathBuf,
    /// The source.
    pub source: SourceSpec,
    /// Pinned event.
    pub event: Option<String>,
    /// Configured minimum RSSI (overrides the events' own).
    pub min_rssi: Option<i16>,
    /// Coalescing window.
    pub window: Duration,
    /// Hearings a device needs in a window to be recorded.
    pub min_hearings: u32,
    /// Group commit interval.
    pub commit_interval: Duration,
    /// Replay/simulation speed.
    pub speed: f64,
    /// Simulation.
    pub sim: SimSettings,
    /// BLE watchdog.
    pub watchdog: Duration,
    /// BLE adapter.
    pub adapter: Option<String>,
    /// BLE sessions in a row that fail or hear nothing before the source fails.
    pub ble_give_up_after: u32,
    /// Active-events refresh interval.
    pub events_refresh: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Keep running after a finite source ends.
    pub keep_running: bool,
    /// Record identifiers that may not count for any active event too.
    pub record_unregistered: bool,
    /// Sightings held in memory at most while the outbox refuses writes.
    pub max_held: usize,
    /// Failed sends of one batch before it may be parked as poison.
    pub park_after_attempts: u32,
    /// ... over at least this long.
    pub park_after: Duration,
    /// How long before a refused key is tried again.
    pub bad_key_retry: Duration,
}

impl RunSettings {
    /// Whether the source stamps sightings with this machine's clock as they are
    /// heard: BLE, and a simulation started now and played in real time. A replay
    /// carries its own times.
    pub fn live_clock(&self) -> bool {
        match self.source {
            SourceSpec::Ble => true,
            SourceSpec::Simulate(_) => self.sim.start_from_clock && self.speed == 1.0,
            SourceSpec::Replay(_) => false,
        }
    }

    /// Resolves `run`'s flags/env over the file.
    pub fn resolve(cli: &Cli, args: &RunArgs, file: &FileConfig) -> anyhow::Result<Self> {
        let source: SourceSpec = args
            .source
            .clone()
            .or_else(|| file.source.clone())
            .unwrap_or_else(|| "ble".into())
            .parse()
            .map_err(anyhow::Error::msg)?;
        let speed = args.speed.or(file.speed).unwrap_or(1.0);
        anyhow::ensure!(speed.is_finite() && speed >= 0.0, "speed must be 0 or more, not {speed}");
        let watchdog = positive_secs(args.watchdog_secs.or(file.watchdog_secs).unwrap_or(30.0), "watchdog_secs")?;
        let backoff_max =
            positive_secs(args.backoff_max_secs.or(file.backoff_max_secs).unwrap_or(60.0), "backoff_max_secs")?;
        let ble_give_up_after = args.ble_give_up_after.or(file.ble_give_up_after).unwrap_or(10);
        anyhow::ensure!(ble_give_up_after >= 1, "ble_give_up_after must be at least 1");
        let min_hearings = args
            .min_hearings
            .or(file.min_hearings)
            .unwrap_or(if matches!(source, SourceSpec::Ble) { 2 } else { 1 })
            .max(1);
        Ok(Self {
            server: ServerSettings::resolve(&args.server, file)?,
            data_dir: data_dir(cli, file),
            source,
            event: args.event.clone().or_else(|| file.event.clone()).filter(|e| !e.is_empty()),
            min_rssi: args.min_rssi.or(file.min_rssi),
            window: secs(args.window_secs.or(file.window_secs).unwrap_or(10.0), "window_secs")?,
            min_hearings,
            commit_interval: Duration::from_millis(
                args.commit_interval_ms.or(file.commit_interval_ms).unwrap_or(250).max(1),
            ),
            speed,
            sim: SimSettings::resolve(&args.sim, file)?,
            watchdog,
            adapter: args.adapter.clone().or_else(|| file.adapter.clone()),
            ble_give_up_after,
            events_refresh: secs(
                args.events_refresh_secs.or(file.events_refresh_secs).unwrap_or(60.0),
                "events_refresh_secs",
            )?,
            heartbeat: secs(args.heartbeat_secs.or(file.heartbeat_secs).unwrap_or(60.0), "heartbeat_secs")?,
            backoff_initial: Duration::from_millis(
                args.backoff_initial_ms.or(file.backoff_initial_ms).unwrap_or(500).max(1),
            ),
            backoff_max,
            keep_running: args.keep_running || file.keep_running.unwrap_or(false),
            record_unregistered: args.record.or(file.record) == Some(Record::All),
            max_held: args.max_held.or(file.max_held).unwrap_or(100_000).max(1),
            park_after_attempts: args.park_after_attempts.or(file.park_after_attempts).unwrap_or(10).max(1),
            park_after: secs(args.park_after_secs.or(file.park_after_secs).unwrap_or(21_600.0), "park_after_secs")?,
            bad_key_retry: positive_secs(
                args.bad_key_retry_secs.or(file.bad_key_retry_secs).unwrap_or(300.0),
                "bad_key_retry_secs",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file: FileConfig = toml::from_str(
            "server = \"http://file\"\napi_key_file = \"/k\"\nmin_rssi = -80\nwindow_secs = 5\nsource = \"simulate:3\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from(["rollcall-scanner", "run", "--server", "http://flag", "--min-rssi", "-70"]);
        let Command::Run(args) = &cli.command else { panic!("run") };
        let s = RunSettings::resolve(&cli, args, &file).unwrap();
        assert_eq!(s.server.server, "http://flag");
        assert_eq!(s.server.api_key_file, PathBuf::from("/k"));
        assert_eq!(s.min_rssi, Some(-70));
        assert_eq!(s.window, Duration::from_secs(5));
        assert_eq!(s.source, SourceSpec::Simulate(3));
        assert_eq!(s.server.batch_size, 500);
    }

    fn run_settings(args: &[&str], file: &str) -> anyhow::Result<RunSettings> {
        let file: FileConfig = toml::from_str(file).unwrap();
        let cli = Cli::try_parse_from(["rollcall-scanner", "run", "--api-key-file", "/k"].iter().chain(args))?;
        let Command::Run(run) = &cli.command else { panic!("run") };
        RunSettings::resolve(&cli, run, &file)
    }

    fn error(r: anyhow::Result<RunSettings>) -> String {
        format!("{:#}", r.expect_err("an error"))
    }

    #[test]
    fn the_radio_needs_two_hearings_and_recorded_sightings_one() {
        let srv = ["--server", "http://x"];
        assert_eq!(run_settings(&[&srv[..], &["--source", "ble"]].concat(), "").unwrap().min_hearings, 2);
        assert_eq!(run_settings(&[&srv[..], &["--source", "simulate:2"]].concat(), "").unwrap().min_hearings, 1);
        assert_eq!(run_settings(&[&srv[..], &["--source", "replay:/f"]].concat(), "").unwrap().min_hearings, 1);
        assert_eq!(run_settings(&srv, "min_hearings = 3").unwrap().min_hearings, 3);
        assert_eq!(
            run_settings(&[&srv[..], &["--min-hearings", "4"]].concat(), "min_hearings = 3").unwrap().min_hearings,
            4
        );
    }

    #[test]
    fn the_server_must_be_an_http_url() {
        for ok in ["http://127.0.0.1:8080", "https://rollcall.example.org", "https://example.org/rollcall/"] {
            assert!(run_settings(&["--server", ok], "").is_ok(), "{ok}");
        }
        let e = error(run_settings(&["--server", "rollcall.example.org"], ""));
        assert!(e.contains("`rollcall.example.org` is not a URL") && e.contains("https://"), "{e}");
        let e = error(run_settings(&["--server", "ftp://rollcall.example.org"], ""));
        assert!(e.contains("must start with http:// or https://"), "{e}");
        let e = error(run_settings(&[], "server = \"ws://rollcall.example.org\""));
        assert!(e.contains("must start with http:// or https://"), "{e}");
        let e = error(run_settings(&["--server", "https://example.org/?key=1"], ""));
        assert!(e.contains("without ?query"), "{e}");
    }

    #[test]
    fn zero_watchdog_and_zero_backoff_are_refused() {
        let e = error(run_settings(&["--server", "http://x", "--watchdog-secs", "0"], ""));
        assert!(e.contains("watchdog_secs must be more than 0 seconds"), "{e}");
        let e = error(run_settings(&["--server", "http://x"], "backoff_max_secs = 0"));
        assert!(e.contains("backoff_max_secs must be more than 0 seconds"), "{e}");
        let e = error(run_settings(&["--server", "http://x"], "backoff_max_secs = -1"));
        assert!(e.contains("backoff_max_secs must be a non-negative number"), "{e}");
        let e = error(run_settings(&["--server", "http://x", "--ble-give-up-after", "0"], ""));
        assert!(e.contains("ble_give_up_after must be at least 1"), "{e}");
        let s = run_settings(&["--server", "http://x", "--watchdog-secs", "0.5"], "").unwrap();
        assert_eq!(
            (s.watchdog, s.backoff_max, s.ble_give_up_after),
            (Duration::from_millis(500), Duration::from_secs(60), 10)
        );
    }

    #[test]
    fn an_unknown_log_format_is_refused() {
        let e = Cli::try_parse_from(["rollcall-scanner", "--log-format", "xml", "status"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(e.to_string().contains("possible values: text, json"), "{e}");
        let cli = Cli::try_parse_from(["rollcall-scanner", "--log-format", "json", "status"]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        assert_eq!(Cli::try_parse_from(["rollcall-scanner", "status"]).unwrap().log_format, LogFormat::Text);
    }

    #[test]
    fn the_default_data_dir_is_absolute() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(default_data_dir(true, os("/x"), os("/home/u")), PathBuf::from("/var/lib/rollcall-scanner"));
        assert_eq!(default_data_dir(false, os("/x"), os("/home/u")), PathBuf::from("/x/rollcall-scanner"));
        assert_eq!(
            default_data_dir(false, os("relative"), os("/home/u")),
            PathBuf::from("/home/u/.local/state/rollcall-scanner")
        );
        assert_eq!(default_data_dir(false, None, None), PathBuf::from("/var/lib/rollcall-scanner"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_an_error() {
        assert!(toml::from_str::<FileConfig>("sever = \"typo\"").is_err());
    }
}
