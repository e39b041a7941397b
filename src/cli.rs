//! Command line: `reliefline [--config PATH] [serve|migrate]`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "reliefline",
    version,
    about = "Surge-ready harm-report intake and outage notification",
    long_about = "Reliefline takes harm reports from the public during a mass online-service \
        outage, gives each a durable receipt, and tells people what happened by e-mail and SMS.\n\n\
        Configuration comes from built-in defaults, then the file given with --config, then \
        RELIEFLINE_* environment variables (RELIEFLINE_DATABASE__URL sets database.url)."
)]
pub struct Cli {
    /// TOML file whose keys override the built-in defaults.
    #[arg(long, short = 'c', value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default): public listener, metrics listener, background workers.
    /// Applies pending database migrations first unless database.migrate_on_start is false.
    Serve,
    /// Apply pending database migrations and exit. Safe to run while replicas are serving.
    Migrate,
    /// Print the effective configuration (secrets masked) and exit.
    CheckConfig,
}
