//! Raw -> validated configuration. Collects every problem, each naming its field and the fix.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawConfig, RawEndpoint, RawExecution, RawServer, RawVersion, Secret};
use super::*;
use crate::runtime::{BatchingOptions, ExecutionOptions, Provider, RunnerOptions};

#[derive(Default)]
struct Issues {
    list: Vec<ConfigIssue>,
    /// Issues found past [`MAX_ISSUES`]: counted, not kept (a config of thousands of bad
    /// entries must not cost a message each).
    more: usize,
}

/// Issues reported in full; the rest are counted in one last issue.
const MAX_ISSUES: usize = 100;

impl Issues {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        if self.list.len() < MAX_ISSUES {
            self.list.push(ConfigIssue { field: field.into(), message: message.into() });
        } else {
            self.more += 1;
        }
    }

    /// Issues found so far (kept or counted).
    fn len(&self) -> usize {
        self.list.len() + self.more
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn into_vec(mut self) -> Vec<ConfigIssue> {
        if self.more > 0 {
            self.list.push(ConfigIssue {
                field: "(more)".into(),
                message: format!("{} more issues not listed; fix the ones above first", self.more),
            });
        }
        self.list
    }
}

fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.starts_with('.')
}

const NAME_RULE: &str = "use 1-128 characters from letters, digits, '_', '-', '.' (not starting with '.')";

