//! The model repository: loads each configured model version (`<repo>/<name>/<version>/model.onnx`
//! plus `<repo>/<name>/manifest.toml`, or the version's own `<repo>/<name>/<version>/manifest.toml`), checks the manifest against the session's schema, and
//! answers lookups by name and version.

pub mod fetch;
pub mod manifest;
pub mod mlflow;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use manifest::{Manifest, ManifestError, ProblemType};

use sluice_wire::DataType;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::runtime::{ModelRunner, RuntimeError};

/// How named features map onto the model's input tensors.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureLayout {
    /// All features are the columns of one `[N, F]` input, in manifest order.
    Packed { input: usize },
    /// Feature `i` is its own input (`[N]` or `[N, 1]`), `inputs[i]` in schema order.
    PerInput { inputs: Vec<usize> },
}

/// Which outputs make up a `/predict` answer.
#[derive(Debug, Clone, PartialEq)]
pub enum PredictionLayout {
    Classification {
        label: Option<usize>,
        probabilities: Option<usize>,
    },
    Regression {
        value: usize,
    },
    /// Every output, by name.
    Tensor,
}

/// One loaded model version with everything the request path needs precomputed.
#[derive(Debug)]
pub struct LoadedModel {
    pub name: String,
    pub version: u64,
    pub version_str: String,
    pub runner: ModelRunner,
    pub manifest: Arc<Manifest>,
    pub features: Option<Vec<String>>,
    pub feature_layout: Option<FeatureLayout>,
    pub prediction: PredictionLayout,
    pub metrics: crate::metrics::ModelMetrics,
    /// Size and modification time of `model.onnx` when it was loaded.
    pub file_stamp: Option<FileStamp>,
}

/// What tells a model file apart from the one loaded: its size and modification time.
pub type FileStamp = (u64, std::time::SystemTime);

/// The stamp of the file at `path`, when it can be read.
pub fn file_stamp(path: &std::path::Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// All loaded models, by name then version.
#[derive(Debug, Default)]
pub struct Registry {
    models: BTreeMap<String, BTreeMap<u64, Arc<LoadedModel>>>,
}

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error("model '{0}' has no version '{1}'")]
    UnknownVersion(String, String),
}

impl Registry {
    /// Loads every model version the config names (blocking; runs each session's warm-up).
    /// Versions already loaded in `previous` with the same options are reused, not reloaded, so
    /// their statistics and queues carry over a config change.
    pub fn build(config: &Config, previous: Option<&Registry>, tasks: &TaskTracker) -> Result<Registry, RuntimeError> {
        if let Some(first) = config.unresolved.first() {
            return Err(RuntimeError::Load {
                model: first.clone(),
                version: 0,
                message: "its MLflow alias is not resolved yet".into(),
            });
        }
        let mut models: BTreeMap<String, BTreeMap<u64, Arc<LoadedModel>>> = BTreeMap::new();
        let mut manifests: BTreeMap<String, Arc<Manifest>> = BTreeMap::new();
        for ((name, version), options) in &config.versions {
            let reused = previous
                .and_then(|p| p.get_version(name, *version))
                .filter(|m| m.runner.configured_options() == options);
            // A served version is immutable: a model.onnx replaced under the same version is
            // not reloaded behind the clients' backs (the loaded one keeps serving); it is said.
            if let Some(m) = reused
                && m.file_stamp.is_some()
                && file_stamp(&config.model_path(name, *version)) != m.file_stamp
            {
                tracing::warn!(
                    model = %name,
                    version,
                    "model.onnx changed on disk since this version was loaded; a served version is immutable, so \
                     the loaded one keeps serving. Publish the new file as a new version to serve it"
                );
            }
            let loaded = match reused {
                Some(m) => m.clone(),
                None => {
                    // a version may carry its own manifest (those from an MLflow registry do)
                    let version_dir = config.runtime.model_repository.join(name).join(version.to_string());
                    let own = version_dir.join("manifest.toml").is_file();
                    let manifest = match manifests.get(name) {
                        _ if own => Arc::new(Manifest::load(&version_dir).map_err(|e| RuntimeError::Load {
                            model: name.clone(),
                            version: *version,
                            message: e.to_string(),
                        })?),
                        Some(m) => m.clone(),
                        None => {
                            let dir = config.runtime.model_repository.join(name);
                            let m = Arc::new(Manifest::load(&dir).map_err(|e| RuntimeError::Load {
                                model: name.clone(),
                                version: *version,
                                message: e.to_string(),
                            })?);
                            manifests.insert(name.clone(), m.clone());
                            m
                        }
                    };
                    let path = config.model_path(name, *version);
                    let stamp = file_stamp(&path);
                    let runner = ModelRunner::load(&path, name, *version, options.clone(), tasks)?;
                    let mut loaded = describe(runner, manifest).map_err(|e| RuntimeError::Load {
                        model: name.clone(),
                        version: *version,
                        message: e.to_string(),
                    })?;
                    loaded.file_stamp = stamp;
                    tracing::info!(model = %name, version, "model loaded");
                    Arc::new(loaded)
                }
            };
            models.entry(name.clone()).or_default().insert(*version, loaded);
        }
        Ok(Registry { models })
    }

