//! The `sluice` binary: parse the command line, set up logging, run the command (`sluice::cli`),
//! exit with its status.

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sets up logs and traces from its config (`[telemetry]`); the rest log as text.
    if !matches!(cli.command, None | Some(Command::Serve(_))) {
        sluice::telemetry::init_logs();
    }
    sluice::cli::run(cli)
}
