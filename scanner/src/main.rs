//! The `rollcall-scanner` binary: parses the command line and hands over to the library.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser as _;
use rollcall_scanner::config::{
    Cli, Command, FileConfig, FlushArgs, LogFormat, RunSettings, ServerSettings, SimSettings, data_dir, positive_secs,
    secs,
};
use rollcall_scanner::outbox::{OUTBOX_FILE, Outbox};
use rollcall_scanner::sighting::{now_ms, rfc3339_ms};
use rollcall_scanner::source::simulate::{SimConfig, plan};
use rollcall_scanner::uploader::{Uploader, UploaderConfig};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // A source may sit in a blocking read (a replay from a pipe): do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let file = FileConfig::load(cli.config.as_deref())?;
    match &cli.command {
        Command::Run(args) => {
            let settings = RunSettings::resolve(&cli, args, &file)?;
            rollcall_scanner::scanner::run(settings, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => status(&data_dir(&cli, &file), *json),
        Command::Flush(args) => flush(&data_dir(&cli, &file), args, &file).await,
        Command::Doctor(args) => {
            let configured = args.server.server.is_some() || file.server.is_some();
            let settings = rollcall_scanner::doctor::DoctorSettings {
                data_dir: data_dir(&cli, &file),
                server: if configured { Some(ServerSettings::resolve(&args.server, &file)?) } else { None },
                adapter: args.adapter.clone().or_else(|| file.adapter.clone()),
                scan: secs(args.scan_secs, "scan_secs")?,
            };
            let ok = rollcall_scanner::doctor::run(&settings).await;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Listen(args) => {
            let limit = args.secs.map(|s| positive_secs(s, "secs")).transpose()?;
            let every = positive_secs(args.every_secs, "every_secs")?;
            let adapter = args.adapter.clone().or_else(|| file.adapter.clone());
            rollcall_scanner::listen::run(adapter, limit, every, args.min_rssi.or(file.min_rssi)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate { attendees, sim } => {
            let sim = SimSettings::resolve(sim, &file)?;
            let plan = plan(&SimConfig {
                attendees: *attendees,
                seed: sim.seed,
                start_ms: sim.start_ms,
                speed: 0.0,
                ad_interval_ms: sim.ad_interval_ms,
                rotating: sim.rotating.clone(),
            });
            println!("{}", serde_json::to_string_pretty(&plan)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn flush(dir: &std::path::Path, args: &FlushArgs, file: &FileConfig) -> anyhow::Result<ExitCode> {
    let server = ServerSettings::resolve(&args.server, file)?;
    let mut client = rollcall_scanner::scanner::client_for(&server)?;
    // The same identity as `run`, so the server recognises a batch `run` sent
    // already, whichever key each of them held.
    if let Some(id) = rollcall_scanner::identity::read(dir) {
        client = client.with_scanner_id(id.to_string());
    }
    let mut outbox = Outbox::open(dir)?.keeping_acked(server.keep_acked);
    if args.retry_dead {
        let n = outbox.unpark_all()?;
        if n > 0 {
            println!("sending {n} refused (dead) batches again");
        }
    }
    let before = outbox.depth()?;
    let mut uploader = Uploader::new(
        outbox,
        client,
        UploaderConfig {
            batch_size: server.batch_size,
            backoff_initial: std::time::Duration::from_millis(500),
            backoff_max: std::time::Duration::from_secs(10),
            api_key_file: Some(server.api_key_file.clone()),
            give_up_after: Some(5),
            park_after_attempts: None,
            park_after: std::time::Duration::ZERO,
            bad_key_retry: std::time::Duration::from_secs(300),
            idle_epoch_check: None,
        },
        Arc::new(tokio::sync::Notify::new()),
    );
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let (_drain_tx, drain) = tokio::sync::watch::channel(true);
    let batches = uploader.run(stop, drain).await?;
    let stats = Outbox::open(dir)?.stats()?;
    if stats.dead_batches > 0 {
        println!("flushed {} sightings in {batches} batches", before.saturating_sub(stats.depth));
        eprintln!(
            "error: {} batches ({} sightings) were refused by the server and are kept in the outbox as dead \
             (last reason: {}); after fixing the cause, `rollcall-scanner flush --retry-dead` sends them again",
            stats.dead_batches,
            stats.dead_sightings,
            stats.last_dead_reason.as_deref().unwrap_or("?")
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("flushed {before} sightings in {batches} batches; the outbox is empty");
    Ok(ExitCode::SUCCESS)
}

fn status(dir: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let path = dir.join(OUTBOX_FILE);
    if !path.exists() {
        if json {
            println!("{}", serde_json::json!({ "outbox": path, "exists": false }));
        } else {
            println!("no outbox at {} (nothing recorded yet)", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let stats = Outbox::open(dir)?.stats()?;
    let scanner_id = rollcall_scanner::identity::read(dir);
    if json {
        println!("{}", serde_json::json!({ "outbox": path, "exists": true, "scannerId": scanner_id, "stats": stats }));
        return Ok(ExitCode::SUCCESS);
    }
    println!("scanner id:  {}", scanner_id.map_or_else(|| "(not made yet)".to_owned(), |id| id.to_string()));
    println!("outbox:      {}", path.display());
    println!(
        "waiting:     {} sightings ({} not yet batched, {} sealed batches)",
        stats.depth, stats.pending, stats.sealed_batches
    );
    match stats.last_upload_ms {
        Some(ms) => println!(
            "last upload: {} ({} s ago), batch {}",
            rfc3339_ms(ms),
            (now_ms() - ms).max(0) / 1000,
            stats.last_batch_id.as_deref().unwrap_or("?")
        ),
        None => println!("last upload: never"),
    }
    println!(
        "delivered:   {} sightings in {} batches ({} rejected by the server, {} batches answered as replays)",
        stats.sightings_acked, stats.batches_acked, stats.sightings_rejected, stats.batches_replayed
    );
    println!(
        "kept:        {} acknowledged batches, in case the server's store loses them ({} sent again after it \
         stopped uncleanly, {} of them lost by it and taken again)",
        stats.kept_batches, stats.batches_resent, stats.batches_restored
    );
    println!(
        "dead:        {} batches ({} sightings) refused by the server as a whole",
        stats.dead_batches, stats.dead_sightings
    );
    if stats.dead_batches > 0 {
        println!("             kept, not resent; last reason: {}", stats.last_dead_reason.as_deref().unwrap_or("?"));
        println!("             after fixing the cause, `rollcall-scanner flush --retry-dead` sends them again");
    }
    if let Some(r) = &stats.last_recovery {
        println!(
            "recovered:   a damaged outbox ({}) was moved to {}; {} sightings salvaged{}",
            r.reason,
            r.moved_to.display(),
            r.salvaged,
            if r.rows_lost { ", some rows could not be read" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM (systemd, docker stop) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        // Without a Ctrl-C handler, wait for SIGTERM alone rather than stop now.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
