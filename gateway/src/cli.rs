//! The `sluice` command line: [`args`] is the schema (subcommands, flags, help), [`run`] sends
//! each subcommand to the file that owns it: [`serve`], [`validate`], [`table`], [`monitor`],
//! [`config_store`] (export and import, against the store), and
//! [`admin`] for everything that talks to a running gateway (through [`client`], printed by
//! [`render`]). The CLI sits above the library: it uses config, server and the table readers,
//! and reads the admin API only through its wire format, never the handlers' types.

pub mod admin;
pub mod args;
pub mod auth;
pub mod client;
pub mod config_store;
mod error;
pub mod monitor;
pub mod render;
pub mod serve;
pub mod table;
pub mod validate;

use std::process::ExitCode;

pub use error::CliError;

use admin::AdminCall;
use args::{Cli, Command, ConfigCommand, ServeArgs};

/// Runs a parsed command line and returns the process's exit status.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve::serve(args),
        Command::Validate { file, env } => validate::validate(&file, env.as_deref()),
        Command::Endpoints { command, admin } => admin::run(admin, AdminCall::Endpoints(command)),
        Command::Traffic { command, admin } => admin::run(admin, AdminCall::Traffic(command)),
        Command::Config { command: c @ (ConfigCommand::Export { .. } | ConfigCommand::Import { .. }), .. } => {
            config_store::run(c)
        }
        Command::Config { command, admin } => admin::run(admin, AdminCall::Config(command)),
        Command::Rollout { command, admin } => admin::run(admin, AdminCall::Rollout(command)),
        Command::Experiment { command, admin } => admin::run(admin, AdminCall::Experiment(command)),
        Command::Table { command, data_dir } => table::run(command, &data_dir),
        Command::Monitor { command } => monitor::run(command),
        Command::Auth { command } => auth::run(command),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // generated whole first: clap_complete panics when its writer fails (`| head`)
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write the completion script: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The async runtime of one command; `None` (with the reason on stderr) when it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}
