//! `models/<name>/manifest.toml`: what the ONNX file cannot say (feature names, problem type,
//! class labels, which outputs hold the label, probabilities or value).

use std::path::Path;

use serde::Deserialize;

/// What kind of answer the model gives, for `/predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProblemType {
    Classification,
    Regression,
    /// Raw tensors in, raw tensors out.
    #[default]
    Tensor,
}

/// Names of the outputs that carry the prediction.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ManifestOutputs {
    /// Classifier: the predicted class value (INT64 index into `class_labels`).
    pub label: Option<String>,
    /// Classifier: class probabilities `[N, classes]`.
    pub probabilities: Option<String>,
    /// Regressor: the predicted value `[N]` or `[N, 1]`.
    pub value: Option<String>,
}

/// A model's manifest. Every field is optional; a model without one serves raw tensors.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub description: Option<String>,
    #[serde(default)]
    pub problem_type: ProblemType,
    /// Named input features, in the column order of the packed input tensor (or the names of
    /// one-column inputs).
    pub features: Option<Vec<String>>,
    /// Class names; `class_labels[i]` names class value `i`.
    pub class_labels: Option<Vec<String>>,
    #[serde(default)]
    pub outputs: ManifestOutputs,
}

impl Manifest {
    /// Reads `<model dir>/manifest.toml`; a missing file is an empty manifest.
    pub fn load(model_dir: &Path) -> Result<Manifest, String> {
        let path = model_dir.join("manifest.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}
