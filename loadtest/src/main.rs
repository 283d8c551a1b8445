//! `sluice-loadtest`: parses flags, runs, exits 0 (SLOs held), 2 (an SLO failed) or 1 (usage or
//! connection error).

use std::process::ExitCode;

use clap::Parser;
use sluice_loadtest::{app, cli::Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; every usage error exits 1.
            let code = if e.use_stderr() { 1 } else { 0 };
            let _printed = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-loadtest: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(app::run(cli)) {
        Ok(verdict) => ExitCode::from(verdict.exit_code()),
        Err(e) => {
            eprintln!("sluice-loadtest: {e}");
            ExitCode::from(1)
        }
    }
}
