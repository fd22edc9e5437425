//! The `rollcall` binary: parses the command line and hands over to the library.

use clap::Parser;
use rollcall::config::{Cli, Command};
use rollcall::startup::{Application, shutdown_signal};
use rollcall::{cli, telemetry};

/// mimalloc (see Cargo.toml: it keeps idle WebSockets small), with large
/// blocks mapped from the system; the server has it give back what it holds
/// freed every second (`rollcall::memory`).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: rollcall::memory::Allocator = rollcall::memory::Allocator;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Cli::parse();
    // The server logs its life; the one-shot commands speak through their output.
    let level = if matches!(args.command, Command::Serve(_)) { "info" } else { "warn" };
    telemetry::init_logging(args.log_format, level);
    let result = match args.command {
        Command::Serve(serve) => run_server(*serve).await,
        Command::Schema => {
            print!("{}", rollcall::graphql::sdl());
            Ok(())
        }
        Command::Admin(cmd) => cli::admin(cmd).await,
        Command::ApiKey(cmd) => cli::apikey(cmd).await,
        Command::Import(cmd) => cli::import(cmd).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_server(args: rollcall::config::ServeArgs) -> anyhow::Result<()> {
    let db = rollcall::store::redact_url(&args.db.url);
    let app = Application::build(args).await?;
    tracing::info!(address = %app.local_addr(), %db, "rollcall is listening; playground at http://{}/", app.local_addr());
    app.run_until(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
