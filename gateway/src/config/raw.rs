//! The config file as written (TOML, or JSON through the admin API), before validation. Field
//! names follow Databricks serving endpoints (`served_entities`, `traffic_config.routes`) where
//! there is one to follow.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub runtime: RawRuntime,
    #[serde(default)]
    pub models: Vec<RawModel>,
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
    #[serde(default)]
    pub telemetry: RawTelemetry,
    #[serde(default, skip_serializing_if = "RawAuth::is_empty")]
    pub auth: RawAuth,
    #[serde(default, skip_serializing_if = "RawStorage::is_empty")]
    pub storage: RawStorage,
}

/// `[storage]`: where inference and labels tables live. Credentials are never
/// in the config: they come from the standard `AWS_*` environment variables.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// `s3://bucket/prefix`, or a local directory; default: `server.data_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<String>,
    /// The S3-compatible server, e.g. `http://127.0.0.1:8333`; default: `AWS_ENDPOINT_URL`, else AWS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Default: `AWS_REGION` (or `AWS_DEFAULT_REGION`), else `us-east-1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Allow a plain `http://` endpoint (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
    /// Where readers keep the files of remote tables (default `<data_dir>/_table_cache`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
    /// The shared config store (`s3://bucket/prefix` or a local directory): replicas that name
    /// the same store serve the same models and endpoints, and every change is a numbered
    /// version in it. Default: none (the config file is the source of truth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_store: Option<String>,
}

impl RawStorage {
    fn is_empty(&self) -> bool {
        self == &RawStorage::default()
    }
}

/// `[auth]`: the principals allowed to use the gateway (`[[auth.tokens]]`). Without any, the
/// data plane is open (and the admin API behind `server.admin_token`, if set).
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub tokens: Vec<RawToken>,
}

impl RawAuth {
    fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// The principal: in the `requester` column and the per-principal metrics.
    pub name: String,
    /// `sha256:<hex>` of the secret (`sluice auth hash`); never the secret itself.
    pub hash: String,
    /// `query:<endpoint>`, `query:*`, `labels:<endpoint>`, `labels:*`, `read`, `manage`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// `[telemetry]`: log format and OpenTelemetry trace export (read at startup).
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// `text` (default) or `json` (one JSON object per line, span fields included).
    pub log_format: Option<String>,
    /// An OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`: every request's spans go there.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans (default `sluice`).
    pub service_name: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub http_addr: Option<String>,
    pub grpc_addr: Option<String>,
    pub admin_addr: Option<String>,
    /// Bearer token for the admin API; required when `admin_addr` is not loopback.
    pub admin_token: Option<Secret>,
    pub max_body_bytes: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    /// HTTP/1: a request's headers must arrive within this, counted from when the connection
    /// opened or its previous answer went out (slow headers and idle keep-alive alike).
    pub header_read_timeout_ms: Option<u64>,
    /// A request's whole body must arrive within this after its headers (408 past it).
    pub body_read_timeout_ms: Option<u64>,
    /// A whole request, body read to answer written, must finish within this (504 past it).
    pub total_timeout_ms: Option<u64>,
    /// Open connections per listener; more are refused at once (503, then closed).
    pub max_connections: Option<u64>,
    /// Inference requests (HTTP POST and gRPC calls) in progress at once; more are answered
    /// 429 / RESOURCE_EXHAUSTED before their body is read.
    pub max_concurrent_requests: Option<u64>,
    /// HTTP request-body bytes being read and parsed at once (by Content-Length; a body without
    /// one counts as max_body_bytes); a request that does not fit is answered 429 unread.
    pub max_buffered_body_bytes: Option<u64>,
    /// HTTP/2 and gRPC: streams per connection.
    pub max_concurrent_streams: Option<u64>,
    /// HTTP/2 and gRPC: ping an idle connection this often; no answer within it closes it.
    pub keepalive_interval_ms: Option<u64>,
    pub default_endpoint: Option<String>,
    /// Directory of the inference tables (relative to the config file).
    pub data_dir: Option<String>,
    /// Reload when the config file changes (checked every `watch_interval_ms`).
    pub watch_config: Option<bool>,
    pub watch_interval_ms: Option<u64>,
    /// On SIGTERM: report not ready at once, then keep accepting for this long (so that load
    /// balancers see it and send no more) before the listeners close and in-flight work drains.
    pub drain_delay_ms: Option<u64>,
    /// With a config store: the leader lease's slot (how long a dead leader goes unnoticed,
    /// about two of them at most).
    pub leader_lease_ms: Option<u64>,
    /// With a config store: how often each replica publishes its traffic counts for the
    /// others' fleet-wide views.
    pub fleet_report_ms: Option<u64>,
    /// With a config store: how long a replica that prepared a new config version waits for
    /// every other live replica to have loaded it before it swaps it in (the version is put
    /// back when they have not).
    pub fleet_ready_timeout_ms: Option<u64>,
    /// Memory of each DataFusion session of the table reads (monitor, rollouts, experiments,
    /// dashboard); a query over it fails.
    pub analysis_memory_bytes: Option<u64>,
    /// Labels each principal may post per second (token bucket; a burst of one second's worth,
    /// at least one full post).
    pub labels_per_second: Option<u64>,
    /// TLS on every listener (HTTP, gRPC, admin).
    pub tls: Option<RawTls>,
    /// A CA (PEM) to trust for `https://` webhooks besides the system's.
    pub webhook_ca_file: Option<String>,
}

