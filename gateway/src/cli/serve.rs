//! `sluice serve`: load the config with the command-line overrides (validated together), set up
//! logs and traces (`[telemetry]`), start the gateway, wait for SIGTERM or Ctrl-C, shut down within the grace period. Exit 2 for a bad
//! config, 1 when the gateway cannot start, 130 on a second signal.

use std::process::ExitCode;
use std::time::Duration;

use super::args::ServeArgs;
use crate::config::{Config, Overrides};
use crate::control::ConfigSource;

/// Serves until a signal.
pub fn serve(args: ServeArgs) -> ExitCode {
    let overrides = match overrides(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load_with(&args.config, args.env.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(rt) = super::runtime() else { return ExitCode::FAILURE };
    // With an OTLP endpoint the exporter's channel lives on the runtime.
    let telemetry = match rt.block_on(async { crate::telemetry::init(&config.telemetry) }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let source = ConfigSource { path: args.config.clone(), env: args.env.clone(), overrides };
    let code = rt.block_on(async move {
        let server = match crate::server::start(config, Some(source)).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(p) = &args.ports_file
            && let Err(e) = server.write_ports_file(p)
        {
            eprintln!("error: cannot write ports file {}: {e}", p.display());
            server.shutdown(Duration::from_secs(1)).await;
            return ExitCode::FAILURE;
        }
        wait_for_signal().await;
        tracing::info!("shutting down (a second SIGTERM or Ctrl-C exits at once)");
        let shutdown = server.shutdown(Duration::from_secs(args.shutdown_grace_secs));
        tokio::select! {
            _ = shutdown => ExitCode::SUCCESS,
            _ = wait_for_signal() => {
                tracing::warn!("second signal: exiting at once; rows still queued for the inference tables are lost");
                ExitCode::from(130)
            }
        }
    });
    // Spans still buffered go out while the runtime (the exporter's channel) is up.
    telemetry.shutdown();
    // Blocking work still running (a monitor refresh, a flush past the deadline) does not hold
    // the exit.
    rt.shutdown_timeout(Duration::from_millis(200));
    code
}

/// The config keys the flags replace; the validator judges them with the rest of the file.
fn overrides(args: &ServeArgs) -> Result<Overrides, super::CliError> {
    // A relative --ort-lib means the working directory; in the config it would mean the file's.
    let onnxruntime_lib = match args.ort_lib.as_deref() {
        None => None,
        Some(p) => {
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            let text = abs.to_str().ok_or_else(|| super::CliError::NotUtf8 { path: p.to_path_buf() })?;
            Some(text.to_string())
        }
    };
    Ok(Overrides {
        http_addr: args.http,
        grpc_addr: args.grpc,
        admin_addr: args.admin,
        onnxruntime_lib,
        test_clock: args.test_clock,
        config_store: args.config_store.clone(),
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::args::{Cli, Command};

    #[test]
    fn flags_become_overrides_with_a_relative_library_made_absolute() {
        let line = ["sluice", "serve", "--http", "127.0.0.1:0", "--ort-lib", "lib/libonnxruntime.so", "--test-clock"];
        let Some(Command::Serve(args)) = Cli::try_parse_from(line).unwrap().command else { panic!("not serve") };
        let o = overrides(&args).unwrap();
        assert_eq!(o.http_addr, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!((o.grpc_addr, o.admin_addr), (None, None));
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(o.onnxruntime_lib, Some(cwd.join("lib/libonnxruntime.so").display().to_string()));
        assert!(o.test_clock);
    }
}
