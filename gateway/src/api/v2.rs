//! KServe V2 metadata, Triton-shaped model config and statistics, built once per call from a
//! loaded model and shared by the HTTP (serialised as JSON) and gRPC (converted to proto)
//! transports.

use serde::Serialize;

use crate::config::DEFAULT_MAX_BATCH_SIZE;
use crate::registry::LoadedModel;
use crate::runtime::Provider;
use crate::runtime::stats::ModelStats;

pub const SERVER_NAME: &str = "sluice";
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Protocol extensions served: binary tensors, Triton's model config and statistics.
pub const EXTENSIONS: [&str; 3] = ["binary_tensor_data", "model_configuration", "statistics"];
pub const PLATFORM: &str = "onnxruntime_onnx";

#[derive(Debug, Serialize)]
pub struct ServerMetadata {
    pub name: &'static str,
    pub version: &'static str,
    pub extensions: [&'static str; 3],
}

pub fn server_metadata() -> ServerMetadata {
    ServerMetadata { name: SERVER_NAME, version: SERVER_VERSION, extensions: EXTENSIONS }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

#[derive(Debug, Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// Metadata of one version; `versions` lists every loaded version of the model.
pub fn model_metadata(model: &LoadedModel, versions: &[u64]) -> ModelMetadata {
    let schema = model.runner.schema();
    let meta = |t: &crate::runtime::TensorSpec| TensorMetadata {
        name: t.name.clone(),
        datatype: t.dtype.v2_name(),
        shape: t.shape.clone(),
    };
    ModelMetadata {
        name: model.name.clone(),
        versions: versions.iter().map(u64::to_string).collect(),
        platform: PLATFORM,
        inputs: schema.inputs.iter().map(meta).collect(),
        outputs: schema.outputs.iter().map(meta).collect(),
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ConfigTensor {
    pub name: String,
    pub data_type: &'static str,
    /// Without the batch dimension when `max_batch_size` > 0.
    pub dims: Vec<i64>,
}

#[derive(Debug, Serialize)]
pub struct InstanceGroup {
    pub name: String,
    pub kind: &'static str,
    pub count: i32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<i32>,
}

#[derive(Debug, Serialize)]
pub struct DynamicBatching {
    pub preferred_batch_size: Vec<i32>,
    pub max_queue_delay_microseconds: u64,
}

/// Triton's model configuration JSON shape (the fields Sluice can fill truthfully).
#[derive(Debug, Serialize)]
pub struct ModelConfig {
    pub name: String,
    pub platform: &'static str,
    pub backend: &'static str,
    pub max_batch_size: i32,
    pub input: Vec<ConfigTensor>,
    pub output: Vec<ConfigTensor>,
    pub instance_group: Vec<InstanceGroup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_batching: Option<DynamicBatching>,
}

pub fn model_config(model: &LoadedModel) -> ModelConfig {
    let schema = model.runner.schema();
    let options = model.runner.options();
    let batching = options.batching;
    let max_batch_size = if schema.batchable() {
        batching.map(|b| b.max_batch_size).unwrap_or(DEFAULT_MAX_BATCH_SIZE) as i32
    } else {
        0
    };
    let dims = |shape: &[i64]| -> Vec<i64> { if max_batch_size > 0 { shape[1..].to_vec() } else { shape.to_vec() } };
    let tensor = |t: &crate::runtime::TensorSpec| ConfigTensor {
        name: t.name.clone(),
        data_type: t.dtype.triton_config_name(),
        dims: dims(&t.shape),
    };
    let (kind, gpus) = match options.execution.provider {
        Provider::Cpu => ("KIND_CPU", Vec::new()),
        Provider::Cuda { device_id } => ("KIND_GPU", vec![device_id]),
    };
    ModelConfig {
        name: model.name.clone(),
        platform: PLATFORM,
        backend: "onnxruntime",
        max_batch_size,
        input: schema.inputs.iter().map(tensor).collect(),
        output: schema.outputs.iter().map(tensor).collect(),
        instance_group: vec![InstanceGroup {
            name: format!("{}_0", model.name),
            kind,
            count: options.execution.instances as i32,
            gpus,
        }],
        dynamic_batching: batching.map(|b| DynamicBatching {
            preferred_batch_size: Vec::new(),
            max_queue_delay_microseconds: b.max_queue_delay.as_micros() as u64,
        }),
    }
}

#[derive(Debug, Serialize, Clone, Copy, Default)]
pub struct Duration {
    pub count: u64,
    pub ns: u64,
}

impl From<(u64, u64)> for Duration {
    fn from((count, ns): (u64, u64)) -> Duration {
        Duration { count, ns }
    }
}

#[derive(Debug, Serialize)]
pub struct InferenceStats {
    pub success: Duration,
    pub fail: Duration,
    pub queue: Duration,
    pub compute_input: Duration,
    pub compute_infer: Duration,
    pub compute_output: Duration,
    pub cache_hit: Duration,
    pub cache_miss: Duration,
}

#[derive(Debug, Serialize)]
pub struct BatchStats {
    pub batch_size: u64,
    pub compute_input: Duration,
    pub compute_infer: Duration,
    pub compute_output: Duration,
}

#[derive(Debug, Serialize)]
pub struct ModelStatistics {
    pub name: String,
    pub version: String,
    pub last_inference: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    pub inference_stats: InferenceStats,
    pub batch_stats: Vec<BatchStats>,
}

#[derive(Debug, Serialize)]
pub struct StatisticsResponse {
    pub model_stats: Vec<ModelStatistics>,
}

pub fn model_statistics(model: &LoadedModel) -> ModelStatistics {
    let s: &ModelStats = model.runner.stats();
    ModelStatistics {
        name: model.name.clone(),
        version: model.version_str.clone(),
        last_inference: s.last_inference_ms(),
        inference_count: s.inference_count(),
        execution_count: s.execution_count(),
        inference_stats: InferenceStats {
            success: s.success.get().into(),
            fail: s.fail.get().into(),
            queue: s.queue.get().into(),
            compute_input: s.compute_input.get().into(),
            compute_infer: s.compute_infer.get().into(),
            compute_output: s.compute_output.get().into(),
            cache_hit: Duration::default(),
            cache_miss: Duration::default(),
        },
        batch_stats: s
            .batch_stats()
            .into_iter()
            .map(|(size, b)| BatchStats {
                batch_size: size,
                compute_input: (b.count, b.compute_input_ns).into(),
                compute_infer: (b.count, b.compute_infer_ns).into(),
                compute_output: (b.count, b.compute_output_ns).into(),
            })
            .collect(),
    }
}

/// What a V2 model name refers to: a model version, or an endpoint (when no model has that
/// name), shown under the endpoint's name with its first route's model as the schema.
#[derive(Debug)]
pub struct Resolved {
    pub name: String,
    pub model: std::sync::Arc<LoadedModel>,
    pub versions: Vec<u64>,
    /// Model versions whose statistics a stats call reports.
    pub stats: Vec<std::sync::Arc<LoadedModel>>,
}

/// Resolves `name` (and `version`) for the V2 metadata, ready, config and stats calls.
pub fn resolve(
    snap: &crate::core::Snapshot,
    name: &str,
    version: Option<&str>,
) -> Result<Resolved, crate::core::CoreError> {
    use crate::core::CoreError;
    use crate::registry::LookupError;
    let version = version.filter(|v| !v.is_empty());
    match snap.registry.get(name, version) {
        Ok(m) => {
            let stats = match version {
                Some(_) => vec![m.clone()],
                None => snap
                    .registry
                    .versions(name)
                    .into_iter()
                    .filter_map(|v| snap.registry.get_version(name, v).cloned())
                    .collect(),
            };
            Ok(Resolved { name: name.to_string(), model: m.clone(), versions: snap.registry.versions(name), stats })
        }
        Err(LookupError::UnknownModel(_)) if snap.endpoints.contains_key(name) => {
            let ep = &snap.endpoints[name];
            if let Some(v) = version {
                return Err(CoreError::NotFound(format!("'{name}' is an endpoint; it has no version '{v}'")));
            }
            let routed: Vec<_> = ep
                .config
                .routes
                .iter()
                .filter_map(|r| ep.served(&r.served_model_name).ok())
                .map(|s| s.model.clone())
                .collect();
            let model = routed
                .first()
                .cloned()
                .ok_or_else(|| CoreError::Unavailable(format!("endpoint '{name}' has no routes")))?;
            let mut versions: Vec<u64> = routed.iter().map(|m| m.version).collect();
            versions.sort_unstable();
            versions.dedup();
            Ok(Resolved { name: name.to_string(), model, versions, stats: routed })
        }
        Err(e) => Err(e.into()),
    }
}

impl Resolved {
    pub fn metadata(&self) -> ModelMetadata {
        ModelMetadata { name: self.name.clone(), ..model_metadata(&self.model, &self.versions) }
    }

    pub fn config(&self) -> ModelConfig {
        ModelConfig { name: self.name.clone(), ..model_config(&self.model) }
    }

    pub fn statistics(&self) -> StatisticsResponse {
        StatisticsResponse {
            model_stats: self
                .stats
                .iter()
                .map(|m| ModelStatistics { name: self.name.clone(), ..model_statistics(m) })
                .collect(),
        }
    }
}
