//! `sluice monitor run|status|refresh`: run a monitor offline over any inference table, or ask a
//! running gateway about its monitors.

use std::process::ExitCode;

use super::admin::{self, AdminCall};
use super::args::MonitorCommand;

/// Runs a `monitor` subcommand.
pub fn run(command: MonitorCommand) -> ExitCode {
    match command {
        MonitorCommand::Run { table, baseline, config, labels, out } => {
            let Some(rt) = super::runtime() else { return ExitCode::FAILURE };
            let run = crate::monitor::OfflineRun { table, labels, baseline, config, out };
            match rt.block_on(crate::monitor::run_offline(&run)) {
                Ok((report, transitions)) => {
                    let body = serde_json::json!({ "report": report, "alert_transitions": transitions });
                    println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        MonitorCommand::Status { endpoint, admin } => admin::run(admin, AdminCall::Monitor(endpoint, false)),
        MonitorCommand::Refresh { endpoint, admin } => admin::run(admin, AdminCall::Monitor(endpoint, true)),
    }
}
