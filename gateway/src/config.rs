//! Configuration: TOML file (with optional `environments` overlays) -> [`raw::RawConfig`] ->
//! command-line [`Overrides`] -> validated [`Config`], all before any port is bound. Every problem
//! is reported with the field it is in and how to fix it.

pub mod history;
mod overlay;
pub mod overrides;
pub mod raw;
pub(crate) mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use overlay::OverlayError;
pub use overrides::Overrides;
use raw::{RawConfig, RawEndpoint, Secret};

use crate::runtime::RunnerOptions;

pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8000";
pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:8001";
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:8002";
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
pub const DEFAULT_MAX_BATCH_SIZE: usize = 64;
pub const DEFAULT_SHADOW_QUEUE_CAPACITY: usize = 256;
/// Environment variable holding the admin bearer token (instead of `server.admin_token`).
pub const ADMIN_TOKEN_ENV: &str = "SLUICE_ADMIN_TOKEN";

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Where: `models[0].batching.max_batch_size`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path} is not valid: {source}")]
    Parse { path: String, source: overlay::OverlayError },
    #[error("config {path} has {} problem(s):\n{}", .issues.len(), Issues(.issues))]
    Invalid { path: String, issues: Vec<ConfigIssue> },
}

struct Issues<'a>(&'a [ConfigIssue]);

impl fmt::Display for Issues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {}: {}", issue.field, issue.message)?;
        }
        Ok(())
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub runtime: RuntimeConfig,
    pub models: Vec<ModelConfig>,
    pub endpoints: Vec<EndpointConfig>,
    pub telemetry: TelemetryConfig,
    /// `[[auth.tokens]]`: who may call, with which scopes (applied on reload).
    pub auth: std::sync::Arc<crate::auth::Principals>,
    /// Options of every model version to load: `[[models]]` versions and every version a served
    /// entity names.
    pub versions: BTreeMap<(String, u64), RunnerOptions>,
    /// The configuration as written (after the environment overlay), for edits.
    pub raw: RawConfig,
    /// Directory relative paths are resolved from.
    pub base: PathBuf,
    /// `[storage]`: where tables live.
    pub storage: StorageConfig,
    /// Served entities whose MLflow alias is not resolved yet (`endpoint/served model`): such a
    /// config is checked but not served until [`crate::registry::mlflow::prepare`] resolves them.
    pub unresolved: Vec<String>,
}

/// Where inference and labels tables live.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// `storage.tables` when it is object storage (`s3://...`); `None`: local tables under
    /// `server.data_dir` (or `storage.tables` when that is a local path).
    pub remote: Option<sluice_tables::Location>,
    /// The local directory of the tables: the tables themselves, or for remote tables the
    /// readers' copies of their files.
    pub local: PathBuf,
    /// `storage.config_store`: where the shared config versions live.
    pub config_store: Option<sluice_tables::Location>,
}

/// How the process logs and traces (`[telemetry]`; applied at startup, not on reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// OTLP/gRPC collector URL (`http://` or `https://`); `None`: no trace export.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> TelemetryConfig {
        TelemetryConfig { log_format: LogFormat::Text, otlp_endpoint: None, service_name: "sluice".into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub admin_token: Option<Secret>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Timeouts and limits of the listeners (`server::stack`).
    pub limits: ListenerLimits,
    /// Endpoint answering `POST /predict`.
    pub default_endpoint: Option<String>,
    pub watch_config: bool,
    pub watch_interval: Duration,
    /// `drain_delay_ms`: how long a stopping gateway keeps accepting after it reports not ready.
    pub drain_delay: Duration,
    /// `leader_lease_ms`: the leader lease's slot.
    pub leader_lease: Duration,
    /// `fleet_report_ms`: how often this replica publishes its report to the config store.
    pub fleet_report: Duration,
    /// `fleet_ready_timeout_ms`: how long a new config version waits for every live replica.
    pub fleet_ready_timeout: Duration,
    /// Where inference tables live.
    pub data_dir: PathBuf,
    /// Rollouts run on a clock that `POST /debug/clock` moves forward (`serve --test-clock`;
    /// for tests only).
    pub test_clock: bool,
    /// Memory of each DataFusion session of the table reads ([`crate::analysis`]).
    pub analysis_memory_bytes: usize,
    /// Labels each principal may post per second.
    pub labels_per_second: u64,
    /// TLS on every listener; `None`: plain TCP.
    pub tls: Option<TlsFiles>,
    /// A CA to trust for `https://` webhooks besides the system's.
    pub webhook_ca_file: Option<PathBuf>,
}

/// The files of `[server.tls]`, resolved against the config's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
}

/// What a client can hold of the listeners, and for how long (`[server]` keys of the same
/// names, in milliseconds where they are times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub total_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_requests: usize,
    pub max_buffered_body_bytes: usize,
    pub max_concurrent_streams: u32,
    pub keepalive_interval: Duration,
}

