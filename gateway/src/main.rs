//! The `sluice` binary: set up logging, parse the command line, run the command (`sluice::cli`),
//! exit with its status.

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::args::Cli;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    sluice::cli::run(Cli::parse())
}
