//! Glue between the request path and the inference tables: table layouts and prediction specs
//! from loaded models, the set of open tables (kept across config changes), and building records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::CoreError;
use crate::inference_log::{
    FeatureColumn, InferenceRecord, InputColumns, LogError, Payload, PredictionKind, PredictionSpec, Table,
    TableLayout, TableOptions,
};
use crate::registry::{FeatureLayout, LoadedModel, PredictionLayout};
use crate::runtime::stats::PhaseTimes;
use crate::tensor::Tensor;

/// The table layout an endpoint's first route model implies.
pub fn table_layout(model: &LoadedModel) -> TableLayout {
    let schema = model.runner.schema();
    let inputs = match (&model.features, &model.feature_layout) {
        (Some(names), Some(FeatureLayout::Packed { input })) => InputColumns::Features(
            names
                .iter()
                .enumerate()
                .map(|(j, n)| FeatureColumn { name: n.clone(), input: *input, offset: j, width: names.len() })
                .collect(),
        ),
        (Some(names), Some(FeatureLayout::PerInput { inputs })) => InputColumns::Features(
            names
                .iter()
                .zip(inputs)
                .map(|(n, &i)| FeatureColumn { name: n.clone(), input: i, offset: 0, width: 1 })
                .collect(),
        ),
        _ => InputColumns::Tensors(schema.inputs.iter().map(|t| t.name.clone()).collect()),
    };
    TableLayout { inputs, prediction: prediction_kind(model) }
}

pub fn prediction_kind(model: &LoadedModel) -> PredictionKind {
    match model.prediction {
        PredictionLayout::Classification { .. } => PredictionKind::Classification,
        PredictionLayout::Regression { .. } => PredictionKind::Regression,
        PredictionLayout::Tensor => PredictionKind::Tensor,
    }
}

/// Where a served model's prediction is in its outputs.
pub fn prediction_spec(model: &LoadedModel) -> PredictionSpec {
    let (label, probabilities, value) = match model.prediction {
        PredictionLayout::Classification { label, probabilities } => (label, probabilities, None),
        PredictionLayout::Regression { value } => (None, None, Some(value)),
        PredictionLayout::Tensor => (None, None, None),
    };
    PredictionSpec {
        label,
        probabilities,
        value,
        class_labels: model.manifest.class_labels.clone(),
        output_names: model.runner.schema().outputs.iter().map(|o| o.name.clone()).collect(),
    }
}

/// The HTTP status a row records for an error: the transports' one mapping
/// (`api::error::status_code`), handed down so the core does not choose codes itself.
pub type StatusOf = fn(&CoreError) -> u16;

/// Open tables by name. A table keeps its writer across config changes as long as its options
/// and layout stay the same; a changed table gets a new writer (the old one finishes and stops).
#[derive(Debug)]
pub struct TableSet {
    tables: Mutex<HashMap<String, Table>>,
    status_of: StatusOf,
}

impl TableSet {
    /// No tables yet; rows record errors with the status `status_of` gives them.
    pub fn new(status_of: StatusOf) -> TableSet {
        TableSet { tables: Mutex::new(HashMap::new()), status_of }
    }

    pub fn status_of(&self) -> StatusOf {
        self.status_of
    }

    pub fn get_or_open(&self, options: &TableOptions, layout: &TableLayout) -> Result<Table, LogError> {
        // A panic while the lock was held left the map whole (every update is one insert).
        let mut tables = self.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(t) = tables.get(&options.table)
            && t.options() == options
            && t.layout() == layout
        {
            return Ok(t.clone());
        }
        let t = Table::open(options.clone(), layout.clone())?;
        tables.insert(options.table.clone(), t.clone());
        Ok(t)
    }

    /// Flushes and stops every table writer (blocking).
    pub fn close_all(&self) {
        let tables: Vec<Table> =
            self.tables.lock().map(|mut t| t.drain().map(|(_, v)| v).collect()).unwrap_or_default();
        for t in tables {
            t.close();
        }
    }
}

/// What a request contributes to its table rows besides inputs and outputs.
#[derive(Debug, Clone)]
pub struct CaptureContext {
    pub table: Table,
    /// The status of an error answer (see [`StatusOf`]).
    pub status_of: StatusOf,
    pub endpoint: Arc<str>,
    pub request_id: Arc<str>,
    pub client_request_id: Option<String>,
    pub requester: Option<String>,
    pub timestamp_us: i64,
}

/// The outcome of one request on one served model.
pub struct Outcome<'a> {
    pub served_model: Arc<str>,
    pub model: Option<&'a LoadedModel>,
    pub spec: Option<Arc<PredictionSpec>>,
    pub is_shadow: bool,
    /// `None`: answered (200).
    pub error: Option<CoreError>,
    pub start: Instant,
    pub phases: Option<(PhaseTimes, usize)>,
    pub inputs: Option<Arc<Vec<Tensor>>>,
    pub outputs: Option<Arc<Vec<Tensor>>>,
    pub request_json: Option<&'a [u8]>,
    pub response_json: Option<&'a [u8]>,
}

impl Outcome<'_> {
    /// A request that failed before a served model was chosen (bad body, unknown served model).
    pub fn failed_before_routing(e: &CoreError, start: Instant) -> Outcome<'static> {
        Outcome {
            served_model: Arc::from(""),
            model: None,
            spec: None,
            is_shadow: false,
            error: Some(e.clone()),
            start,
            phases: None,
            inputs: None,
            outputs: None,
            request_json: None,
            response_json: None,
        }
    }
}

impl CaptureContext {
    /// Builds the record of an outcome.
    pub fn record(&self, o: Outcome<'_>) -> InferenceRecord {
        let opts = self.table.options();
        let payload =
            |b: Option<&[u8]>| b.filter(|_| opts.log_payloads).map(|b| Payload::capped(b, opts.max_payload_bytes));
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let rows = o.inputs.as_ref().and_then(|i| i.first()).map(Tensor::rows).unwrap_or(0);
        InferenceRecord {
            request_id: self.request_id.clone(),
            client_request_id: self.client_request_id.clone(),
            timestamp_us: self.timestamp_us,
            endpoint: self.endpoint.clone(),
            served_model: o.served_model,
            model_name: o.model.map(|m| Arc::from(m.name.as_str())).unwrap_or_else(|| Arc::from("")),
            model_version: o.model.map(|m| Arc::from(m.version_str.as_str())).unwrap_or_else(|| Arc::from("")),
            is_shadow: o.is_shadow,
            status_code: o.error.as_ref().map_or(200, self.status_of),
            error: o.error.as_ref().map(CoreError::message),
            latency_ms: ms(o.start.elapsed()),
            execution_ms: o.phases.map(|(p, _)| ms(p.compute_infer)).unwrap_or(0.0),
            queue_ms: o.phases.map(|(p, _)| ms(p.queue)).unwrap_or(0.0),
            batch_size: o.phases.map(|(_, b)| b as u32).unwrap_or(0),
            sampling_fraction: opts.sampling_fraction,
            requester: self.requester.clone(),
            rows,
            inputs: o.inputs,
            outputs: o.outputs,
            prediction: o.spec,
            request_json: payload(o.request_json),
            response_json: payload(o.response_json),
        }
    }
}