impl Default for ListenerLimits {
    fn default() -> ListenerLimits {
        ListenerLimits {
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(120),
            max_connections: 4096,
            max_concurrent_requests: 1024,
            max_buffered_body_bytes: 256 * 1024 * 1024,
            max_concurrent_streams: 256,
            keepalive_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub onnxruntime_lib: Option<PathBuf>,
    /// Where models are loaded from: the repository, or with a `model_store` the local cache
    /// its versions are copied into (`<data_dir>/_model_cache`).
    pub model_repository: PathBuf,
    /// `model_repository = "s3://..."`: the store the versions are copied from
    /// ([`crate::registry::fetch`]).
    pub model_store: Option<sluice_tables::Location>,
    /// `registry_uri`: an MLflow tracking server whose registry every model comes from
    /// ([`crate::registry::mlflow`]), copied into the same cache.
    pub registry: Option<RegistrySource>,
}

/// An MLflow Model Registry as the model source.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrySource {
    /// `http(s)://host:port` of the tracking server, without a trailing slash.
    pub uri: String,
    /// How often watched aliases are read.
    pub poll: Duration,
}

/// A `[[models]]` entry: a repository model and the versions of it to load.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub versions: Vec<u64>,
    pub options: RunnerOptions,
}

/// An endpoint: the served entities (model versions) behind it, the traffic split, shadows.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub name: String,
    pub served_entities: Vec<ServedEntity>,
    pub routes: Vec<Route>,
    pub shadows: Vec<ShadowRoute>,
    pub sticky_key: Option<StickyKey>,
    pub allow_override: bool,
    pub shadow_queue_capacity: usize,
    /// Bytes (estimated) that mirrored requests may hold (`shadow_queue_max_bytes`).
    pub shadow_queue_max_bytes: usize,
    pub routing_seed: Option<u64>,
    /// The endpoint's inference table, when logging is on.
    pub table: Option<crate::inference_log::TableOptions>,
    /// The endpoint's monitor (needs the inference table).
    pub monitor: Option<crate::monitor::MonitorSpec>,
    /// A rollout declared in the config.
    pub rollout: Option<crate::rollout::spec::RolloutSpec>,
    /// A/B analysis settings (defaults when not written).
    pub experiment: crate::experiment::spec::ExperimentSpec,
    /// `response_format = "mlflow"`: `/predict` answers as an MLflow pyfunc of the ONNX model
    /// does (`{"predictions": {<output>: [...]}}`) instead of Sluice's `label`/`probabilities`.
    pub mlflow_predictions: bool,
    /// `watch_aliases`: follow the registry's aliases of the alias entities.
    pub watch_aliases: bool,
    /// How a moved alias reaches traffic (`None`: swapped at once).
    pub alias_rollout: Option<crate::rollout::spec::RawAliasRollout>,
    /// As written, for the admin API and history.
    pub raw: RawEndpoint,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServedEntity {
    pub name: String,
    pub model: String,
    /// The version served (for an alias, the version it named when the config was made; 0
    /// while it is unresolved).
    pub version: u64,
    /// `entity_version = "@alias"`: the MLflow alias (without `@`).
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub served_model_name: String,
    pub traffic_percentage: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShadowRoute {
    pub served_model_name: String,
    pub mirror_percent: u32,
}

/// Where the sticky-assignment key of a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    /// A request header (lowercase name).
    Header(String),
    /// A top-level field of the `/predict` body, e.g. `client_request_id`.
    Field(String),
}

impl Config {
    /// Reads and validates a config file, applying environment `env` when given.
    pub fn load(path: &Path, env: Option<&str>) -> Result<Config, ConfigError> {
        Config::load_with(path, env, &Overrides::default())
    }

    /// Reads a config file, applies environment `env` and then the command-line `overrides`,
    /// and validates the result.
    pub fn load_with(path: &Path, env: Option<&str>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml_with(&text, &path.display().to_string(), base, env, overrides)
    }

    /// Parses and validates TOML text without an environment; `base` resolves relative paths.
    pub fn from_toml(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
        Config::from_toml_env(text, name, base, None)
    }

    /// Parses TOML text, applies the overlay of environment `env`, validates.
    pub fn from_toml_env(text: &str, name: &str, base: &Path, env: Option<&str>) -> Result<Config, ConfigError> {
        Config::from_toml_with(text, name, base, env, &Overrides::default())
    }

    /// Parses TOML text, applies the overlay of environment `env`, then `overrides` (to the raw
    /// config: the validator judges the result), validates.
    pub fn from_toml_with(
        text: &str,
        name: &str,
        base: &Path,
        env: Option<&str>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut raw =
            overlay::parse(text, env).map_err(|source| ConfigError::Parse { path: name.to_string(), source })?;
        overrides.apply(&mut raw);
        let mut config = Config::from_raw(raw, name, base)?;
        config.server.test_clock = overrides.test_clock;
        Ok(config)
    }

    /// Validates an already parsed configuration (admin API edits come this way).
    pub fn from_raw(raw: RawConfig, name: &str, base: &Path) -> Result<Config, ConfigError> {
        validate::validate(raw, base).map_err(|issues| ConfigError::Invalid { path: name.to_string(), issues })
    }

    /// Names of the environments a config file defines.
    pub fn environments(text: &str) -> Result<Vec<String>, overlay::OverlayError> {
        overlay::environments(text)
    }

    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn endpoint(&self, name: &str) -> Option<&EndpointConfig> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// The model file of a version: `<repository>/<name>/<version>/model.onnx`.
    pub fn model_path(&self, name: &str, version: u64) -> PathBuf {
        model_path(&self.runtime.model_repository, name, version)
    }
}

pub(crate) fn model_path(repo: &Path, name: &str, version: u64) -> PathBuf {
    repo.join(name).join(version.to_string()).join("model.onnx")
}

#[cfg(test)]
mod tests;
