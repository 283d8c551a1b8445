//! A served model of an endpoint: the name traffic is routed to, the model version behind it,
//! its metrics, and the table outcome of a request it answered. Shared by routing (which picks
//! one) and shadowing (which mirrors to some), so neither imports the other.

use std::sync::Arc;
use std::time::Instant;

use super::CoreError;
use super::capture::Outcome;
use crate::inference_log::PredictionSpec;
use crate::metrics::EndpointMetrics;
use crate::registry::LoadedModel;
use crate::tensor::Tensor;

/// A served model of an endpoint: a name, the model version behind it, and its metrics.
#[derive(Debug)]
pub struct ServedModel {
    pub name: Arc<str>,
    pub model: Arc<LoadedModel>,
    pub metrics: EndpointMetrics,
    /// Where its prediction is in its outputs (for the inference table).
    pub spec: Arc<PredictionSpec>,
}

impl ServedModel {
    /// The outcome of a request on this served model, for its table row.
    pub fn outcome(
        &self,
        start: Instant,
        result: Result<(), &CoreError>,
        inputs: Option<Arc<Vec<Tensor>>>,
        outputs: Option<Arc<Vec<Tensor>>>,
    ) -> Outcome<'_> {
        Outcome {
            served_model: self.name.clone(),
            model: Some(&self.model),
            spec: Some(self.spec.clone()),
            is_shadow: false,
            error: result.err().cloned(),
            start,
            phases: None,
            inputs,
            outputs,
            request_json: None,
            response_json: None,
        }
    }
}
