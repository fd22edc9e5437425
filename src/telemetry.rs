//! Logs (tracing) and metrics (Prometheus text format).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Sets up logging to standard error: `RUST_LOG` filters (default `level`
/// for Rollcall, warnings only for the database engine), text or JSON lines.
///
/// `surrealkv::lsm` is held to errors: after [`crate::store::SurrealStore::close`]
/// has shut the engine down, its tree is dropped at process exit, outside the
/// async runtime, and warns that it cannot close again.
///
/// `surrealdb::method::live` is held to errors too: its one warning is the
/// SDK's kill of a dropped live query, which always fails (it runs under a
/// fresh session, with no namespace embedded and no credentials on a
/// server); Rollcall kills its own live queries before dropping them
/// (`store::FeedHints::close`).
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{level},surrealdb=warn,surrealdb_core=warn,surrealkv=warn,surrealkv::lsm=error,surrealdb::method::live=error"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The handle `/metrics` renders from.
///
/// The `metrics` facade has one recorder per process, so the first call
/// installs it and later calls (several test servers in one process) share
/// it. Metric names carry the `rollcall_` prefix.
#[derive(Clone)]
pub struct Metrics(PrometheusHandle);

impl Metrics {
    pub fn install() -> Self {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        let handle = HANDLE.get_or_init(|| {
            let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets) {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        });
        Self(handle.clone())
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.0.render()
    }
}
