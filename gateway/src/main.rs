//! The `sluice` binary: parse the command line, set up logging, run the command (`sluice::cli`),
//! exit with its status.

use std::process::ExitCode;

use clap::Parser;
use sluice::cli::args::{Cli, Command};

/// mimalloc instead of glibc's malloc: the request path allocates and frees across threads
/// (tokio workers, model workers), where glibc spent 14-22% of the gateway's CPU under load
/// (BENCHMARKS.md, "Hot path"). Only the binary: the library's tests keep their own allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sets up logs and traces from its config (`[telemetry]`); the rest log as text.
    if !matches!(cli.command, None | Some(Command::Serve(_))) {
        sluice::telemetry::init_logs();
    }
    sluice::cli::run(cli)
}
