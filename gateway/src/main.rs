//! The `sluice` binary: parse flags, load and validate config, serve (or talk to a running
//! gateway's admin API), exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use hyper::Method;
use sluice::cli::{AdminClient, endpoints_table, traffic_from_pairs};
use sluice::config::Config;
use sluice::control::ConfigSource;

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
    /// Check a config file without serving: the base config and every environment in it.
    Validate {
        /// Config file to check.
        file: PathBuf,
        /// Check only this environment.
        #[arg(long)]
        env: Option<String>,
    },
    /// Endpoints of a running gateway.
    Endpoints {
        #[command(subcommand)]
        command: EndpointsCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Traffic of a running gateway's endpoints.
    Traffic {
        #[command(subcommand)]
        command: TrafficCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Look at an inference table: row count, latest rows, or SQL (the table is `t`, its labels
    /// `labels`).
    Table {
        #[command(subcommand)]
        command: TableCommand,
        /// Where tables live (server.data_dir).
        #[arg(long, global = true, default_value = "data", env = "SLUICE_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Drift and quality monitoring: run a monitor offline over any inference table, or look at
    /// a running gateway's monitors.
    Monitor {
        #[command(subcommand)]
        command: MonitorCommand,
    },
    /// Progressive rollouts of a running gateway: move an endpoint's traffic to a candidate step
    /// by step behind guardrails; pause, resume, abort, status.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A/B analysis of a running gateway's endpoint.
    Experiment {
        #[command(subcommand)]
        command: ExperimentCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Config history, rollback and reload of a running gateway.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Args)]
struct AdminArgs {
    /// Admin API of the running gateway.
    #[arg(long, global = true, env = "SLUICE_ADMIN_URL", default_value = "http://127.0.0.1:8002")]
    admin_url: String,
    /// Bearer token of the admin API.
    #[arg(long, global = true, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum EndpointsCommand {
    /// Every endpoint with its served models and traffic.
    List {
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// One endpoint (JSON).
    Get { name: String },
}

#[derive(Subcommand)]
enum TableCommand {
    /// Number of rows.
    Count { table: String },
    /// The latest rows.
    Tail {
        table: String,
        #[arg(short, long, default_value_t = 10)]
        n: usize,
    },
    /// Any SQL query, e.g. `SELECT served_model, count(*) FROM t GROUP BY 1`.
    Sql { table: String, query: String },
    /// Every file with OK or why readers skip it; exits 1 when any is skipped.
    Check { table: String },
}

#[derive(Subcommand)]
enum MonitorCommand {
    /// Write (or bring up to date) `<table>_profile_metrics` and `<table>_drift_metrics` for an
    /// inference table directory. Incremental: a second run reads only files added since.
    Run {
        /// The inference table directory (e.g. data/fraud).
        #[arg(long)]
        table: PathBuf,
        /// Baseline Parquet file (a training sample); overrides the config's `baseline`.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Monitor config (TOML: the keys of an endpoint's `monitor` table).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Labels table directory (default: <table>_labels beside the table, if present).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Where the metric tables go (default: the table's parent directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A running gateway's monitor: status, latest metrics and alerts (JSON).
    Status {
        endpoint: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Refresh a running gateway's monitor now.
    Refresh {
        endpoint: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum TrafficCommand {
    /// Set an endpoint's split, e.g. `sluice traffic set fraud champion=90 challenger=10`.
    Set {
        endpoint: String,
        #[arg(required = true)]
        routes: Vec<String>,
    },
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Start one, e.g. `sluice rollout start fraud --to challenger --steps 5,25,50,100 --interval 5m`.
    Start(Box<StartArgs>),
    /// One endpoint's rollout, or every rollout (JSON).
    Status { endpoint: Option<String> },
    /// Hold at the current step.
    Pause { endpoint: String },
    /// Go on from the current step.
    Resume { endpoint: String },
    /// Stop and send all traffic back to the incumbent.
    Abort { endpoint: String },
}

#[derive(clap::Args)]
struct StartArgs {
    endpoint: String,
    /// The candidate served model.
    #[arg(long)]
    to: String,
    /// The incumbent (default: the route with the most traffic).
    #[arg(long)]
    from: Option<String>,
    /// Candidate traffic percentages.
    #[arg(long, value_delimiter = ',', required = true)]
    steps: Vec<u32>,
    /// Least time per step, e.g. 5m.
    #[arg(long)]
    interval: String,
    /// Candidate requests a step needs before it is judged (default 100).
    #[arg(long)]
    min_requests: Option<u64>,
    #[arg(long)]
    max_error_rate: Option<f64>,
    #[arg(long)]
    max_error_rate_increase: Option<f64>,
    #[arg(long)]
    max_p99_latency_ratio: Option<f64>,
    #[arg(long)]
    max_prediction_drift: Option<f64>,
    /// psi or js.
    #[arg(long)]
    drift_metric: Option<String>,
    #[arg(long)]
    max_quality_drop: Option<f64>,
    #[arg(long)]
    min_shadow_agreement: Option<f64>,
    #[arg(long)]
    webhook_url: Option<String>,
}

#[derive(Subcommand)]
enum ExperimentCommand {
    /// Per served model: traffic vs the split with a sample-ratio-mismatch check, errors,
    /// latency, the label-based metric with intervals and tests against the champion, a verdict.
    Report {
        endpoint: String,
        /// RFC 3339 or a duration back from now (default: since the gateway started).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// Width of the shadow-agreement windows (default 1h).
        #[arg(long)]
        window: Option<String>,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Numbered config versions of an endpoint.
    History { endpoint: String },
    /// Put an endpoint back to a config version.
    Rollback { endpoint: String, version: u64 },
    /// Re-read the config file the gateway was started with.
    Reload,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Config file.
    #[arg(long, short, default_value = "sluice.toml", env = "SLUICE_CONFIG")]
    config: PathBuf,
    /// Environment overlay of the config file to apply (e.g. dev, staging, prod).
    #[arg(long, env = "SLUICE_ENV")]
    env: Option<String>,
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
    /// Run rollouts on a clock that `POST /debug/clock` moves forward (tests only).
    #[arg(long, hide = true)]
    test_clock: bool,
}

impl Default for ServeArgs {
    fn default() -> ServeArgs {
        ServeArgs {
            config: PathBuf::from("sluice.toml"),
            env: None,
            ort_lib: None,
            http: None,
            grpc: None,
            admin: None,
            ports_file: None,
            shutdown_grace_secs: 30,
            test_clock: false,
        }
    }
}

fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(Command::Serve(ServeArgs::default()));
    // `serve` sets up logging from its config ([telemetry]).
    if !matches!(command, Command::Serve(_)) {
        sluice::telemetry::init_logs();
    }
    match command {
        Command::Validate { file, env } => validate(&file, env.as_deref()),
        Command::Serve(args) => serve(args),
        Command::Endpoints { command, admin } => admin_command(admin, AdminCall::Endpoints(command)),
        Command::Traffic { command, admin } => admin_command(admin, AdminCall::Traffic(command)),
        Command::Config { command, admin } => admin_command(admin, AdminCall::Config(command)),
        Command::Rollout { command, admin } => admin_command(admin, AdminCall::Rollout(command)),
        Command::Experiment { command, admin } => admin_command(admin, AdminCall::Experiment(command)),
        Command::Table { command, data_dir } => table_command(command, &data_dir),
        Command::Monitor { command } => monitor_command(command),
    }
}

fn validate(file: &std::path::Path, env: Option<&str>) -> ExitCode {
    let envs: Vec<Option<String>> = match env {
        Some(e) => vec![Some(e.to_string())],
        None => {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let mut v = vec![None];
            v.extend(Config::environments(&text).unwrap_or_default().into_iter().map(Some));
            v
        }
    };
    let mut ok = true;
    for env in envs {
        let label = env.as_deref().map(|e| format!(" (environment {e})")).unwrap_or_default();
        let checked = Config::load(file, env.as_deref()).map_err(|e| e.to_string()).and_then(|c| {
            let rt = runtime().ok_or("cannot start the async runtime")?;
            rt.block_on(sluice::monitor::service::check_offline(&c)).map(|()| c)
        });
        match checked {
            Ok(c) => println!(
                "{}{label}: valid ({} model versions, {} endpoints)",
                file.display(),
                c.versions.len(),
                c.endpoints.len()
            ),
            Err(e) => {
                eprintln!("error{label}: {e}");
                ok = false;
            }
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::from(2) }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut config = match Config::load(&args.config, args.env.as_deref()) {
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
        if !a.ip().is_loopback() && config.server.admin_token.is_none() {
            eprintln!(
                "error: --admin {a} is not a loopback address, so the admin API needs a bearer token; \
                 set server.admin_token or SLUICE_ADMIN_TOKEN"
            );
            return ExitCode::from(2);
        }
        config.server.admin_addr = a;
    }
    if args.ort_lib.is_some() {
        config.runtime.onnxruntime_lib = args.ort_lib;
    }
    config.server.test_clock = args.test_clock;
    let Some(rt) = runtime() else { return ExitCode::FAILURE };
    let telemetry = match rt.block_on(async { sluice::telemetry::init(&config.telemetry) }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let source = ConfigSource { path: args.config.clone(), env: args.env.clone() };
    let code = rt.block_on(async move {
        let server = match sluice::server::start(config, Some(source)).await {
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
    // Spans still buffered go out while the runtime (the exporter's channel) is still up.
    telemetry.shutdown();
    // Blocking work still running (a monitor refresh, a flush past the deadline) does not hold
    // the exit.
    rt.shutdown_timeout(Duration::from_millis(200));
    code
}

fn table_command(command: TableCommand, data_dir: &std::path::Path) -> ExitCode {
    use sluice::cli_table::{TableQuery, query, table_dir};
    let (table, q) = match command {
        TableCommand::Count { table } => (table, TableQuery::Count),
        TableCommand::Tail { table, n } => (table, TableQuery::Tail(n)),
        TableCommand::Sql { table, query } => (table, TableQuery::Sql(query)),
        TableCommand::Check { table } => {
            return match sluice::cli_table::check(&table_dir(&table, data_dir)) {
                Ok((out, ok)) => {
                    println!("{out}");
                    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let Some(rt) = runtime() else { return ExitCode::FAILURE };
    match rt.block_on(query(&table_dir(&table, data_dir), &q)) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn monitor_command(command: MonitorCommand) -> ExitCode {
    match command {
        MonitorCommand::Run { table, baseline, config, labels, out } => {
            let Some(rt) = runtime() else { return ExitCode::FAILURE };
            let run = sluice::monitor::OfflineRun { table, labels, baseline, config, out };
            match rt.block_on(sluice::monitor::run_offline(&run)) {
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
        MonitorCommand::Status { endpoint, admin } => admin_command(admin, AdminCall::Monitor(endpoint, false)),
        MonitorCommand::Refresh { endpoint, admin } => admin_command(admin, AdminCall::Monitor(endpoint, true)),
    }
}

enum AdminCall {
    Monitor(String, bool),
    Endpoints(EndpointsCommand),
    Traffic(TrafficCommand),
    Config(ConfigCommand),
    Rollout(RolloutCommand),
    Experiment(ExperimentCommand),
}

fn admin_command(admin: AdminArgs, call: AdminCall) -> ExitCode {
    let Some(rt) = runtime() else { return ExitCode::FAILURE };
    let client = AdminClient::new(&admin.admin_url, admin.token);
    let result: Result<String, String> = rt.block_on(async {
        let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).unwrap_or_default();
        match call {
            AdminCall::Endpoints(EndpointsCommand::List { output }) => {
                let views = client.endpoints().await?;
                Ok(match output {
                    Output::Table => endpoints_table(&views),
                    Output::Json => pretty(serde_json::json!({ "endpoints": views })),
                })
            }
            AdminCall::Endpoints(EndpointsCommand::Get { name }) => {
                client.call(Method::GET, &format!("/admin/endpoints/{name}"), None).await.map(pretty)
            }
            AdminCall::Traffic(TrafficCommand::Set { endpoint, routes }) => {
                let body = traffic_from_pairs(&routes)?;
                client
                    .call(Method::PATCH, &format!("/admin/endpoints/{endpoint}/traffic"), Some(&body))
                    .await
                    .map(pretty)
            }
            AdminCall::Config(ConfigCommand::History { endpoint }) => {
                client.call(Method::GET, &format!("/admin/endpoints/{endpoint}/history"), None).await.map(pretty)
            }
            AdminCall::Config(ConfigCommand::Rollback { endpoint, version }) => {
                let body = serde_json::json!({ "version": version });
                client
                    .call(Method::POST, &format!("/admin/endpoints/{endpoint}/rollback"), Some(&body))
                    .await
                    .map(pretty)
            }
            AdminCall::Config(ConfigCommand::Reload) => {
                client.call(Method::POST, "/admin/reload", None).await.map(pretty)
            }
            AdminCall::Rollout(RolloutCommand::Start(args)) => {
                let StartArgs {
                    endpoint,
                    to,
                    from,
                    steps,
                    interval,
                    min_requests,
                    max_error_rate,
                    max_error_rate_increase,
                    max_p99_latency_ratio,
                    max_prediction_drift,
                    drift_metric,
                    max_quality_drop,
                    min_shadow_agreement,
                    webhook_url,
                } = *args;
                let guardrails = serde_json::json!({
                    "max_error_rate": max_error_rate,
                    "max_error_rate_increase": max_error_rate_increase,
                    "max_p99_latency_ratio": max_p99_latency_ratio,
                    "max_prediction_drift": max_prediction_drift,
                    "drift_metric": drift_metric,
                    "max_quality_drop": max_quality_drop,
                    "min_shadow_agreement": min_shadow_agreement,
                });
                let body = serde_json::json!({
                    "candidate": to,
                    "incumbent": from,
                    "steps": steps,
                    "interval": interval,
                    "min_requests": min_requests,
                    "guardrails": sluice::cli::without_nulls(guardrails),
                    "webhook_url": webhook_url,
                });
                let body = sluice::cli::without_nulls(body);
                client.call(Method::POST, &format!("/rollouts/{endpoint}"), Some(&body)).await.map(pretty)
            }
            AdminCall::Rollout(RolloutCommand::Status { endpoint }) => {
                let path = endpoint.map(|e| format!("/rollouts/{e}")).unwrap_or_else(|| "/rollouts".into());
                client.call(Method::GET, &path, None).await.map(pretty)
            }
            AdminCall::Rollout(RolloutCommand::Pause { endpoint }) => {
                client.call(Method::POST, &format!("/rollouts/{endpoint}/pause"), None).await.map(pretty)
            }
            AdminCall::Rollout(RolloutCommand::Resume { endpoint }) => {
                client.call(Method::POST, &format!("/rollouts/{endpoint}/resume"), None).await.map(pretty)
            }
            AdminCall::Rollout(RolloutCommand::Abort { endpoint }) => {
                client.call(Method::POST, &format!("/rollouts/{endpoint}/abort"), None).await.map(pretty)
            }
            AdminCall::Experiment(ExperimentCommand::Report { endpoint, since, until, window, output }) => {
                let mut query = Vec::new();
                for (k, v) in [("since", since), ("until", until), ("window", window)] {
                    if let Some(v) = v {
                        query.push(format!("{k}={}", sluice::cli::url_encode(&v)));
                    }
                }
                let q = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
                let report = client.call(Method::GET, &format!("/experiments/{endpoint}{q}"), None).await?;
                Ok(match output {
                    Output::Table => sluice::cli::experiment_table(&report),
                    Output::Json => pretty(report),
                })
            }
            AdminCall::Monitor(endpoint, false) => {
                client.call(Method::GET, &format!("/monitors/{endpoint}"), None).await.map(pretty)
            }
            AdminCall::Monitor(endpoint, true) => {
                client.call(Method::POST, &format!("/monitors/{endpoint}/refresh"), None).await.map(pretty)
            }
        }
    });
    match result {
        Ok(out) => {
            println!("{}", out.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
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
