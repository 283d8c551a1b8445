//! Command-line flags. Flags given here override the same settings in a `--scenario` file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// What the load is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// MLflow `/predict` (POST {url}/endpoints/{endpoint}/predict, or {url}/predict)
    Predict,
    /// KServe V2 REST with JSON tensors (POST {url}/v2/models/{model}/infer)
    V2Json,
    /// KServe V2 REST with the binary tensor extension (raw little-endian tensor bytes)
    V2Binary,
    /// KServe V2 gRPC ModelInfer with raw_input_contents
    Grpc,
}

impl Target {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Predict => "predict",
            Target::V2Json => "v2-json",
            Target::V2Binary => "v2-binary",
            Target::Grpc => "grpc",
        }
    }
}

/// How open-loop requests are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced, 1/rate apart
    #[default]
    Constant,
    /// Exponential gaps with mean 1/rate (a Poisson process), seeded by --seed
    Poisson,
}

/// The `/predict` body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PredictFormat {
    /// {"dataframe_split": {"columns": [...], "data": [[...]]}} (columns left out when unknown: positional)
    #[default]
    DataframeSplit,
    /// {"instances": [[...]]}: for models without named features (raw tensors)
    Instances,
}

/// Report format on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Output {
    /// A readable table
    #[default]
    Table,
    /// The JSON report (the same as --json FILE writes)
    Json,
}

/// Load generator for Sluice (and any KServe V2 / MLflow server): closed loop (--concurrency) or
/// open loop (--rate, latency measured from each request's intended send time), served-model split
/// with a chi-squared test, and SLO checks. Exit code 0: ran and every SLO held; 2: an SLO failed;
/// 1: bad usage or the server could not be reached.
#[derive(Debug, Parser)]
#[command(name = "sluice-loadtest", version, max_term_width = 110)]
pub struct Cli {
    /// Protocol and route to load [default: predict]
    #[arg(long, value_enum)]
    pub target: Option<Target>,

    /// Server base URL [default: http://127.0.0.1:8000, or http://127.0.0.1:8001 for grpc]
    #[arg(long, env = "SLUICE_URL")]
    pub url: Option<String>,

    /// Endpoint for --target predict (POST {url}/endpoints/{endpoint}/predict; without it {url}/predict).
    /// Also the endpoint whose weights --expect-split-from-admin reads.
    #[arg(long)]
    pub endpoint: Option<String>,

    /// V2 model name for v2-json, v2-binary and grpc (an endpoint name works too); for predict, the
    /// V2 name whose metadata gives the input width when there is no --endpoint
    #[arg(long)]
    pub model: Option<String>,

    /// V2 model version (default: the server's choice)
    #[arg(long)]
    pub model_version: Option<String>,

    /// Closed loop: N workers, each sending its next request as soon as the last one is answered
    /// [default: 1 when neither --rate nor --scenario is given]
    #[arg(long, short = 'c', conflicts_with_all = ["rate", "scenario"])]
    pub concurrency: Option<usize>,

    /// Open loop: requests per second on a fixed schedule, whatever the server does
    #[arg(long, short = 'r', conflicts_with = "scenario")]
    pub rate: Option<f64>,

    /// Open-loop arrival process
    #[arg(long, value_enum, requires = "rate")]
    pub arrival: Option<Arrival>,

    /// Open loop: most requests in flight; a request due while this many are outstanding is not
    /// sent and counts as a `client_overload` error [default: 1024]
    #[arg(long)]
    pub max_in_flight: Option<usize>,

    /// Length of the run, warm-up included [default: 15s]
    #[arg(long, short = 'd', value_parser = humantime::parse_duration, conflicts_with = "scenario")]
    pub duration: Option<Duration>,

    /// First part of the run whose requests are sent but left out of every statistic [default: 2s]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,

    /// Per-request timeout; a request that takes longer counts as a `timeout` error [default: 30s]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,

    /// Rows per request [default: 1]
    #[arg(long)]
    pub rows: Option<usize>,

    /// Seed of the value generator and of Poisson arrivals [default: 1]
    #[arg(long)]
    pub seed: Option<u64>,

    /// Feature names of the generated rows, in input order (sent as dataframe_split columns; lets
    /// drift shifts name a column)
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,

    /// JSON payload: a dataframe_split file ({"columns", "data"}, bare or under "dataframe_split") whose
    /// rows are cycled and converted for every target; any other JSON is a body sent as is (predict
    /// and v2-json only)
    #[arg(long)]
    pub payload: Option<PathBuf>,

    /// Baseline Parquet file (a training sample): each request's rows are drawn from it, seeded by
    /// --seed. Default for --endpoint without --payload: the baseline of the endpoint's monitor,
    /// read from the admin API (--admin-url), when this machine can open it
    #[arg(long, conflicts_with = "payload")]
    pub baseline: Option<PathBuf>,

    /// Send standard-normal values even when the endpoint's monitor has a baseline
    #[arg(long, conflicts_with_all = ["payload", "baseline"])]
    pub generated: bool,

    /// Sluice admin API, where the endpoint's monitor baseline is looked up [default:
    /// http://127.0.0.1:8002]
    #[arg(long, value_name = "ADMIN_URL", env = "SLUICE_ADMIN_URL")]
    pub admin_url: Option<String>,

    /// `/predict` body format [default: dataframe-split]
    #[arg(long, value_enum)]
    pub predict_format: Option<PredictFormat>,

    /// Extra request header 'Name: value' (HTTP headers, gRPC metadata); repeatable
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,

    /// A CA certificate (PEM) to trust for https:// URLs, besides the system's
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,

    /// Scenario file (TOML): phases run in order, with optional drift; flags override its settings
    #[arg(long)]
    pub scenario: Option<PathBuf>,

    /// Expected traffic weights per served model, e.g. champion=90,challenger=10
    #[arg(long, conflicts_with = "expect_split_from_admin")]
    pub expect_split: Option<String>,

    /// Read the expected weights from a Sluice admin API (GET {admin}/admin/endpoints/{endpoint})
    #[arg(long, value_name = "ADMIN_URL")]
    pub expect_split_from_admin: Option<String>,

    /// Bearer token for the admin API
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// SLO: fail (exit 2) when the p99 latency is above this many milliseconds
    #[arg(long)]
    pub max_p99_ms: Option<f64>,

    /// SLO: fail when the share of failed requests (all error kinds) is above this fraction
    #[arg(long)]
    pub max_error_rate: Option<f64>,

    /// SLO: fail when successful requests per second are below this
    #[arg(long)]
    pub min_rps: Option<f64>,

    /// SLO: fail when a served model's observed share differs from its expected share by more than
    /// this many percentage points
    #[arg(long, value_name = "PP")]
    pub max_split_deviation: Option<f64>,

    /// SLO: fail when the chi-squared goodness-of-fit p-value of the split is below this
    #[arg(long, value_name = "P")]
    pub min_split_pvalue: Option<f64>,

    /// Report format on stdout
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,

    /// Also write the JSON report to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write one JSON line per request sent (warm-up included) to this file: the request id the
    /// server answered with (`x-request-id`, or the ModelInferResponse id), rows, outcome and
    /// served model; for checking what the server logged against what it answered
    #[arg(long, value_name = "FILE")]
    pub request_log: Option<PathBuf>,

    /// Print a progress line to stderr every second (default: only on runs over 10 s when stderr is
    /// a terminal)
    #[arg(long)]
    pub progress: bool,
}