pub fn validate(raw: RawConfig, base: &Path) -> Result<Config, Vec<ConfigIssue>> {
    let mut issues = Issues::default();
    let mut server = validate_server(&mut issues, &raw);
    server.data_dir = base.join(raw.server.data_dir.as_deref().unwrap_or("data"));
    let models_in_s3 = raw.runtime.model_repository.as_deref().is_some_and(|r| r.starts_with("s3://"));
    let storage = validate_storage(&mut issues, &raw.storage, &server.data_dir, base, models_in_s3);
    server.tls = raw.server.tls.as_ref().map(|t| super::TlsFiles {
        cert_file: base.join(&t.cert_file),
        key_file: base.join(&t.key_file),
        client_ca_file: t.client_ca_file.as_ref().map(|c| base.join(c)),
    });
    server.webhook_ca_file = raw.server.webhook_ca_file.as_ref().map(|c| base.join(c));
    let repository = raw.runtime.model_repository.as_deref().unwrap_or("models");
    let model_store = repository.starts_with("s3://").then(|| {
        let options = sluice_tables::S3Options {
            endpoint: raw.storage.endpoint.clone(),
            region: raw.storage.region.clone(),
            allow_http: raw.storage.allow_http.unwrap_or(false),
            ..sluice_tables::S3Options::default()
        };
        sluice_tables::Location::parse(repository, &options)
            .map_err(|e| issues.add("runtime.model_repository", e.to_string()))
            .ok()
    });
    let registry = raw.runtime.registry_uri.as_deref().and_then(|uri| {
        if model_store.is_some() {
            issues.add(
                "runtime.registry_uri",
                "models come from one source: an MLflow registry or an s3:// model_repository, not both",
            );
        }
        let valid = uri.parse::<hyper::Uri>().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https"))
                && u.authority().is_some()
                && u.query().is_none()
                && u.path().trim_end_matches('/').is_empty()
        });
        if !valid {
            issues.add(
                "runtime.registry_uri",
                format!("'{uri}' is not an MLflow tracking server URL; use http(s)://host:port"),
            );
            return None;
        }
        let poll_ms = raw.runtime.registry_poll_ms.unwrap_or(30_000);
        if !(100..=86_400_000).contains(&poll_ms) {
            issues.add(
                "runtime.registry_poll_ms",
                format!("{poll_ms} is out of range; use 100..=86400000 (default 30000)"),
            );
        }
        Some(super::RegistrySource {
            uri: uri.trim_end_matches('/').to_string(),
            poll: Duration::from_millis(poll_ms.clamp(100, 86_400_000)),
        })
    });
    if raw.runtime.registry_poll_ms.is_some() && raw.runtime.registry_uri.is_none() {
        issues.add("runtime.registry_poll_ms", "has no effect without runtime.registry_uri");
    }
    let runtime = RuntimeConfig {
        onnxruntime_lib: raw.runtime.onnxruntime_lib.as_ref().map(|p| base.join(p)),
        model_repository: match (&model_store, &registry) {
            (Some(_), _) | (_, Some(_)) => server.data_dir.join("_model_cache"),
            _ => base.join(repository),
        },
        model_store: model_store.flatten(),
        registry,
    };
    // files in object storage are checked when they are copied (registry::fetch), those of an
    // MLflow registry when they are downloaded (registry::mlflow)
    let repo =
        (runtime.model_store.is_none() && raw.runtime.registry_uri.is_none()).then(|| runtime.model_repository.clone());
    if raw.models.is_empty() && raw.endpoints.is_empty() {
        issues.add("models", "no models configured; add a [[models]] table with name and versions");
    }
    let mut models = Vec::new();
    let mut model_names = HashSet::new();
    let mut versions: BTreeMap<(String, u64), RunnerOptions> = BTreeMap::new();
    for (i, m) in raw.models.iter().enumerate() {
        let field = format!("models[{i}]");
        let before = issues.len();
        if !is_valid_name(&m.name) {
            issues.add(format!("{field}.name"), format!("'{}' is not a valid model name; {NAME_RULE}", m.name));
        }
        if !model_names.insert(m.name.clone()) {
            issues.add(format!("{field}.name"), format!("model '{}' is listed twice; merge the entries", m.name));
        }
        if m.versions.is_empty() {
            issues.add(format!("{field}.versions"), "list at least one version, e.g. versions = [1]");
        }
        let mut seen = HashSet::new();
        for v in &m.versions {
            if !seen.insert(*v) {
                issues.add(format!("{field}.versions"), format!("version {v} is listed twice"));
            }
            if let Some(repo) = &repo {
                check_model_file(&mut issues, &format!("{field}.versions"), repo, &m.name, *v);
            }
        }
        let options = runner_options(&mut issues, &field, &m.execution(), server.request_timeout);
        if issues.len() == before {
            for v in &m.versions {
                versions.insert((m.name.clone(), *v), options.clone());
            }
            models.push(ModelConfig { name: m.name.clone(), versions: m.versions.clone(), options });
        }
    }
    // Versions named only by served entities are loaded too, with the model's options or the
    // entity's own; two entities may not ask for different options for one version.
    let mut entity_options: BTreeMap<(String, u64), (String, RawExecution)> = BTreeMap::new();
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
        if let Some(ep) = validate_endpoint(&mut issues, &field, e, &storage, base, raw.runtime.registry_uri.is_some())
        {
            for (j, (s, rs)) in ep.served_entities.iter().zip(&e.served_entities).enumerate() {
                let f = format!("{field}.served_entities[{j}]");
                let key = (s.model.clone(), s.version);
                if let Some(repo) = repo.as_ref().filter(|_| !versions.contains_key(&key) || !rs.execution().is_empty())
                {
                    check_model_file(&mut issues, &format!("{f}.entity_version"), repo, &s.model, s.version);
                }
                let exec = rs.execution();
                if exec.is_empty() {
                    continue;
                }
                match entity_options.get(&key) {
                    Some((other, prev)) if *prev != exec => issues.add(
                        f.clone(),
                        format!(
                            "asks for different execution options for {} v{} than {other}; give both the same or set them on [[models]]",
                            s.model, s.version
                        ),
                    ),
                    _ => {
                        entity_options.insert(key, (format!("{field}.served_entities[{j}]"), exec));
                    }
                }
            }
            endpoints.push(ep);
        }
    }
    let mut unresolved = Vec::new();
    for ep in &endpoints {
        for s in &ep.served_entities {
            if s.alias.is_some() && s.version == 0 {
                unresolved.push(format!("{}/{}", ep.name, s.name));
                continue;
            }
            let key = (s.model.clone(), s.version);
            let model_exec = raw.models.iter().find(|m| m.name == s.model).map(|m| m.execution()).unwrap_or_default();
            match entity_options.get(&key) {
                Some((field, exec)) => {
                    let merged = merge_execution(&model_exec, exec);
                    let options = runner_options(&mut issues, field, &merged, server.request_timeout);
                    versions.insert(key, options);
                }
                None => {
                    if let std::collections::btree_map::Entry::Vacant(slot) = versions.entry(key) {
                        slot.insert(runner_options(&mut issues, "models", &model_exec, server.request_timeout));
                    }
                }
            }
        }
    }
    let mut table_names = HashSet::new();
    for (i, ep) in endpoints.iter().enumerate() {
        if let Some(t) = &ep.table
            && !table_names.insert(t.table.clone())
        {
            issues.add(
                format!("endpoints[{i}].inference_table.table"),
                format!("table '{}' is used by two endpoints; give each its own", t.table),
            );
        }
    }
    let default_endpoint = match &raw.server.default_endpoint {
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
    let telemetry = validate_telemetry(&mut issues, &raw.telemetry);
    let auth = std::sync::Arc::new(validate_auth(&mut issues, &raw.auth));
    if !issues.is_empty() {
        return Err(issues.into_vec());
    }
    Ok(Config {
        server: ServerConfig { default_endpoint, ..server },
        runtime,
        models,
        endpoints,
        telemetry,
        auth,
        versions,
        raw,
        base: base.to_path_buf(),
        storage,
        unresolved,
    })
}

