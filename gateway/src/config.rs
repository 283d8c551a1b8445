//! Configuration: TOML file -> [`raw::RawConfig`] -> validated [`Config`], all before any port is
//! bound. Every problem is reported with the field it is in and how to fix it.

pub mod raw;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raw::{RawConfig, RawModel, RawVersion};

use crate::runtime::{BatchingOptions, ExecutionOptions, Provider, RunnerOptions};

pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8000";
pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:8001";
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:8002";
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
pub const DEFAULT_MAX_BATCH_SIZE: usize = 64;

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
    #[error("config {path} is not valid TOML: {message}")]
    Parse { path: String, message: String },
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
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Endpoint answering `POST /predict`.
    pub default_endpoint: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub onnxruntime_lib: Option<PathBuf>,
    pub model_repository: PathBuf,
}

/// A model of the repository and the versions of it to load.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub versions: Vec<u64>,
    pub options: RunnerOptions,
}

/// An endpoint: the served entities (model versions) behind it and the traffic split.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub name: String,
    pub served_entities: Vec<ServedEntity>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServedEntity {
    pub name: String,
    pub model: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub served_model_name: String,
    pub traffic_percentage: u32,
}

impl Config {
    /// Reads and validates a config file; relative paths in it are taken from its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, &path.display().to_string(), base)
    }

    /// Parses and validates TOML text; `base` resolves relative paths.
    pub fn from_toml(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: name.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        validate(raw, base).map_err(|issues| ConfigError::Invalid { path: name.to_string(), issues })
    }

    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The model file of a version: `<repository>/<name>/<version>/model.onnx`.
    pub fn model_path(&self, name: &str, version: u64) -> PathBuf {
        self.runtime.model_repository.join(name).join(version.to_string()).join("model.onnx")
    }
}

#[derive(Default)]
struct Issues2(Vec<ConfigIssue>);

impl Issues2 {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue { field: field.into(), message: message.into() });
    }
}

fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.starts_with('.')
}

const NAME_RULE: &str = "use 1-128 characters from letters, digits, '_', '-', '.' (not starting with '.')";

