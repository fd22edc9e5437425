//! The TOML config file (`--config`): the same settings as the flags, with
//! snake_case names.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use super::Record;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub source: Option<String>,
    pub event: Option<String>,
    pub min_rssi: Option<i16>,
    pub record: Option<Record>,
    pub window_secs: Option<f64>,
    pub min_hearings: Option<u32>,
    pub commit_interval_ms: Option<u64>,
    pub batch_size: Option<usize>,
    pub http_timeout_secs: Option<u64>,
    pub keep_acked_secs: Option<f64>,
    pub speed: Option<f64>,
    pub seed: Option<u64>,
    pub sim_start: Option<String>,
    pub sim_ad_interval_secs: Option<f64>,
    pub sim_beacon_secrets: Option<PathBuf>,
    pub sim_beacon_slot_secs: Option<i64>,
    pub watchdog_secs: Option<f64>,
    pub adapter: Option<String>,
    pub ble_give_up_after: Option<u32>,
    pub events_refresh_secs: Option<f64>,
    pub heartbeat_secs: Option<f64>,
    pub backoff_initial_ms: Option<u64>,
    pub backoff_max_secs: Option<f64>,
    pub keep_running: Option<bool>,
    pub max_held: Option<usize>,
    pub park_after_attempts: Option<u32>,
    pub park_after_secs: Option<f64>,
    pub bad_key_retry_secs: Option<f64>,
}

impl FileConfig {
    /// Reads `path`, or gives the empty config when there is none.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }
}