fn validate_auth(issues: &mut Issues, raw: &super::raw::RawAuth) -> crate::auth::Principals {
    use crate::auth;
    if raw.tokens.len() > auth::MAX_TOKENS {
        issues.add("auth.tokens", format!("has {} entries; at most {}", raw.tokens.len(), auth::MAX_TOKENS));
        return auth::Principals::default();
    }
    let mut entries = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    let mut digests = std::collections::BTreeSet::new();
    for (i, t) in raw.tokens.iter().enumerate() {
        let field = |f: &str| format!("auth.tokens[{i}].{f}");
        if !auth::valid_name(&t.name) {
            issues.add(
                field("name"),
                format!("'{}' is not a name: 1 to {} of A-Z a-z 0-9 . _ @ -", t.name, auth::MAX_NAME_BYTES),
            );
        } else if !names.insert(t.name.clone()) {
            issues.add(field("name"), format!("'{}' is used by another token", t.name));
        }
        let digest = match auth::parse_hash(&t.hash) {
            Ok(d) => {
                if !digests.insert(d) {
                    issues.add(field("hash"), "is the hash of another token: one secret, one principal");
                }
                d
            }
            Err(e) => {
                issues.add(field("hash"), e);
                continue;
            }
        };
        if t.scopes.is_empty() {
            issues.add(field("scopes"), "is empty; give the token at least one scope, e.g. [\"query:*\"]");
        }
        let mut scopes = Vec::new();
        for s in &t.scopes {
            match s.parse::<auth::Scope>() {
                Ok(s) => scopes.push(s),
                Err(e) => issues.add(field("scopes"), e),
            }
        }
        entries.push((t.name.clone(), digest, scopes));
    }
    auth::Principals::new(entries)
}

fn validate_telemetry(issues: &mut Issues, raw: &super::raw::RawTelemetry) -> super::TelemetryConfig {
    let mut t = super::TelemetryConfig::default();
    match raw.log_format.as_deref() {
        None | Some("text") => {}
        Some("json") => t.log_format = super::LogFormat::Json,
        Some(other) => issues.add("telemetry.log_format", format!("is '{other}'; use \"text\" or \"json\"")),
    }
    if let Some(url) = &raw.otlp_endpoint {
        let ok = url
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http") | Some("https")) && u.authority().is_some());
        if ok {
            t.otlp_endpoint = Some(url.clone());
        } else {
            issues.add(
                "telemetry.otlp_endpoint",
                format!("'{url}' is not a collector URL; use e.g. \"http://127.0.0.1:4317\" (OTLP over gRPC)"),
            );
        }
    }
    match raw.service_name.as_deref() {
        None => {}
        Some(n) if !n.is_empty() && n.len() <= 128 => t.service_name = n.to_string(),
        Some(_) => issues.add("telemetry.service_name", "must be 1 to 128 characters"),
    }
    t
}

