//! The `sluice` binary: parse flags, load and validate config, serve, exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sluice::config::Config;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Model-serving gateway and traffic router for ONNX models")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the models and endpoints of a config file (default: ./sluice.toml, the bundled demo).
    Serve(ServeArgs),
    /// Check a config file without serving; exits non-zero and names each problem.
    Validate {
        /// Config file to check.
        file: PathBuf,
    },
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Config file.
    #[arg(long, short, default_value = "sluice.toml", env = "SLUICE_CONFIG")]
    config: PathBuf,
    /// ONNX Runtime library (default: config runtime.onnxruntime_lib, $ORT_DYLIB_PATH, or
    /// .ort/lib/libonnxruntime.so).
    #[arg(long, env = "SLUICE_ORT_LIB")]
    ort_lib: Option<PathBuf>,
    /// HTTP listen address (overrides server.http_addr).
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
    /// gRPC listen address (overrides server.grpc_addr).
    #[arg(long)]
    grpc: Option<std::net::SocketAddr>,
    /// Admin and metrics listen address (overrides server.admin_addr).
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
    /// Write the bound ports as JSON to this file once serving.
    #[arg(long)]
    ports_file: Option<PathBuf>,
    /// Seconds to let in-flight requests finish on shutdown.
    #[arg(long, default_value_t = 30)]
    shutdown_grace_secs: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(ServeArgs {
        config: PathBuf::from("sluice.toml"),
        shutdown_grace_secs: 30,
        ..ServeArgs::default()
    })) {
        Command::Validate { file } => match Config::load(&file) {
            Ok(c) => {
                println!("{}: valid ({} models, {} endpoints)", file.display(), c.models.len(), c.endpoints.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(a) = args.http {
        config.server.http_addr = a;
    }
    if let Some(a) = args.grpc {
        config.server.grpc_addr = a;
    }
    if let Some(a) = args.admin {
        config.server.admin_addr = a;
    }
    if args.ort_lib.is_some() {
        config.runtime.onnxruntime_lib = args.ort_lib;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match sluice::server::start(config).await {
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
        tracing::info!("shutting down");
        server.shutdown(Duration::from_secs(args.shutdown_grace_secs)).await;
        ExitCode::SUCCESS
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
