//! The config file as written (TOML), before validation. Field names follow Databricks serving
//! endpoints (`served_entities`, `traffic_config.routes`) where there is one to follow.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub http_addr: Option<String>,
    pub grpc_addr: Option<String>,
    pub admin_addr: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub default_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub onnxruntime_lib: Option<String>,
    pub model_repository: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    pub versions: Vec<u64>,
    pub provider: Option<String>,
    pub device_id: Option<i32>,
    pub intra_op_threads: Option<u64>,
    pub instances: Option<u64>,
    pub queue_capacity: Option<u64>,
    #[serde(default)]
    pub batching: RawBatching,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatching {
    pub enabled: Option<bool>,
    pub max_batch_size: Option<u64>,
    pub max_queue_delay_us: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub name: String,
    pub served_entities: Vec<RawServedEntity>,
    pub traffic_config: Option<RawTrafficConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServedEntity {
    /// Served model name, unique in the endpoint; defaults to `<entity_name>-<entity_version>`.
    pub name: Option<String>,
    pub entity_name: String,
    pub entity_version: RawVersion,
}

/// A model version written as a number (`1`) or, as Databricks does, a string (`"1"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawVersion {
    Num(u64),
    Str(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrafficConfig {
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub served_model_name: String,
    pub traffic_percentage: i64,
}
