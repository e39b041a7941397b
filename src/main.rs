//! The `reliefline` binary: read configuration, set up telemetry, run the chosen command.

use std::process::ExitCode;

use clap::Parser as _;
use reliefline::cli::{Cli, Command};
use reliefline::{App, Config, app, store, telemetry};

/// mimalloc rather than the system allocator: a request allocates and frees many small buffers
/// across the runtime's threads, where glibc's allocator spent a sixth of the service's CPU
/// under a surge.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for configuration mistakes, distinct from runtime failures (1).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("reliefline: {e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init_tracing(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = App::build(config).await?;
            let public = app.local_addr();
            let metrics = app.metrics_addr().map_or_else(
                || format!("http://{public}/metrics"),
                |a| format!("http://{a}/metrics"),
            );
            tracing::info!(
                backend = app.state().store.backend(),
                "Reliefline listening on http://{public} (metrics: {metrics})"
            );
            app.run(app::shutdown_signal()).await
        }
        Command::Migrate => {
            let store = store::connect(&config.database).await?;
            store.migrate().await?;
            tracing::info!(backend = store.backend(), "migrations applied");
            store.close().await;
            Ok(())
        }
        Command::CheckConfig => {
            #[allow(clippy::print_stdout)]
            {
                println!("{config:#?}");
            }
            Ok(())
        }
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    tracing::error!("{error:#}");
    #[allow(clippy::print_stderr)]
    {
        eprintln!("reliefline: {error:#}");
    }
    ExitCode::FAILURE
}
