//! The command line: every subcommand, flag, default and help text of `sluice` (clap derive).
//! What each command does lives beside this file, one concern per file.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "sluice", version, about = "Model-serving gateway and traffic router for ONNX models")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the models and endpoints of a config file (default: ./sluice.toml, the bundled demo).
    #[command(after_help = "Example: sluice serve --config sluice.toml --env prod")]
    Serve(ServeArgs),
    /// Check a config file without serving: the base config and every environment in it.
    #[command(after_help = "Example: sluice validate sluice.toml --env prod")]
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
    /// A completion script for a shell, on stdout: write it where the shell looks, e.g.
    /// `sluice completions bash > ~/.local/share/bash-completion/completions/sluice`,
    /// `sluice completions zsh > ~/.zfunc/_sluice`,
    /// `sluice completions fish > ~/.config/fish/completions/sluice.fish`.
    #[command(after_help = "Example: sluice completions bash")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Tokens of `[[auth.tokens]]`: hash a secret, or make a new token and its config entry.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
}

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Read a secret (one line) from stdin; print its `hash` for `[[auth.tokens]]`.
    #[command(after_help = "Example: printf '%s' \"$SECRET\" | sluice auth hash")]
    Hash,
    /// Make a random token: the token on stderr, its `[[auth.tokens]]` entry on stdout.
    #[command(after_help = "Example: sluice auth new-token --name app --scope query:fraud --scope labels:fraud")]
    NewToken {
        /// The principal's name.
        #[arg(long)]
        name: String,
        /// Scopes: query:<endpoint>, query:*, labels:<endpoint>, labels:*, read, manage.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
}