/// `[server.tls]`: PEM files, relative to the config file.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// The certificate chain, leaf first.
    pub cert_file: String,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// When set, clients must present a certificate this CA signed (mutual TLS).
    pub client_ca_file: Option<String>,
}

/// A secret string: `Debug` never shows it.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub onnxruntime_lib: Option<String>,
    pub model_repository: Option<String>,
    /// An MLflow tracking server (`http://host:5000`): every model comes from its registry
    /// (the `onnx` flavor of a registered version), copied into `<data_dir>/_model_cache`.
    pub registry_uri: Option<String>,
    /// How often the aliases of endpoints with `watch_aliases` are read (default 30000).
    pub registry_poll_ms: Option<u64>,
}

/// How a model version runs; every field optional. Used on `[[models]]` and on served entities.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawExecution {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intra_op_threads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batching: Option<RawBatching>,
}

impl RawExecution {
    pub fn is_empty(&self) -> bool {
        *self == RawExecution::default()
    }
}

macro_rules! execution_of {
    ($t:ty) => {
        impl $t {
            /// The execution options written on this entry.
            pub fn execution(&self) -> RawExecution {
                RawExecution {
                    provider: self.provider.clone(),
                    device_id: self.device_id,
                    intra_op_threads: self.intra_op_threads,
                    instances: self.instances,
                    queue_capacity: self.queue_capacity,
                    batching: self.batching.clone(),
                }
            }
        }
    };
}
execution_of!(RawModel);
execution_of!(RawServedEntity);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    pub versions: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intra_op_threads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batching: Option<RawBatching>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawBatching {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queue_delay_us: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub name: String,
    pub served_entities: Vec<RawServedEntity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_config: Option<RawTrafficConfig>,
    /// Served entities that get a copy of a share of the traffic; their answers are never returned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<RawShadow>,
    /// Where the sticky-assignment key comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky_key: Option<RawStickyKey>,
    /// Whether the `x-sluice-served-model` request header may pin a served model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_served_model_override: Option<bool>,
    /// Mirrored requests waiting for shadow models; more are dropped and counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_queue_capacity: Option<u64>,
    /// Bytes (estimated) that mirrored requests waiting or running for shadows may hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_queue_max_bytes: Option<u64>,
    /// Seed for the weighted random split (reproducible routing, e.g. in tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_seed: Option<u64>,
    /// Log every answer to an inference table (Databricks' `auto_capture_config`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference_table: Option<RawInferenceTable>,
    /// Drift and quality monitoring over the inference table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<crate::monitor::RawMonitor>,
    /// A progressive rollout of a candidate, started when the gateway loads this config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::spec::RawRollout>,
    /// How the endpoint's A/B test is analysed (`GET /experiments/{endpoint}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<crate::experiment::spec::RawExperiment>,
    /// `"sluice"` (default: a classifier answers `label` and `probabilities` per row) or
    /// `"mlflow"` (every output by name, as an MLflow pyfunc of the ONNX model answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<String>,
    /// Databricks' endpoint tags (`key`, optional `value`): kept and shown, no effect here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<RawTag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Fields Databricks clients send that have no meaning here (`route_optimized`,
    /// `ai_gateway`, `rate_limits`, `email_notifications`, `budget_policy_id`,
    /// `telemetry_config`, the catalog and schema of `auto_capture_config`): kept as sent and
    /// given back by the serving-endpoints API, no effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub databricks: Option<serde_json::Map<String, serde_json::Value>>,
    /// Served entities whose `entity_version` is an MLflow alias (`"@champion"`) follow it: when
    /// the registry moves the alias, the new version is rolled out (`alias_rollout`) or swapped in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_aliases: Option<bool>,
    /// How a moved alias reaches traffic: a guardrailed rollout with these steps, interval and
    /// guardrails (the candidate and incumbent are the versions). Without it: swapped at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_rollout: Option<crate::rollout::spec::RawAliasRollout>,
}