fn validate(raw: RawConfig, base: &Path) -> Result<Config, Vec<ConfigIssue>> {
    let mut issues = Issues2::default();
    let addr = |issues: &mut Issues2, field: &str, v: Option<&String>, default: &str| -> SocketAddr {
        let text = v.map(String::as_str).unwrap_or(default);
        text.parse().unwrap_or_else(|_| {
            issues.add(
                format!("server.{field}"),
                format!("'{text}' is not an address; write IP:PORT, e.g. \"{default}\""),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    };
    let s = &raw.server;
    let http_addr = addr(&mut issues, "http_addr", s.http_addr.as_ref(), DEFAULT_HTTP_ADDR);
    let grpc_addr = addr(&mut issues, "grpc_addr", s.grpc_addr.as_ref(), DEFAULT_GRPC_ADDR);
    let admin_addr = addr(&mut issues, "admin_addr", s.admin_addr.as_ref(), DEFAULT_ADMIN_ADDR);
    let max_body_bytes = match s.max_body_bytes {
        Some(0) => {
            issues.add("server.max_body_bytes", "must be at least 1 (default 16777216 = 16 MiB)");
            DEFAULT_MAX_BODY_BYTES
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => DEFAULT_MAX_BODY_BYTES,
    };
    let timeout_ms = match s.request_timeout_ms {
        Some(0) => {
            issues.add("server.request_timeout_ms", "must be at least 1 (default 30000)");
            DEFAULT_TIMEOUT_MS
        }
        Some(n) => n,
        None => DEFAULT_TIMEOUT_MS,
    };
    let request_timeout = Duration::from_millis(timeout_ms);
    let runtime = RuntimeConfig {
        onnxruntime_lib: raw.runtime.onnxruntime_lib.as_ref().map(|p| base.join(p)),
        model_repository: base.join(raw.runtime.model_repository.as_deref().unwrap_or("models")),
    };
    if raw.models.is_empty() {
        issues.add("models", "no models configured; add a [[models]] table with name and versions");
    }
    let mut models = Vec::new();
    let mut model_names = HashSet::new();
    for (i, m) in raw.models.iter().enumerate() {
        if let Some(cfg) = validate_model(&mut issues, i, m, &runtime.model_repository, request_timeout) {
            if !model_names.insert(cfg.name.clone()) {
                issues.add(
                    format!("models[{i}].name"),
                    format!("model '{}' is listed twice; merge the entries", cfg.name),
                );
            }
            models.push(cfg);
        }
    }
    let mut endpoints = Vec::new();
    let mut endpoint_names = HashSet::new();
    for (i, e) in raw.endpoints.iter().enumerate() {
        let field = format!("endpoints[{i}]");
        if !is_valid_name(&e.name) {
            issues.add(format!("{field}.name"), format!("'{}' is not a valid name; {NAME_RULE}", e.name));
        }
        if !endpoint_names.insert(e.name.clone()) {
            issues.add(format!("{field}.name"), format!("endpoint '{}' is defined twice; rename one", e.name));
        }
        if let Some(ep) = validate_endpoint(&mut issues, &field, e, &models) {
            endpoints.push(ep);
        }
    }
    let default_endpoint = match &s.default_endpoint {
        Some(d) => {
            if !endpoint_names.contains(d) {
                issues.add(
                    "server.default_endpoint",
                    format!("names endpoint '{d}', which is not defined; use one of {:?}", sorted(&endpoint_names)),
                );
            }
            Some(d.clone())
        }
        None if endpoints.len() == 1 => endpoints.first().map(|e| e.name.clone()),
        None => None,
    };
    if !issues.0.is_empty() {
        return Err(issues.0);
    }
    Ok(Config {
        server: ServerConfig { http_addr, grpc_addr, admin_addr, max_body_bytes, request_timeout, default_endpoint },
        runtime,
        models,
        endpoints,
    })
}

fn sorted(set: &HashSet<String>) -> Vec<&String> {
    let mut v: Vec<&String> = set.iter().collect();
    v.sort();
    v
}

fn validate_model(issues: &mut Issues2, i: usize, m: &RawModel, repo: &Path, timeout: Duration) -> Option<ModelConfig> {
    let field = format!("models[{i}]");
    let before = issues.0.len();
    if !is_valid_name(&m.name) {
        issues.add(format!("{field}.name"), format!("'{}' is not a valid model name; {NAME_RULE}", m.name));
    }
    if m.versions.is_empty() {
        issues.add(format!("{field}.versions"), "list at least one version, e.g. versions = [1]");
    }
    let mut seen = HashSet::new();
    for v in &m.versions {
        if !seen.insert(*v) {
            issues.add(format!("{field}.versions"), format!("version {v} is listed twice"));
        }
        let path = repo.join(&m.name).join(v.to_string()).join("model.onnx");
        if is_valid_name(&m.name) && !path.is_file() {
            issues.add(
                format!("{field}.versions"),
                format!(
                    "version {v} of '{}' has no model file at {}; add it or remove the version",
                    m.name,
                    path.display()
                ),
            );
        }
    }
    let provider = match m.provider.as_deref().unwrap_or("cpu") {
        "cpu" => Provider::Cpu,
        "cuda" => Provider::Cuda { device_id: m.device_id.unwrap_or(0) },
        other => {
            issues.add(format!("{field}.provider"), format!("'{other}' is not a provider; use \"cpu\" or \"cuda\""));
            Provider::Cpu
        }
    };
    if m.device_id.is_some_and(|d| d < 0) {
        issues.add(format!("{field}.device_id"), "must be 0 or more");
    }
    let bounded = |issues: &mut Issues2, name: &str, v: Option<u64>, default: usize, max: usize| -> usize {
        match v {
            None => default,
            Some(n) if n >= 1 && n <= max as u64 => n as usize,
            Some(n) => {
                issues
                    .add(format!("{field}.{name}"), format!("{n} is out of range; use 1..={max} (default {default})"));
                default
            }
        }
    };
    let intra_op_threads = bounded(issues, "intra_op_threads", m.intra_op_threads, 1, 256);
    let instances = bounded(issues, "instances", m.instances, 1, 64);
    let queue_capacity = bounded(issues, "queue_capacity", m.queue_capacity, DEFAULT_QUEUE_CAPACITY, 1 << 20);
    let max_batch_size =
        bounded(issues, "batching.max_batch_size", m.batching.max_batch_size, DEFAULT_MAX_BATCH_SIZE, 1 << 16);
    let delay_us = m.batching.max_queue_delay_us.unwrap_or(0);
    if delay_us > 1_000_000 {
        issues.add(
            format!("{field}.batching.max_queue_delay_us"),
            format!("{delay_us} us is more than 1 s; use 0..=1000000"),
        );
    }
    let batching = m
        .batching
        .enabled
        .unwrap_or(true)
        .then_some(BatchingOptions { max_batch_size, max_queue_delay: Duration::from_micros(delay_us.min(1_000_000)) });
    if issues.0.len() > before {
        return None;
    }
    Some(ModelConfig {
        name: m.name.clone(),
        versions: m.versions.clone(),
        options: RunnerOptions {
            execution: ExecutionOptions { provider, intra_op_threads, instances },
            batching,
            queue_capacity,
            timeout,
        },
    })
}

fn validate_endpoint(
    issues: &mut Issues2,
    field: &str,
    e: &raw::RawEndpoint,
    models: &[ModelConfig],
) -> Option<EndpointConfig> {
    let before = issues.0.len();
    if e.served_entities.is_empty() {
        issues.add(format!("{field}.served_entities"), "list at least one served entity (entity_name, entity_version)");
    }
    let mut served = Vec::new();
    let mut names = HashSet::new();
    for (j, s) in e.served_entities.iter().enumerate() {
        let f = format!("{field}.served_entities[{j}]");
        let version = match &s.entity_version {
            RawVersion::Num(n) => Some(*n),
            RawVersion::Str(t) => t.parse::<u64>().ok().or_else(|| {
                issues.add(format!("{f}.entity_version"), format!("'{t}' is not a version number"));
                None
            }),
        };
        match models.iter().find(|m| m.name == s.entity_name) {
            None => issues.add(
                format!("{f}.entity_name"),
                format!(
                    "model '{}' is not in [[models]]; add it there or use one of {:?}",
                    s.entity_name,
                    models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>()
                ),
            ),
            Some(m) => {
                if let Some(v) = version
                    && !m.versions.contains(&v)
                {
                    issues.add(
                        format!("{f}.entity_version"),
                        format!(
                            "model '{}' has no loaded version {v}; add it to its versions {:?}",
                            m.name, m.versions
                        ),
                    );
                }
            }
        }
        let name = s
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", s.entity_name, version.map(|v| v.to_string()).unwrap_or_default()));
        if !is_valid_name(&name) {
            issues.add(format!("{f}.name"), format!("'{name}' is not a valid served model name; {NAME_RULE}"));
        }
        if !names.insert(name.clone()) {
            issues.add(
                format!("{f}.name"),
                format!("served model '{name}' appears twice in this endpoint; give each a unique name"),
            );
        }
        if let Some(version) = version {
            served.push(ServedEntity { name, model: s.entity_name.clone(), version });
        }
    }
    let routes = match &e.traffic_config {
        None if served.len() == 1 => vec![Route { served_model_name: served[0].name.clone(), traffic_percentage: 100 }],
        None => {
            issues.add(
                format!("{field}.traffic_config"),
                "an endpoint with several served entities needs traffic_config.routes that split 100 percent among them",
            );
            Vec::new()
        }
        Some(tc) => {
            let mut routes = Vec::new();
            let mut total = 0i64;
            let mut seen = HashSet::new();
            for (k, r) in tc.routes.iter().enumerate() {
                let f = format!("{field}.traffic_config.routes[{k}]");
                if !names.contains(&r.served_model_name) {
                    issues.add(
                        format!("{f}.served_model_name"),
                        format!(
                            "'{}' is not a served entity of this endpoint; use one of {:?}",
                            r.served_model_name,
                            sorted(&names)
                        ),
                    );
                }
                if !seen.insert(r.served_model_name.clone()) {
                    issues.add(
                        format!("{f}.served_model_name"),
                        format!("'{}' has two routes; merge them", r.served_model_name),
                    );
                }
                if !(0..=100).contains(&r.traffic_percentage) {
                    issues.add(
                        format!("{f}.traffic_percentage"),
                        format!("{} is not a percentage; use 0..=100", r.traffic_percentage),
                    );
                }
                total += r.traffic_percentage;
                routes.push(Route {
                    served_model_name: r.served_model_name.clone(),
                    traffic_percentage: r.traffic_percentage.clamp(0, 100) as u32,
                });
            }
            if total != 100 {
                issues.add(
                    format!("{field}.traffic_config.routes"),
                    format!("traffic percentages sum to {total}; they must sum to 100"),
                );
            }
            routes
        }
    };
    if issues.0.len() > before {
        return None;
    }
    Some(EndpointConfig { name: e.name.clone(), served_entities: served, routes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn check(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "test.toml", &repo())
    }

    const GOOD: &str = r#"
        [[models]]
        name = "fraud_classifier"
        versions = [1, 2]
        [[endpoints]]
        name = "fraud"
        served_entities = [{ name = "a", entity_name = "fraud_classifier", entity_version = "1" },
                           { name = "b", entity_name = "fraud_classifier", entity_version = 2 }]
        traffic_config = { routes = [{ served_model_name = "a", traffic_percentage = 90 },
                                     { served_model_name = "b", traffic_percentage = 10 }] }
    "#;

    #[test]
    fn good_config_validates_with_defaults() {
        let c = check(GOOD).unwrap();
        assert_eq!(c.server.http_addr.port(), 8000);
        assert_eq!(c.server.grpc_addr.port(), 8001);
        assert_eq!(c.server.admin_addr.to_string(), "127.0.0.1:8002");
        assert_eq!(c.server.max_body_bytes, 16 * 1024 * 1024);
        assert_eq!(c.server.default_endpoint.as_deref(), Some("fraud"));
        assert_eq!(c.endpoints[0].routes[1].traffic_percentage, 10);
        assert_eq!(c.endpoints[0].served_entities[1].version, 2);
    }

    fn issues_of(text: &str) -> Vec<ConfigIssue> {
        match check(text) {
            Err(ConfigError::Invalid { issues, .. }) => issues,
            other => panic!("expected invalid config, got {other:?}"),
        }
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"[[models]]
                name = "fraud_classifier"
                versions = [9]"#,
                "models[0].versions",
                "no model file",
            ),
            (
                r#"[[models]]
                name = "fraud_classifier"
                versions = [1]
                provider = "tpu""#,
                "models[0].provider",
                "\"cpu\" or \"cuda\"",
            ),
            (
                r#"[[models]]
                name = "fraud_classifier"
                versions = [1]
                batching = { max_batch_size = 0 }"#,
                "models[0].batching.max_batch_size",
                "out of range",
            ),
            (
                r#"[server]
                http_addr = "localhost"
                [[models]]
                name = "mlp"
                versions = [1]"#,
                "server.http_addr",
                "IP:PORT",
            ),
            (
                &GOOD.replace("traffic_percentage = 10", "traffic_percentage = 20"),
                "endpoints[0].traffic_config.routes",
                "sum to 110",
            ),
            (
                &GOOD.replace("served_model_name = \"b\"", "served_model_name = \"c\""),
                "endpoints[0].traffic_config.routes[1].served_model_name",
                "not a served entity",
            ),
            (
                &GOOD.replace("entity_version = 2", "entity_version = 3"),
                "endpoints[0].served_entities[1].entity_version",
                "no loaded version 3",
            ),
            (&GOOD.replace("name = \"b\"", "name = \"a\""), "endpoints[0].served_entities[1].name", "appears twice"),
            (&format!("{GOOD}\n[server]\ndefault_endpoint = \"nope\""), "server.default_endpoint", "not defined"),
        ];
        for (text, field, needle) in cases {
            let issues = issues_of(text);
            assert!(
                issues.iter().any(|i| i.field == *field && i.message.contains(needle)),
                "expected {field} / {needle}, got {issues:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_parse_errors() {
        let err = check("[server]\nhttp_port = 1\n").unwrap_err().to_string();
        assert!(err.contains("http_port"), "{err}");
        assert!(check("[[models]\n").is_err());
    }
}
