//! The `tarpit` binary: parses the command line and dispatches to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tarpit::cli::{Cli, Command, effective_config};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Diagnostics go to stderr (journald under systemd); the forensic record goes to the
    // JSON log and SQLite, never here.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let (subcommand_flags, check_only) = match &cli.command {
        None => (None, false),
        Some(Command::Run(overrides)) => (Some(overrides), false),
        Some(Command::CheckConfig(overrides)) => (Some(overrides), true),
    };
    let overrides: Vec<_> = std::iter::once(&cli.run).chain(subcommand_flags).collect();
    let config = match effective_config(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: configuration: {error}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        println!("# effective configuration: valid");
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    match tarpit::server::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
