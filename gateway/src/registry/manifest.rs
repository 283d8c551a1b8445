//! `models/<name>/manifest.toml`: what the ONNX file cannot say (feature names, problem type,
//! class labels, which outputs hold the label, probabilities or value).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What kind of answer the model gives, for `/predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProblemType {
    Classification,
    Regression,
    /// Raw tensors in, raw tensors out.
    #[default]
    Tensor,
}

/// Names of the outputs that carry the prediction.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
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
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
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

/// Why a model's `manifest.toml` could not be loaded (both name the file), or does not fit the
/// model's inputs and outputs (checked at load).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("{}: {}", path.display(), source.to_string().trim_end())]
    Parse { path: std::path::PathBuf, source: toml::de::Error },
    // The manifest does not fit the model's session schema (checked at load).
    #[error("manifest outputs.{key} names '{name}', but the model's outputs are {outputs:?}")]
    UnknownOutput { key: &'static str, name: String, outputs: Vec<String> },
    #[error("a classification manifest needs outputs.label or outputs.probabilities")]
    NoClassificationOutput,
    #[error("outputs.probabilities '{name}' must be a float [N, classes] tensor")]
    ProbabilitiesShape { name: String },
    #[error("manifest has {labels} class_labels but '{name}' has {classes} classes")]
    ClassCount { labels: usize, name: String, classes: i64 },
    #[error("outputs.label '{name}' must be an integer or string tensor")]
    LabelType { name: String },
    #[error("a regression manifest needs outputs.value when the model has several outputs")]
    NoRegressionOutput,
    #[error("manifest features is empty; list the feature names or remove the key")]
    NoFeatures,
    #[error("manifest lists {count} features but input '{input}' has shape {shape:?}; expected [N, {count}]")]
    FeatureCount { count: usize, input: String, shape: Vec<i64> },
    #[error("manifest feature '{feature}' is not an input of the model (inputs: {inputs:?})")]
    UnknownFeature { feature: String, inputs: Vec<String> },
    #[error("input '{feature}' has shape {shape:?}; a one-feature input must be [N] or [N, 1]")]
    FeatureShape { feature: String, shape: Vec<i64> },
    #[error("every model input must be a manifest feature")]
    UnusedInputs,
}

impl Manifest {
    /// Reads `<model dir>/manifest.toml`; a missing file is an empty manifest.
    pub fn load(model_dir: &Path) -> Result<Manifest, ManifestError> {
        let path = model_dir.join("manifest.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|source| ManifestError::Parse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(source) => Err(ManifestError::Read { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Manifest::load(dir.path()).is_ok(), "a missing manifest is an empty one");
        std::fs::write(dir.path().join("manifest.toml"), "problem_type = 3\n").unwrap();
        let e = Manifest::load(dir.path()).unwrap_err();
        assert!(matches!(e, ManifestError::Parse { .. }), "{e:?}");
        let prefix = format!("{}: ", dir.path().join("manifest.toml").display());
        assert!(e.to_string().starts_with(&prefix), "{e}");
        assert!(!e.to_string().ends_with('\n'), "{e:?}");
    }

    #[test]
    fn fit_messages_keep_their_wording() {
        let e = ManifestError::UnknownOutput { key: "label", name: "y".into(), outputs: vec!["a".into(), "b".into()] };
        assert_eq!(e.to_string(), r#"manifest outputs.label names 'y', but the model's outputs are ["a", "b"]"#);
        let e = ManifestError::FeatureCount { count: 3, input: "x".into(), shape: vec![-1, 4] };
        assert_eq!(e.to_string(), "manifest lists 3 features but input 'x' has shape [-1, 4]; expected [N, 3]");
    }
}
