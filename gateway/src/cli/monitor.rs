//! `sluice monitor run|status|refresh`: run a monitor offline over any inference table, or ask a
//! running gateway about its monitors.

use std::process::ExitCode;

use super::admin::{self, AdminCall};
use super::args::{MonitorCommand, Output};
use super::render;

/// Runs a `monitor` subcommand.
pub fn run(command: MonitorCommand) -> ExitCode {
    match command {
        MonitorCommand::Run { table, baseline, config, labels, out, output } => {
            let Some(rt) = super::runtime() else { return ExitCode::FAILURE };
            let run = crate::monitor::OfflineRun { table: table.clone(), labels, baseline, config, out };
            match rt.block_on(crate::monitor::run_offline(&run)) {
                Ok((report, transitions)) => {
                    let body = serde_json::json!({ "report": report, "alert_transitions": transitions });
                    match output {
                        Output::Json => println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default()),
                        Output::Table => {
                            print!("{}", render::refresh_summary(&table, &body["report"], &body["alert_transitions"]))
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        MonitorCommand::Status { endpoint, output, admin } => {
            admin::run(admin, AdminCall::Monitor { endpoint, refresh: false, output })
        }
        MonitorCommand::Refresh { endpoint, output, admin } => {
            admin::run(admin, AdminCall::Monitor { endpoint, refresh: true, output })
        }
    }
}