    /// A model version; `None` picks the highest version.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<&Arc<LoadedModel>, LookupError> {
        let versions = self.models.get(name).ok_or_else(|| LookupError::UnknownModel(name.to_string()))?;
        match version.filter(|v| !v.is_empty()) {
            None => versions.values().next_back().ok_or_else(|| LookupError::UnknownModel(name.to_string())),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .and_then(|n| versions.get(&n))
                .ok_or_else(|| LookupError::UnknownVersion(name.to_string(), v.to_string())),
        }
    }

    /// Exact lookup by number.
    pub fn get_version(&self, name: &str, version: u64) -> Option<&Arc<LoadedModel>> {
        self.models.get(name).and_then(|v| v.get(&version))
    }

    /// Versions of a model, lowest first.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        self.models.get(name).map(|v| v.keys().copied().collect()).unwrap_or_default()
    }

    /// Every loaded model version.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<LoadedModel>> {
        self.models.values().flat_map(|v| v.values())
    }
}

/// Checks the manifest against the session's schema and precomputes the layouts.
fn describe(runner: ModelRunner, manifest: Arc<Manifest>) -> Result<LoadedModel, ManifestError> {
    let schema = runner.schema();
    let feature_layout = match &manifest.features {
        None => None,
        Some(features) => Some(feature_layout(schema, features)?),
    };
    let output = |name: &Option<String>, key: &'static str| -> Result<Option<usize>, ManifestError> {
        match name {
            None => Ok(None),
            Some(n) => schema.output_index(n).map(Some).ok_or_else(|| ManifestError::UnknownOutput {
                key,
                name: n.clone(),
                outputs: schema.outputs.iter().map(|o| o.name.clone()).collect(),
            }),
        }
    };
    let prediction = match manifest.problem_type {
        ProblemType::Classification => {
            let label = output(&manifest.outputs.label, "label")?;
            let probabilities = output(&manifest.outputs.probabilities, "probabilities")?;
            if label.is_none() && probabilities.is_none() {
                return Err(ManifestError::NoClassificationOutput);
            }
            if let Some(p) = probabilities {
                let spec = &schema.outputs[p];
                if !spec.dtype.is_float() || spec.shape.len() != 2 {
                    return Err(ManifestError::ProbabilitiesShape { name: spec.name.clone() });
                }
                if let (Some(labels), Some(&classes)) = (&manifest.class_labels, spec.shape.get(1))
                    && classes > 0
                    && classes as usize != labels.len()
                {
                    return Err(ManifestError::ClassCount { labels: labels.len(), name: spec.name.clone(), classes });
                }
            }
            if let Some(l) = label {
                let spec = &schema.outputs[l];
                if !matches!(spec.dtype, DataType::I64 | DataType::I32 | DataType::Bytes) {
                    return Err(ManifestError::LabelType { name: spec.name.clone() });
                }
            }
            PredictionLayout::Classification { label, probabilities }
        }
        ProblemType::Regression => {
            let value = output(&manifest.outputs.value, "value")?
                .or_else(|| (schema.outputs.len() == 1).then_some(0))
                .ok_or(ManifestError::NoRegressionOutput)?;
            PredictionLayout::Regression { value }
        }
        ProblemType::Tensor => PredictionLayout::Tensor,
    };
    Ok(LoadedModel {
        name: runner.name().to_string(),
        version: runner.version(),
        version_str: runner.version().to_string(),
        features: manifest.features.clone(),
        feature_layout,
        prediction,
        manifest,
        metrics: crate::metrics::ModelMetrics::new(runner.name(), &runner.version().to_string()),
        runner,
        file_stamp: None,
    })
}

fn feature_layout(schema: &crate::runtime::ModelSchema, features: &[String]) -> Result<FeatureLayout, ManifestError> {
    if features.is_empty() {
        return Err(ManifestError::NoFeatures);
    }
    if schema.inputs.len() == 1 {
        let spec = &schema.inputs[0];
        let width = spec.shape.get(1).copied();
        if spec.shape.len() == 2 && (width == Some(features.len() as i64) || width == Some(-1)) {
            return Ok(FeatureLayout::Packed { input: 0 });
        }
        if features.len() > 1 || spec.name != features[0] {
            return Err(ManifestError::FeatureCount {
                count: features.len(),
                input: spec.name.clone(),
                shape: spec.shape.clone(),
            });
        }
    }
    let mut inputs = Vec::with_capacity(features.len());
    for f in features {
        let i = schema.input_index(f).ok_or_else(|| ManifestError::UnknownFeature {
            feature: f.clone(),
            inputs: schema.inputs.iter().map(|t| t.name.clone()).collect(),
        })?;
        let shape = &schema.inputs[i].shape;
        if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
            return Err(ManifestError::FeatureShape { feature: f.clone(), shape: shape.clone() });
        }
        inputs.push(i);
    }
    if inputs.len() != schema.inputs.len() {
        return Err(ManifestError::UnusedInputs);
    }
    Ok(FeatureLayout::PerInput { inputs })
}