#[derive(clap::Args)]
pub struct AdminArgs {
    /// Admin API of the running gateway.
    #[arg(long, global = true, env = "SLUICE_ADMIN_URL", default_value = "http://127.0.0.1:8002")]
    pub admin_url: String,
    /// Bearer token of the admin API.
    #[arg(long, global = true, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust for an https:// admin URL, besides the system's.
    #[arg(long, global = true, env = "SLUICE_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum EndpointsCommand {
    /// Every endpoint with its served models and traffic.
    #[command(after_help = "Example: sluice endpoints list -o json")]
    List {
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// One endpoint: its served models and traffic (a table; `-o json`: the endpoint with its
    /// config).
    #[command(after_help = "Example: sluice endpoints get fraud")]
    Get {
        name: String,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum TableCommand {
    /// Number of rows (a table; `-o json`: `[{"rows": N}]`).
    #[command(after_help = "Example: sluice table count fraud")]
    Count {
        table: String,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// The latest rows (a table; `-o json`: an array of row objects).
    #[command(after_help = "Example: sluice table tail fraud -n 5")]
    Tail {
        table: String,
        #[arg(short, long, default_value_t = 10)]
        n: usize,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Any SQL query, e.g. `SELECT served_model, count(*) FROM t GROUP BY 1` (a table; `-o
    /// json`: an array of row objects).
    #[command(after_help = "Example: sluice table sql fraud \"SELECT served_model, count(*) FROM t GROUP BY 1\"")]
    Sql {
        table: String,
        query: String,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Every file with OK or why readers skip it; exits 1 when any is skipped.
    #[command(after_help = "Example: sluice table check fraud")]
    Check { table: String },
    /// Compact small files into bigger ones (safe while gateways append: rows unchanged).
    #[command(after_help = "Example: sluice table optimize fraud --target-size 256MiB")]
    Optimize {
        table: String,
        /// Size of the compacted files.
        #[arg(long, default_value = "128MiB", value_parser = parse_bytes)]
        target_size: u64,
    },
    /// Delete data files that no table version of the last `--retain` refers to, and old log
    /// entries a checkpoint covers (safe while gateways append).
    #[command(after_help = "Example: sluice table vacuum fraud --retain 72h")]
    Vacuum {
        table: String,
        #[arg(long, default_value = "168h", value_parser = humantime::parse_duration)]
        retain: std::time::Duration,
    },
    /// Turn a directory of plain Parquet files (the inference-table format before Delta) into
    /// a Delta table in place: rows rewritten with today's column types, one commit, then the
    /// old files removed.
    #[command(after_help = "Example: sluice table convert data/fraud")]
    Convert { table: String },
}

/// `128MiB`, `64MB`, `1048576`: a size in bytes.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("'{s}' is not a size (e.g. 128MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(format!("'{s}': unknown unit (B, KB, KiB, MB, MiB, GB, GiB)")),
    };
    n.checked_mul(mult).filter(|&b| b > 0).ok_or_else(|| format!("'{s}' is out of range"))
}

#[derive(Subcommand)]
pub enum MonitorCommand {
    /// Write (or bring up to date) `<table>_profile_metrics` and `<table>_drift_metrics` for an
    /// inference table directory. Incremental: a second run reads only files added since.
    #[command(
        after_help = "Example: sluice monitor run --table data/fraud --config monitor.toml --baseline training.parquet"
    )]
    Run {
        /// The inference table: a directory (e.g. data/fraud) or `s3://bucket/prefix/table`
        /// (endpoint, region and credentials from the `AWS_*` environment variables; its files
        /// are read through copies under `<out>/_table_cache`).
        #[arg(long)]
        table: String,
        /// Baseline Parquet file (a training sample); overrides the config's `baseline`.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Monitor config (TOML: the keys of an endpoint's `monitor` table).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Labels table directory (default: <table>_labels beside the table, if present).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Where the metric tables go (default: the table's parent directory; required for an
        /// `s3://` table).
        #[arg(long)]
        out: Option<PathBuf>,
        /// `table`: what the run read and wrote and the alerts it fired or cleared; `json`: the
        /// run's report and alert transitions.
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// A running gateway's monitor: its last refresh, the newest window's drift and the alerts
    /// (tables; `-o json`: the whole status with the latest profile).
    #[command(after_help = "Example: sluice monitor status fraud")]
    Status {
        endpoint: String,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Refresh a running gateway's monitor now (prints what the refresh read and wrote and the
    /// alerts it fired or cleared; `-o json`: the refresh report and the status).
    #[command(after_help = "Example: sluice monitor refresh fraud")]
    Refresh {
        endpoint: String,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum TrafficCommand {
    /// Set an endpoint's split, e.g. `sluice traffic set fraud champion=90 challenger=10`.
    ///
    /// Prints what changed and the command that undoes it; `-o json` prints the endpoint.
    #[command(after_help = "Example: sluice traffic set fraud champion=90 challenger=10")]
    Set {
        endpoint: String,
        #[arg(required = true)]
        routes: Vec<String>,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Start one, e.g. `sluice rollout start fraud --to challenger --steps 5,25,50,100 --interval 5m`.
    ///
    /// Prints the first step, the traffic it moved and the command that undoes it; `-o json`
    /// prints the rollout.
    #[command(after_help = "Example: sluice rollout start fraud --to challenger --steps 5,25,50,100 --interval 5m")]
    Start(Box<StartArgs>),
    /// One endpoint's rollout with its events, or every rollout (a table; `-o json`: the rollouts).
    #[command(after_help = "Example: sluice rollout status fraud")]
    Status {
        endpoint: Option<String>,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Hold at the current step.
    #[command(after_help = "Example: sluice rollout pause fraud")]
    Pause {
        endpoint: String,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Go on from the current step.
    #[command(after_help = "Example: sluice rollout resume fraud")]
    Resume {
        endpoint: String,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Stop and send all traffic back to the incumbent.
    #[command(after_help = "Example: sluice rollout abort fraud")]
    Abort {
        endpoint: String,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(clap::Args)]
pub struct StartArgs {
    pub endpoint: String,
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: Output,
    /// The candidate served model.
    #[arg(long)]
    pub to: String,
    /// The incumbent (default: the route with the most traffic).
    #[arg(long)]
    pub from: Option<String>,
    /// Candidate traffic percentages.
    #[arg(long, value_delimiter = ',', required = true)]
    pub steps: Vec<u32>,
    /// Least time per step, e.g. 5m.
    #[arg(long)]
    pub interval: String,
    /// Candidate requests a step needs before it is judged (default 100).
    #[arg(long)]
    pub min_requests: Option<u64>,
    #[arg(long)]
    pub max_error_rate: Option<f64>,
    #[arg(long)]
    pub max_error_rate_increase: Option<f64>,
    #[arg(long)]
    pub max_p99_latency_ratio: Option<f64>,
    #[arg(long)]
    pub max_prediction_drift: Option<f64>,
    /// psi or js.
    #[arg(long)]
    pub drift_metric: Option<String>,
    #[arg(long)]
    pub max_quality_drop: Option<f64>,
    #[arg(long)]
    pub min_shadow_agreement: Option<f64>,
    #[arg(long)]
    pub webhook_url: Option<String>,
}

#[derive(Subcommand)]
pub enum ExperimentCommand {
    /// Per served model: traffic vs the split with a sample-ratio-mismatch check, errors,
    /// latency, the label-based metric with intervals and tests against the champion, a verdict.
    #[command(after_help = "Example: sluice experiment report fraud --since 24h")]
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
pub enum ConfigCommand {
    /// Numbered config versions of an endpoint, e.g. `sluice config history fraud` (a table; `-o
    /// json`: every version's whole config).
    #[command(after_help = "Example: sluice config history fraud")]
    History {
        endpoint: String,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Put an endpoint back to a config version, e.g. `sluice config rollback fraud 3` (prints what
    /// changed and the command that undoes it; `-o json` prints the endpoint).
    #[command(after_help = "Example: sluice config rollback fraud 3")]
    Rollback {
        endpoint: String,
        version: u64,
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Re-read the config file the gateway was started with (prints what changed in each
    /// endpoint and how to undo it; `-o json`: the gateway's answer).
    #[command(after_help = "Example: sluice config reload")]
    Reload {
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Write the latest config of a config store as TOML (to stdout or `--output`).
    #[command(after_help = "Example: sluice config export --store s3://ops/sluice -o sluice.toml")]
    Export {
        /// The store (`s3://bucket/prefix` or a directory); default: `storage.config_store` of
        /// `--config`.
        #[arg(long)]
        store: Option<String>,
        /// Config file whose `[storage]` settings (endpoint, region, allow_http) reach the store.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// An older version of the store instead of the latest (see `config import`'s undo).
        #[arg(long)]
        version: Option<u64>,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Validate a config file and write it to a config store as its next version (replicas
    /// follow it within their watch interval).
    #[command(after_help = "Example: sluice config import sluice.toml --env prod --reason \"raise the canary\"")]
    Import {
        file: PathBuf,
        /// The store; default: the file's `storage.config_store`.
        #[arg(long)]
        store: Option<String>,
        /// Environment overlay of the file to apply.
        #[arg(long)]
        env: Option<String>,
        /// Why (kept in the version's history).
        #[arg(long)]
        reason: Option<String>,
        /// `table`: the store's version old -> new, what changed in each endpoint and the
        /// commands that undo it; `json`: the same as an object.
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Config file.
    #[arg(long, short, default_value = "sluice.toml", env = "SLUICE_CONFIG")]
    pub config: PathBuf,
    /// Environment overlay of the config file to apply (e.g. dev, staging, prod).
    #[arg(long, env = "SLUICE_ENV")]
    pub env: Option<String>,
    /// ONNX Runtime library (default: config runtime.onnxruntime_lib, $ORT_DYLIB_PATH, or
    /// .ort/lib/libonnxruntime.so).
    #[arg(long, env = "SLUICE_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
    /// HTTP listen address (overrides server.http_addr).
    #[arg(long)]
    pub http: Option<std::net::SocketAddr>,
    /// gRPC listen address (overrides server.grpc_addr).
    #[arg(long)]
    pub grpc: Option<std::net::SocketAddr>,
    /// Admin and metrics listen address (overrides server.admin_addr).
    #[arg(long)]
    pub admin: Option<std::net::SocketAddr>,
    /// Write the bound ports as JSON to this file once serving.
    #[arg(long)]
    pub ports_file: Option<PathBuf>,
    /// Seconds to let in-flight requests finish on shutdown.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Run rollouts on a clock that `POST /debug/clock` moves forward (tests only).
    #[arg(long, hide = true)]
    pub test_clock: bool,
    /// Shared config store (`s3://bucket/prefix` or a directory; overrides
    /// storage.config_store): models and endpoints come from its latest version, every change
    /// is a new version, and the gateway follows the versions other replicas write.
    #[arg(long, env = "SLUICE_CONFIG_STORE")]
    pub config_store: Option<String>,
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
            config_store: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Splits a shell command line on spaces, keeping "double-quoted words" whole.
    fn words(line: &str) -> Vec<String> {
        let (mut out, mut word, mut quoted) = (Vec::new(), String::new(), false);
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ' ' if !quoted => out.extend((!word.is_empty()).then(|| std::mem::take(&mut word))),
                c => word.push(c),
            }
        }
        out.extend((!word.is_empty()).then_some(word));
        out
    }

    /// Every command a person runs shows one example in its `--help`, and the example is a
    /// command line of that very command that parses.
    #[test]
    fn every_command_has_an_example_that_parses() {
        fn leaves(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
            let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|c| c.get_name() != "help").collect();
            if subs.is_empty() {
                out.push((path.clone(), cmd.clone()));
            }
            for c in subs {
                let mut p = path.clone();
                p.push(c.get_name().to_string());
                leaves(c, p, out);
            }
        }
        let mut all = Vec::new();
        leaves(&Cli::command(), Vec::new(), &mut all);
        assert!(all.len() >= 29, "{}", all.len());
        for (path, mut cmd) in all {
            let help = cmd.render_help().to_string();
            let example = help
                .lines()
                .find_map(|l| l.strip_prefix("Example: "))
                .unwrap_or_else(|| panic!("`sluice {}` has no example:\n{help}", path.join(" ")));
            let line = &example[example.find("sluice ").unwrap_or_else(|| panic!("{example}"))..];
            let argv = words(line);
            assert_eq!(
                argv[1..=path.len()],
                path[..],
                "the example of `sluice {}` runs another command",
                path.join(" ")
            );
            if let Err(e) = Cli::try_parse_from(&argv) {
                panic!("the example of `sluice {}` does not parse: {e}", path.join(" "));
            }
        }
    }

    /// The completion scripts know every command; bash's parses (`bash -n`).
    #[test]
    fn completions_name_every_command() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut out);
            let script = String::from_utf8(out).unwrap();
            for word in ["serve", "endpoints", "traffic", "rollout", "experiment", "vacuum", "new-token", "completions"]
            {
                assert!(script.contains(word), "{shell}: no '{word}'");
            }
            if shell == clap_complete::Shell::Bash {
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("sluice.bash");
                std::fs::write(&file, &script).unwrap();
                let check = std::process::Command::new("bash").arg("-n").arg(&file).output().unwrap();
                assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
            }
        }
    }
}
