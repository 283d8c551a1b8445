//! The request path shared by every transport: resolve a model or endpoint, validate inputs
//! against the model's schema, run it, and shape the answer. HTTP and gRPC handlers call
//! [`Gateway::infer`] (KServe V2) and [`Gateway::predict`] (MLflow `/predict`) and nothing else.

pub mod mlflow;
mod routing;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;

pub use routing::Endpoint;

use crate::config::Config;
use crate::registry::{LoadedModel, LookupError, Registry};
use crate::runtime::RuntimeError;
use crate::tensor::{Tensor, TensorData, element_count};

/// Errors of the request path. Each kind maps to one HTTP status and one gRPC code
/// (`api::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
}

impl CoreError {
    /// Short, bounded name of the kind, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            CoreError::BadRequest(_) => "bad_request",
            CoreError::NotFound(_) => "not_found",
            CoreError::Overloaded(_) => "overloaded",
            CoreError::Unavailable(_) => "unavailable",
            CoreError::Timeout(_) => "timeout",
            CoreError::Internal(_) => "internal",
        }
    }
}

impl From<RuntimeError> for CoreError {
    fn from(e: RuntimeError) -> CoreError {
        match e {
            RuntimeError::Overloaded { .. } => CoreError::Overloaded(e.to_string()),
            RuntimeError::Stopped(_) => CoreError::Unavailable(e.to_string()),
            RuntimeError::Timeout(_) => CoreError::Timeout(e.to_string()),
            RuntimeError::Inference(_) | RuntimeError::Library(_) | RuntimeError::Load { .. } => {
                CoreError::Internal(e.to_string())
            }
        }
    }
}

impl From<LookupError> for CoreError {
    fn from(e: LookupError) -> CoreError {
        CoreError::NotFound(e.to_string())
    }
}

/// A named input tensor as a client sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: Tensor,
}

/// A KServe V2 inference request, decoded from any transport.
#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    pub model: String,
    /// `None` or empty: the highest loaded version.
    pub version: Option<String>,
    pub id: Option<String>,
    pub inputs: Vec<NamedTensor>,
    /// Outputs to return, by name; `None`: all of them.
    pub outputs: Option<Vec<String>>,
}

/// The answer to an [`InferRequest`].
#[derive(Debug)]
pub struct InferResponse {
    pub model: Arc<LoadedModel>,
    pub id: Option<String>,
    /// (schema output index, tensor), in the order requested.
    pub outputs: Vec<(usize, Tensor)>,
}

/// The answer to a `/predict` call: the JSON body and who served it.
#[derive(Debug)]
pub struct PredictResponse {
    pub body: Vec<u8>,
    pub served_model: Arc<str>,
    pub model: Arc<LoadedModel>,
}

/// Everything one config produced: loaded models and endpoints.
#[derive(Debug)]
pub struct Snapshot {
    pub registry: Registry,
    pub endpoints: HashMap<String, Endpoint>,
    pub default_endpoint: Option<String>,
}

impl Snapshot {
    /// Loads every model of `config` (blocking) and builds its endpoints.
    pub fn load(config: &Config) -> Result<Snapshot, RuntimeError> {
        let registry = Registry::load(config)?;
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| Endpoint::build(e, &registry).map(|ep| (e.name.clone(), ep)))
            .collect::<Result<HashMap<_, _>, _>>()?;
        Ok(Snapshot { registry, endpoints, default_endpoint: config.server.default_endpoint.clone() })
    }
}

/// The gateway's request path.
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    ready: AtomicBool,
}

impl Gateway {
    pub fn new(snapshot: Snapshot) -> Gateway {
        Gateway { snapshot: ArcSwap::from_pointee(snapshot), ready: AtomicBool::new(true) }
    }

    /// The current snapshot; a request loads it once and finishes on it.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Ready to serve inference (false while shutting down).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    fn check_ready(&self) -> Result<(), CoreError> {
        if self.is_ready() { Ok(()) } else { Err(CoreError::Unavailable("server is shutting down".into())) }
    }

    /// Runs a KServe V2 inference request.
    pub async fn infer(&self, req: InferRequest) -> Result<InferResponse, CoreError> {
        self.check_ready()?;
        let snap = self.snapshot();
        let model = snap.registry.get(&req.model, req.version.as_deref())?.clone();
        let selected = select_outputs(&model, req.outputs.as_deref())?;
        let inputs = order_inputs(&model, req.inputs)?;
        let mut outputs = run_model(&model, inputs).await?;
        let outputs = selected
            .into_iter()
            .map(|i| (i, std::mem::replace(&mut outputs[i], Tensor::new(Vec::new(), TensorData::F32(Vec::new())))))
            .collect();
        Ok(InferResponse { model, id: req.id, outputs })
    }

    /// Runs an MLflow-format `/predict` request against an endpoint (`None`: the default one).
    pub async fn predict(&self, endpoint: Option<&str>, body: &[u8]) -> Result<PredictResponse, CoreError> {
        self.check_ready()?;
        let snap = self.snapshot();
        let name = match endpoint {
            Some(n) => n,
            None => snap.default_endpoint.as_deref().ok_or_else(|| {
                CoreError::NotFound("no default endpoint is configured; call /endpoints/{name}/predict".into())
            })?,
        };
        let ep = snap.endpoints.get(name).ok_or_else(|| CoreError::NotFound(format!("unknown endpoint '{name}'")))?;
        let payload = mlflow::parse(body)?;
        let served = ep.pick();
        let start = Instant::now();
        let result = async {
            let inputs = mlflow::to_tensors(&served.model, payload)?;
            let outputs = run_model(&served.model, inputs).await?;
            mlflow::render(&served.model, &outputs)
        }
        .await;
        match &result {
            Ok(_) => {
                served.metrics.success.increment(1);
                served.metrics.duration.record(start.elapsed().as_secs_f64());
            }
            Err(e) => served.metrics.failure(e.kind()),
        }
        Ok(PredictResponse { body: result?, served_model: served.name.clone(), model: served.model.clone() })
    }
}