fn validate_server(issues: &mut Issues, raw: &RawConfig) -> ServerConfig {
    let addr = |issues: &mut Issues, field: &str, v: Option<&String>, default: &str| -> SocketAddr {
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
    let http_addr = addr(issues, "http_addr", s.http_addr.as_ref(), DEFAULT_HTTP_ADDR);
    let grpc_addr = addr(issues, "grpc_addr", s.grpc_addr.as_ref(), DEFAULT_GRPC_ADDR);
    let admin_addr = addr(issues, "admin_addr", s.admin_addr.as_ref(), DEFAULT_ADMIN_ADDR);
    let admin_token =
        s.admin_token.clone().or_else(|| std::env::var(ADMIN_TOKEN_ENV).ok().filter(|t| !t.is_empty()).map(Secret));
    if admin_token.as_ref().is_some_and(|t| t.0.len() < 16) {
        issues.add("server.admin_token", "is shorter than 16 characters; use a long random token");
    }
    if !admin_addr.ip().is_loopback() && admin_token.is_none() {
        issues.add(
            "server.admin_token",
            format!(
                "admin_addr {admin_addr} is not a loopback address, so the admin API needs a bearer token; \
                 set server.admin_token or {ADMIN_TOKEN_ENV}, or bind admin_addr to 127.0.0.1"
            ),
        );
    }
    let max_body_bytes = match s.max_body_bytes {
        Some(0) => {
            issues.add("server.max_body_bytes", "must be at least 1 (default 16777216 = 16 MiB)");
            DEFAULT_MAX_BODY_BYTES
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => DEFAULT_MAX_BODY_BYTES,
    };
    let request_timeout = positive_ms(issues, "request_timeout_ms", s.request_timeout_ms, DEFAULT_TIMEOUT_MS);
    let limits = listener_limits(issues, s, request_timeout);
    if limits.max_buffered_body_bytes < max_body_bytes {
        issues.add(
            "server.max_buffered_body_bytes",
            format!(
                "is {} but max_body_bytes is {max_body_bytes}: a body of the largest allowed size could never be \
                 read; raise max_buffered_body_bytes to at least max_body_bytes",
                limits.max_buffered_body_bytes
            ),
        );
    }
    ServerConfig {
        http_addr,
        grpc_addr,
        admin_addr,
        admin_token,
        max_body_bytes,
        request_timeout,
        limits,
        default_endpoint: None,
        watch_config: s.watch_config.unwrap_or(true),
        watch_interval: positive_ms(issues, "watch_interval_ms", s.watch_interval_ms, 1000),
        fleet_report: match s.fleet_report_ms {
            Some(n) if !(100..=600_000).contains(&n) => {
                issues.add("server.fleet_report_ms", format!("{n} is outside 100..=600000"));
                Duration::from_secs(10)
            }
            n => Duration::from_millis(n.unwrap_or(10_000)),
        },
        fleet_ready_timeout: match s.fleet_ready_timeout_ms {
            Some(n) if !(100..=600_000).contains(&n) => {
                issues.add("server.fleet_ready_timeout_ms", format!("{n} is outside 100..=600000"));
                Duration::from_secs(30)
            }
            n => Duration::from_millis(n.unwrap_or(30_000)),
        },
        leader_lease: match s.leader_lease_ms {
            Some(n) if !(200..=60_000).contains(&n) => {
                issues.add("server.leader_lease_ms", format!("{n} is outside 200..=60000"));
                Duration::from_secs(3)
            }
            n => Duration::from_millis(n.unwrap_or(3000)),
        },
        drain_delay: match s.drain_delay_ms {
            Some(n) if n > 600_000 => {
                issues.add("server.drain_delay_ms", format!("{n} is more than 600000 (10 minutes)"));
                Duration::ZERO
            }
            n => Duration::from_millis(n.unwrap_or(0)),
        },
        test_clock: false,
        data_dir: PathBuf::new(),
        analysis_memory_bytes: match s.analysis_memory_bytes {
            Some(n) if n < 1024 * 1024 => {
                issues.add(
                    "server.analysis_memory_bytes",
                    "must be at least 1048576 (1 MiB; default 536870912 = 512 MiB)",
                );
                crate::analysis::DEFAULT_MEMORY_BYTES
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => crate::analysis::DEFAULT_MEMORY_BYTES,
        },
        labels_per_second: match s.labels_per_second {
            Some(0) => {
                issues.add("server.labels_per_second", "must be at least 1 (default 10000)");
                DEFAULT_LABELS_PER_SECOND
            }
            Some(n) => n,
            None => DEFAULT_LABELS_PER_SECOND,
        },
        tls: None,
        webhook_ca_file: None,
    }
}

/// Labels a principal may post per second unless `server.labels_per_second` says otherwise.
pub const DEFAULT_LABELS_PER_SECOND: u64 = 10_000;

/// A `[server]` duration in milliseconds that must be positive.
fn positive_ms(issues: &mut Issues, field: &str, v: Option<u64>, default: u64) -> Duration {
    match v {
        Some(0) => {
            issues.add(format!("server.{field}"), format!("must be at least 1 (default {default})"));
            Duration::from_millis(default)
        }
        Some(n) => Duration::from_millis(n),
        None => Duration::from_millis(default),
    }
}

/// The listeners' timeouts and limits; the whole-request timeout must leave room for the
/// model's answer.
fn listener_limits(issues: &mut Issues, s: &RawServer, request_timeout: Duration) -> crate::config::ListenerLimits {
    let d = crate::config::ListenerLimits::default();
    let ms = |d: Duration| d.as_millis() as u64;
    let count = |issues: &mut Issues, field: &str, v: Option<u64>, default: usize| -> usize {
        match v {
            Some(0) => {
                issues.add(format!("server.{field}"), format!("must be at least 1 (default {default})"));
                default
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => default,
        }
    };
    let limits = crate::config::ListenerLimits {
        header_read_timeout: positive_ms(
            issues,
            "header_read_timeout_ms",
            s.header_read_timeout_ms,
            ms(d.header_read_timeout),
        ),
        body_read_timeout: positive_ms(issues, "body_read_timeout_ms", s.body_read_timeout_ms, ms(d.body_read_timeout)),
        total_timeout: positive_ms(issues, "total_timeout_ms", s.total_timeout_ms, ms(d.total_timeout)),
        max_connections: count(issues, "max_connections", s.max_connections, d.max_connections),
        max_concurrent_requests: count(
            issues,
            "max_concurrent_requests",
            s.max_concurrent_requests,
            d.max_concurrent_requests,
        ),
        max_buffered_body_bytes: count(
            issues,
            "max_buffered_body_bytes",
            s.max_buffered_body_bytes,
            d.max_buffered_body_bytes,
        ),
        max_concurrent_streams: u32::try_from(count(
            issues,
            "max_concurrent_streams",
            s.max_concurrent_streams,
            d.max_concurrent_streams as usize,
        ))
        .unwrap_or(u32::MAX),
        keepalive_interval: positive_ms(
            issues,
            "keepalive_interval_ms",
            s.keepalive_interval_ms,
            ms(d.keepalive_interval),
        ),
    };
    if limits.total_timeout < request_timeout {
        issues.add(
            "server.total_timeout_ms",
            format!(
                "is {} but request_timeout_ms is {}: a whole request cannot take less than the wait for its \
                 model; raise total_timeout_ms",
                ms(limits.total_timeout),
                ms(request_timeout)
            ),
        );
    }
    limits
}

/// An MLflow model alias (without its `@`).
fn is_valid_alias(a: &str) -> bool {
    !a.is_empty() && a.len() <= 255 && a.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

fn check_model_file(issues: &mut Issues, field: &str, repo: &Path, name: &str, version: u64) {
    if !is_valid_name(name) {
        return;
    }
    let path = model_path(repo, name, version);
    if !path.is_file() {
        issues.add(
            field,
            format!(
                "version {version} of '{name}' has no model file at {}; add it or remove the version",
                path.display()
            ),
        );
    }
}

/// Entity options override model options field by field.
fn merge_execution(model: &RawExecution, entity: &RawExecution) -> RawExecution {
    RawExecution {
        provider: entity.provider.clone().or_else(|| model.provider.clone()),
        device_id: entity.device_id.or(model.device_id),
        intra_op_threads: entity.intra_op_threads.or(model.intra_op_threads),
        instances: entity.instances.or(model.instances),
        queue_capacity: entity.queue_capacity.or(model.queue_capacity),
        batching: entity.batching.clone().or_else(|| model.batching.clone()),
    }
}

fn runner_options(issues: &mut Issues, field: &str, m: &RawExecution, timeout: Duration) -> RunnerOptions {
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
    let bounded = |issues: &mut Issues, name: &str, v: Option<u64>, default: usize, max: usize| -> usize {
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
    let b = m.batching.clone().unwrap_or_default();
    let max_batch_size = bounded(issues, "batching.max_batch_size", b.max_batch_size, DEFAULT_MAX_BATCH_SIZE, 1 << 16);
    let delay_us = b.max_queue_delay_us.unwrap_or(0);
    if delay_us > 1_000_000 {
        issues.add(
            format!("{field}.batching.max_queue_delay_us"),
            format!("{delay_us} us is more than 1 s; use 0..=1000000"),
        );
    }
    let batching = b
        .enabled
        .unwrap_or(true)
        .then_some(BatchingOptions { max_batch_size, max_queue_delay: Duration::from_micros(delay_us.min(1_000_000)) });
    RunnerOptions {
        execution: ExecutionOptions { provider, intra_op_threads, instances },
        batching,
        queue_capacity,
        timeout,
    }
}

fn sorted(set: &HashSet<String>) -> Vec<&String> {
    let mut v: Vec<&String> = set.iter().collect();
    v.sort();
    v
}

/// The `[storage]` section alone (the fuzz target's entry).
#[cfg(test)]
pub(crate) fn storage_of(
    raw: &super::raw::RawStorage,
    data_dir: &Path,
    base: &Path,
) -> Result<super::StorageConfig, Vec<ConfigIssue>> {
    let mut issues = Issues::default();
    let s = validate_storage(&mut issues, raw, data_dir, base, false);
    if issues.is_empty() { Ok(s) } else { Err(issues.into_vec()) }
}

/// `[storage]`: tables on a local path (default `data_dir`) or under an `s3://` prefix, and
/// the shared config store (none by default) on either as well. Its S3 settings also reach
/// models in object storage (`models_in_s3`).
fn validate_storage(
    issues: &mut Issues,
    raw: &super::raw::RawStorage,
    data_dir: &Path,
    base: &Path,
    models_in_s3: bool,
) -> super::StorageConfig {
    use sluice_tables::{Location, S3Options};
    let s3_settings = raw.endpoint.is_some() || raw.region.is_some() || raw.allow_http.is_some();
    let settings_unused = if models_in_s3 { raw.cache_dir.is_some() } else { s3_settings || raw.cache_dir.is_some() };
    if raw.tables.is_none() && raw.config_store.is_none() && settings_unused {
        issues.add("storage.tables", "storage settings without `tables`: set tables = \"s3://bucket/prefix\"");
    }
    if let Some(ep) = &raw.endpoint {
        match url::Url::parse(ep) {
            Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && raw.allow_http == Some(true)) => {}
            Ok(u) if u.scheme() == "http" => {
                issues.add("storage.endpoint", format!("'{ep}' is plain http; set allow_http = true to allow it"))
            }
            _ => issues.add("storage.endpoint", format!("'{ep}' is not an http(s) URL")),
        }
    }
    let options = S3Options {
        endpoint: raw.endpoint.clone(),
        region: raw.region.clone(),
        allow_http: raw.allow_http.unwrap_or(false),
        ..S3Options::default()
    };
    let config_store = raw.config_store.as_deref().and_then(|c| match Location::parse(c, &options) {
        Ok(Location::Local(p)) => Some(Location::Local(base.join(p))),
        Ok(remote) => Some(remote),
        Err(e) => {
            issues.add("storage.config_store", e.to_string());
            None
        }
    });
    let store_is_s3 = config_store.as_ref().is_some_and(|l| !l.is_local());
    let local =
        super::StorageConfig { remote: None, local: data_dir.to_path_buf(), config_store: config_store.clone() };
    let Some(tables) = raw.tables.as_deref() else {
        if config_store.is_some() && !store_is_s3 && !models_in_s3 && s3_settings {
            issues.add("storage.config_store", "a local path; endpoint, region and allow_http are for s3:// locations");
        }
        return local;
    };
    match Location::parse(tables, &options) {
        Ok(Location::Local(p)) => {
            if s3_settings && !store_is_s3 && !models_in_s3 {
                issues.add(
                    "storage.tables",
                    format!("'{tables}' is a local path; endpoint, region and allow_http are for s3://"),
                );
            }
            super::StorageConfig { remote: None, local: base.join(p), config_store }
        }
        Ok(remote) => {
            let cache = raw.cache_dir.as_deref().map_or_else(|| data_dir.join("_table_cache"), |c| base.join(c));
            super::StorageConfig { remote: Some(remote), local: cache, config_store }
        }
        Err(e) => {
            issues.add("storage.tables", e.to_string());
            local
        }
    }
}

fn validate_endpoint(
    issues: &mut Issues,
    field: &str,
    e: &RawEndpoint,
    storage: &super::StorageConfig,
    base: &Path,
    registry: bool,
) -> Option<EndpointConfig> {
    let before = issues.len();
    if e.served_entities.is_empty() {
        issues.add(format!("{field}.served_entities"), "list at least one served entity (entity_name, entity_version)");
    }
    let mut served = Vec::new();
    let mut names = HashSet::new();
    for (j, s) in e.served_entities.iter().enumerate() {
        let f = format!("{field}.served_entities[{j}]");
        let alias = match &s.entity_version {
            RawVersion::Str(t) => t.strip_prefix('@'),
            RawVersion::Num(_) => None,
        };
        let version = match (&s.entity_version, alias) {
            (_, Some(a)) => {
                if !is_valid_alias(a) {
                    issues.add(
                        format!("{f}.entity_version"),
                        format!("'@{a}' is not an MLflow alias; use '@' and 1-255 letters, digits, '_' or '-'"),
                    );
                }
                if !registry {
                    issues.add(
                        format!("{f}.entity_version"),
                        format!("'@{a}' is an MLflow registry alias; set runtime.registry_uri to resolve it"),
                    );
                }
                // unresolved (0) until the registry is asked (registry::mlflow::prepare)
                Some(s.resolved_version.unwrap_or(0))
            }
            (RawVersion::Num(n), None) => Some(*n),
            (RawVersion::Str(t), None) => t.parse::<u64>().ok().or_else(|| {
                issues.add(
                    format!("{f}.entity_version"),
                    format!("'{t}' is not a version number (or an MLflow alias, '@champion')"),
                );
                None
            }),
        };
        if alias.is_none() && s.resolved_version.is_some() {
            issues.add(format!("{f}.resolved_version"), "is the version an alias named; this entity names no alias");
        }
        if alias.is_some() && s.resolved_version == Some(0) {
            issues.add(format!("{f}.resolved_version"), "MLflow model versions start at 1");
        }
        if !is_valid_name(&s.entity_name) {
            issues
                .add(format!("{f}.entity_name"), format!("'{}' is not a valid model name; {NAME_RULE}", s.entity_name));
        }
        let name = s.name.clone().unwrap_or_else(|| match alias {
            Some(a) => format!("{}-{a}", s.entity_name),
            None => format!("{}-{}", s.entity_name, version.map(|v| v.to_string()).unwrap_or_default()),
        });
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
            served.push(ServedEntity { name, model: s.entity_name.clone(), version, alias: alias.map(str::to_string) });
        }
    }
    let routes = match &e.traffic_config {
        None if served.len() == 1 && e.shadow.is_empty() => {
            vec![Route { served_model_name: served[0].name.clone(), traffic_percentage: 100 }]
        }
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
                total = total.saturating_add(r.traffic_percentage);
                routes.push(Route {
                    served_model_name: r.served_model_name.clone(),
                    traffic_percentage: r.traffic_percentage.clamp(0, 100) as u32,
                });
            }
            if tc.routes.is_empty() {
                issues.add(format!("{field}.traffic_config.routes"), "list at least one route");
            } else if total != 100 {
                issues.add(
                    format!("{field}.traffic_config.routes"),
                    format!("traffic percentages sum to {total}; they must sum to 100"),
                );
            }
            routes
        }
    };
    let mut shadows = Vec::new();
    let mut shadow_names = HashSet::new();
    for (k, s) in e.shadow.iter().enumerate() {
        let f = format!("{field}.shadow[{k}]");
        if !names.contains(&s.served_model_name) {
            issues.add(
                format!("{f}.served_model_name"),
                format!("'{}' is not a served entity of this endpoint; add it to served_entities", s.served_model_name),
            );
        }
        if routes.iter().any(|r| r.served_model_name == s.served_model_name) {
            issues.add(
                format!("{f}.served_model_name"),
                format!(
                    "'{}' is also a traffic route; a shadow only gets mirrored copies, so remove it from one of them",
                    s.served_model_name
                ),
            );
        }
        if !shadow_names.insert(s.served_model_name.clone()) {
            issues.add(format!("{f}.served_model_name"), format!("'{}' is a shadow twice", s.served_model_name));
        }
        if !(0..=100).contains(&s.mirror_percent) {
            issues.add(format!("{f}.mirror_percent"), format!("{} is not a percentage; use 0..=100", s.mirror_percent));
        }
        shadows.push(ShadowRoute {
            served_model_name: s.served_model_name.clone(),
            mirror_percent: s.mirror_percent.clamp(0, 100) as u32,
        });
    }
    for s in &served {
        let used = routes.iter().any(|r| r.served_model_name == s.name) || shadow_names.contains(&s.name);
        if !used {
            issues.add(
                format!("{field}.served_entities"),
                format!("'{}' has no traffic route and is no shadow; route it (0 is allowed) or remove it", s.name),
            );
        }
    }
    let sticky_key = match &e.sticky_key {
        None => None,
        Some(k) => match (&k.header, &k.field) {
            (Some(h), None) if !h.is_empty() => Some(StickyKey::Header(h.to_ascii_lowercase())),
            (None, Some(f)) if !f.is_empty() => Some(StickyKey::Field(f.clone())),
            _ => {
                issues.add(
                    format!("{field}.sticky_key"),
                    "set exactly one of header (e.g. \"x-user-id\") or field (e.g. \"client_request_id\")",
                );
                None
            }
        },
    };
    let shadow_queue_capacity = match e.shadow_queue_capacity {
        None => DEFAULT_SHADOW_QUEUE_CAPACITY,
        Some(n) if (1..=1 << 20).contains(&n) => n as usize,
        Some(n) => {
            issues.add(
                format!("{field}.shadow_queue_capacity"),
                format!("{n} is out of range; use 1..=1048576 (default 256)"),
            );
            DEFAULT_SHADOW_QUEUE_CAPACITY
        }
    };
    let shadow_queue_max_bytes = match e.shadow_queue_max_bytes {
        None => DEFAULT_SHADOW_QUEUE_MAX_BYTES,
        Some(n) if (1..=MAX_QUEUE_BYTES).contains(&n) => n as usize,
        Some(n) => {
            issues.add(
                format!("{field}.shadow_queue_max_bytes"),
                format!(
                    "{n} is out of range; use 1..={MAX_QUEUE_BYTES} (default {DEFAULT_SHADOW_QUEUE_MAX_BYTES}, 64 MiB)"
                ),
            );
            DEFAULT_SHADOW_QUEUE_MAX_BYTES
        }
    };
    let table = e.inference_table.as_ref().and_then(|t| validate_table(issues, field, &e.name, t, storage));
    let monitor = match &e.monitor {
        Some(m) if m.enabled.unwrap_or(true) => {
            if table.is_none() {
                issues.add(
                    format!("{field}.monitor"),
                    "a monitor reads the endpoint's inference table; enable inference_table too",
                );
            }
            match crate::monitor::spec::validate(m, &format!("{field}.monitor"), base, None) {
                Ok(spec) => Some(spec),
                Err(errs) => {
                    for (f, msg) in errs {
                        issues.add(f, msg);
                    }
                    None
                }
            }
        }
        _ => None,
    };
    let served_names: Vec<String> = served.iter().map(|s| s.name.clone()).collect();
    let experiment = match &e.experiment {
        None => crate::experiment::spec::ExperimentSpec::default(),
        Some(x) => match crate::experiment::spec::validate(x, &format!("{field}.experiment"), &served_names) {
            Ok(spec) => spec,
            Err(errs) => {
                for (f, msg) in errs {
                    issues.add(f, msg);
                }
                crate::experiment::spec::ExperimentSpec::default()
            }
        },
    };
    let rollout = match &e.rollout {
        None => None,
        Some(r) => {
            let route_pairs: Vec<(String, u32)> =
                routes.iter().map(|r| (r.served_model_name.clone(), r.traffic_percentage)).collect();
            let shadow_names: Vec<String> = shadows.iter().map(|s| s.served_model_name.clone()).collect();
            let view = crate::rollout::spec::EndpointView {
                served: &served_names,
                routes: &route_pairs,
                shadows: &shadow_names,
                has_table: table.is_some(),
                at_start: false,
            };
            match crate::rollout::spec::validate(r, &format!("{field}.rollout"), view) {
                Ok(spec) => Some(spec),
                Err(errs) => {
                    for (f, msg) in errs {
                        issues.add(f, msg);
                    }
                    None
                }
            }
        }
    };
    let mlflow_predictions = match e.response_format.as_deref() {
        None | Some("sluice") => false,
        Some("mlflow") => true,
        Some(other) => {
            issues.add(
                format!("{field}.response_format"),
                format!("'{other}' is not a response format; use \"sluice\" (default) or \"mlflow\""),
            );
            false
        }
    };
    let watch_aliases = e.watch_aliases.unwrap_or(false);
    if watch_aliases && !served.iter().any(|s| s.alias.is_some()) {
        issues.add(
            format!("{field}.watch_aliases"),
            "no served entity names an alias (entity_version = \"@champion\"); there is nothing to watch",
        );
    }
    if let Some(r) = &e.alias_rollout {
        let f = format!("{field}.alias_rollout");
        if !watch_aliases {
            issues.add(f.clone(), "takes effect only with watch_aliases = true");
        }
        if table.is_none() {
            issues.add(f.clone(), "a rollout's guardrails read the endpoint's inference table; enable inference_table");
        }
        if let Err(errs) = crate::rollout::spec::parse(&r.rollout("candidate", "incumbent"), &f) {
            for (f, msg) in errs {
                issues.add(f, msg);
            }
        }
    }
    if issues.len() > before {
        return None;
    }
    Some(EndpointConfig {
        watch_aliases,
        alias_rollout: e.alias_rollout.clone(),
        mlflow_predictions,
        table,
        monitor,
        rollout,
        experiment,
        name: e.name.clone(),
        served_entities: served,
        routes,
        shadows,
        sticky_key,
        allow_override: e.allow_served_model_override.unwrap_or(false),
        shadow_queue_capacity,
        shadow_queue_max_bytes,
        routing_seed: e.routing_seed,
        raw: e.clone(),
    })
}

/// Default byte budget of an endpoint's shadow queue (64 MiB).
const DEFAULT_SHADOW_QUEUE_MAX_BYTES: usize = 64 << 20;
/// Largest byte budget of a queue (1 TiB): a guard against typos, not a recommendation.
const MAX_QUEUE_BYTES: u64 = 1 << 40;

fn validate_table(
    issues: &mut Issues,
    field: &str,
    endpoint: &str,
    t: &super::raw::RawInferenceTable,
    storage: &super::StorageConfig,
) -> Option<crate::inference_log::TableOptions> {
    use crate::inference_log::{OnFull, TableOptions};
    if !t.enabled.unwrap_or(true) {
        return None;
    }
    let f = format!("{field}.inference_table");
    let table = t.table.clone().unwrap_or_else(|| endpoint.to_string());
    if !is_valid_name(&table) {
        issues.add(format!("{f}.table"), format!("'{table}' is not a valid table name; {NAME_RULE}"));
    }
    let sampling_fraction = t.sampling_fraction.unwrap_or(1.0);
    if !(sampling_fraction > 0.0 && sampling_fraction <= 1.0) {
        issues.add(
            format!("{f}.sampling_fraction"),
            format!("{sampling_fraction} is not in (0, 1]; use e.g. 0.1 to log 10% of requests"),
        );
    }
    let on_full = match t.on_queue_full.as_deref().unwrap_or("drop") {
        "drop" => OnFull::Drop,
        "block" => OnFull::Block,
        other => {
            issues.add(format!("{f}.on_queue_full"), format!("'{other}' is not a policy; use \"drop\" or \"block\""));
            OnFull::Drop
        }
    };
    let mut bounded = |name: &str, v: Option<u64>, default: u64, max: u64| -> u64 {
        match v {
            None => default,
            Some(n) if (1..=max).contains(&n) => n,
            Some(n) => {
                issues.add(format!("{f}.{name}"), format!("{n} is out of range; use 1..={max} (default {default})"));
                default
            }
        }
    };
    let queue_capacity = bounded("queue_capacity", t.queue_capacity, 65_536, 1 << 24) as usize;
    let queue_max_bytes = bounded("queue_max_bytes", t.queue_max_bytes, 256 << 20, MAX_QUEUE_BYTES) as usize;
    let flush_interval = Duration::from_millis(bounded("flush_interval_ms", t.flush_interval_ms, 1000, 3_600_000));
    let max_file_rows = bounded("max_file_rows", t.max_file_rows, 1_000_000, 1 << 30) as usize;
    let max_payload_bytes = bounded("max_payload_bytes", t.max_payload_bytes, 65_536, 1 << 26) as usize;
    let retention_days = t.retention_days.map(|d| bounded("retention_days", Some(d), 1, 365_000) as u32);
    Some(TableOptions {
        dir: storage.local.join(&table),
        remote: storage.remote.as_ref().map(|r| r.child(&table)),
        table,
        sampling_fraction,
        on_full,
        queue_capacity,
        queue_max_bytes,
        flush_interval,
        max_file_rows,
        log_payloads: t.log_payloads.unwrap_or(false),
        max_payload_bytes,
        labels_accept_unknown_ids: t.labels_accept_unknown_ids.unwrap_or(false),
        retention_days,
    })
}