/// One tag of an endpoint, as Databricks writes it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawTag {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawInferenceTable {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Table (directory) name under `server.data_dir`; default: the endpoint name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling_fraction: Option<f64>,
    /// `drop` (default) or `block`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_queue_full: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<u64>,
    /// Bytes (estimated) of records queued or buffered and not yet written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_max_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_file_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_payloads: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_payload_bytes: Option<u64>,
    /// Keep labels whose request id this table never logged (default false: refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels_accept_unknown_ids: Option<bool>,
    /// Days of `date` partitions kept (today and the days before); older ones are removed by a
    /// Delta delete, in the table and its labels table. Default: kept forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawServedEntity {
    /// Served model name, unique in the endpoint; defaults to `<entity_name>-<entity_version>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub entity_name: String,
    /// A number, or an MLflow registry alias (`"@champion"`, needs `runtime.registry_uri`).
    pub entity_version: RawVersion,
    /// The version an alias named when this config was made: written by Sluice (from the
    /// registry, or kept from the config in force), so that every replica serves the same one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intra_op_threads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batching: Option<RawBatching>,
    // Databricks' compute settings: accepted, kept and shown so that Databricks clients and
    // configs work unchanged; they have no effect here (one process serves every entity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_vars: Option<std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_profile_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_provisioned_throughput: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_provisioned_throughput: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioned_model_units: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_provisioned_concurrency: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_provisioned_concurrency: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst_scaling_enabled: Option<bool>,
}

impl RawServedEntity {
    /// The served model name: `name`, or `<entity_name>-<entity_version>` (`<entity_name>-<alias>`
    /// for an MLflow alias), as validation gives it.
    pub fn served_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| match &self.entity_version {
            RawVersion::Str(v) => format!("{}-{}", self.entity_name, v.strip_prefix('@').unwrap_or(v)),
            RawVersion::Num(n) => format!("{}-{n}", self.entity_name),
        })
    }
}

/// A model version written as a number (`1`) or, as Databricks does, a string (`"1"`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RawVersion {
    Num(u64),
    Str(String),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawTrafficConfig {
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Databricks clients may call it `served_entity_name`.
    #[serde(alias = "served_entity_name")]
    pub served_model_name: String,
    pub traffic_percentage: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    pub served_model_name: String,
    pub mirror_percent: i64,
}

/// `{ header = "x-user-id" }` or `{ field = "client_request_id" }` (a top-level request field).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawStickyKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