/// Runs validated inputs on a model and records its statistics and metrics.
async fn run_model(model: &LoadedModel, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, CoreError> {
    let rows = inputs.first().map(Tensor::rows).unwrap_or(1);
    let start = Instant::now();
    match model.runner.infer(inputs).await {
        Ok(out) => {
            let total = start.elapsed();
            model.runner.stats().record_success(rows, total, &out.phases);
            let m = &model.metrics;
            m.success.increment(1);
            m.rows.increment(rows as u64);
            m.duration.record(total.as_secs_f64());
            m.queue.record(out.phases.queue.as_secs_f64());
            m.compute.record(out.phases.compute_infer.as_secs_f64());
            m.batch_rows.record(out.batch_rows as f64);
            Ok(out.outputs)
        }
        Err(e) => {
            let e = CoreError::from(e);
            if !matches!(e, CoreError::Overloaded(_)) {
                model.runner.stats().record_failure(start.elapsed());
            }
            model.metrics.failure(e.kind());
            Err(e)
        }
    }
}

/// Indices of the outputs to return, in request order; all outputs when none are named.
fn select_outputs(model: &LoadedModel, names: Option<&[String]>) -> Result<Vec<usize>, CoreError> {
    let schema = model.runner.schema();
    match names {
        None => Ok((0..schema.outputs.len()).collect()),
        Some(names) => names
            .iter()
            .map(|n| {
                schema.output_index(n).ok_or_else(|| {
                    CoreError::BadRequest(format!(
                        "unknown output '{n}' for model '{}'; outputs are {:?}",
                        model.name,
                        schema.outputs.iter().map(|o| &o.name).collect::<Vec<_>>()
                    ))
                })
            })
            .collect(),
    }
}

/// Validates named inputs against the schema and returns them in schema order.
pub fn order_inputs(model: &LoadedModel, inputs: Vec<NamedTensor>) -> Result<Vec<Tensor>, CoreError> {
    let schema = model.runner.schema();
    let names = || schema.inputs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>();
    let mut slots: Vec<Option<Tensor>> = vec![None; schema.inputs.len()];
    for input in inputs {
        let i = schema.input_index(&input.name).ok_or_else(|| {
            CoreError::BadRequest(format!(
                "unknown input '{}' for model '{}'; inputs are {:?}",
                input.name,
                model.name,
                names()
            ))
        })?;
        if slots[i].is_some() {
            return Err(CoreError::BadRequest(format!("input '{}' is given twice", input.name)));
        }
        slots[i] = Some(input.tensor);
    }
    let mut ordered = Vec::with_capacity(slots.len());
    let mut batch: Option<i64> = None;
    for (spec, slot) in schema.inputs.iter().zip(slots) {
        let t = slot.ok_or_else(|| {
            CoreError::BadRequest(format!("missing input '{}' for model '{}'", spec.name, model.name))
        })?;
        check_tensor(&spec.name, spec, &t)?;
        if spec.has_batch_dim() {
            let rows = t.shape[0];
            match batch {
                Some(b) if b != rows => {
                    return Err(CoreError::BadRequest(format!(
                        "inputs disagree on the batch size: '{}' has {rows} rows, another input has {b}",
                        spec.name
                    )));
                }
                _ => batch = Some(rows),
            }
        }
        ordered.push(t);
    }
    Ok(ordered)
}

/// Checks datatype, shape and element count of one input against its spec.
fn check_tensor(name: &str, spec: &crate::runtime::TensorSpec, t: &Tensor) -> Result<(), CoreError> {
    if t.dtype() != spec.dtype {
        return Err(CoreError::BadRequest(format!(
            "input '{name}' has datatype {} but the model expects {}",
            t.dtype(),
            spec.dtype
        )));
    }
    let shape_ok = t.shape.len() == spec.shape.len()
        && t.shape.iter().zip(&spec.shape).all(|(&got, &want)| got >= 0 && (want < 0 || got == want));
    if !shape_ok {
        return Err(CoreError::BadRequest(format!(
            "input '{name}' has shape {:?} but the model expects {:?} (-1 = any size)",
            t.shape, spec.shape
        )));
    }
    if spec.has_batch_dim() && t.shape[0] == 0 {
        return Err(CoreError::BadRequest(format!("input '{name}' has no rows")));
    }
    let expected = element_count(&t.shape)
        .ok_or_else(|| CoreError::BadRequest(format!("input '{name}' has an impossible shape {:?}", t.shape)))?;
    if t.data.len() != expected {
        return Err(CoreError::BadRequest(format!(
            "input '{name}' has {} elements but shape {:?} needs {expected}",
            t.data.len(),
            t.shape
        )));
    }
    if let TensorData::Bytes(items) = &t.data
        && items.iter().any(|b| std::str::from_utf8(b).is_err())
    {
        return Err(CoreError::BadRequest(format!("input '{name}' holds BYTES that are not UTF-8 strings")));
    }
    Ok(())
}
