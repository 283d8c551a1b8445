//! The request path shared by every transport: resolve an endpoint or model, route to a served
//! model, validate inputs against its schema, mirror to shadows, run it, and render the answer.
//! Every transport parses its wire format into one [`Request`] and calls [`Gateway::handle`],
//! and nothing else; the request's [`record`] is finished once, whatever the exit.

pub mod capture;
mod inputs;
mod record;
pub mod request;
pub mod routing;
pub mod served;
pub mod shadow;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use capture::TableSet;
pub use inputs::order_inputs;
pub use request::{
    Answer, FieldValue, Handled, Inputs, ModelInputs, NamedTensor, Render, Request, RequestMeta, SelectedTensors,
    Target, Transport,
};
pub use routing::{Endpoint, RouteHints};
pub use served::ServedModel;

use record::Record;

use crate::config::Config;
use crate::registry::{LoadedModel, LookupError, Registry};
use crate::runtime::RuntimeError;
use crate::runtime::stats::PhaseTimes;
use crate::tensor::Tensor;

/// Errors of the request path. Each kind maps to one HTTP status and one gRPC code
/// (`api::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
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
            CoreError::Forbidden(_) => "forbidden",
            CoreError::NotFound(_) => "not_found",
            CoreError::Overloaded(_) => "overloaded",
            CoreError::Unavailable(_) => "unavailable",
            CoreError::Timeout(_) => "timeout",
            CoreError::Internal(_) => "internal",
        }
    }
}

impl CoreError {
    /// The message, cut to [`crate::limits::MAX_ERROR_BYTES`]: what answers and table rows carry.
    pub fn message(&self) -> String {
        crate::limits::bounded_message(&self.to_string()).into_owned()
    }
}

impl From<RuntimeError> for CoreError {
    fn from(e: RuntimeError) -> CoreError {
        match e {
            RuntimeError::Overloaded { .. } => CoreError::Overloaded(e.to_string()),
            RuntimeError::Stopped(_) => CoreError::Unavailable(e.to_string()),
            RuntimeError::Timeout(_) => CoreError::Timeout(e.to_string()),
            RuntimeError::Inference(_)
            | RuntimeError::Library(_)
            | RuntimeError::Load { .. }
            | RuntimeError::WorkerPanicked(_) => CoreError::Internal(e.to_string()),
        }
    }
}

impl From<crate::limits::TooLong> for CoreError {
    fn from(e: crate::limits::TooLong) -> CoreError {
        CoreError::BadRequest(e.to_string())
    }
}

impl From<LookupError> for CoreError {
    fn from(e: LookupError) -> CoreError {
        CoreError::NotFound(e.to_string())
    }
}

/// Why a config could not be turned into a servable snapshot.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("endpoint '{endpoint}': {message}")]
    Endpoint { endpoint: String, message: String },
}

/// Everything one config produced: loaded models and endpoints.
#[derive(Debug)]
pub struct Snapshot {
    pub registry: Registry,
    pub endpoints: HashMap<String, Endpoint>,
    pub default_endpoint: Option<String>,
}

impl Snapshot {
    /// Loads the models of `config` (blocking), reusing those of `previous` that did not change,
    /// and builds its endpoints.
    pub fn build(
        config: &Config,
        previous: Option<&Snapshot>,
        tasks: &TaskTracker,
        tables: &TableSet,
    ) -> Result<Snapshot, BuildError> {
        let registry = Registry::build(config, previous.map(|p| &p.registry), tasks)?;
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| Endpoint::build(e, &registry, tasks, tables).map(|ep| (e.name.clone(), ep)))
            .collect::<Result<HashMap<_, _>, _>>()?;
        Ok(Snapshot { registry, endpoints, default_endpoint: config.server.default_endpoint.clone() })
    }

    /// The Arrow schema of each logging endpoint's inference table.
    pub fn table_schemas(&self) -> HashMap<String, datafusion::arrow::datatypes::SchemaRef> {
        self.endpoints
            .iter()
            .filter_map(|(n, e)| e.table().and_then(|t| t.schema().ok()).map(|s| (n.clone(), s)))
            .collect()
    }

    /// A snapshot with nothing in it (what shutdown swaps in so queues drain and close).
    pub fn empty() -> Snapshot {
        Snapshot { registry: Registry::default(), endpoints: HashMap::new(), default_endpoint: None }
    }

    /// Where a request's target is: a model, or an endpoint (and the served model it names).
    fn resolve<'s, 't>(&'s self, target: &'t Target) -> Result<Resolved<'s, 't>, CoreError> {
        match target {
            Target::Model { name, version } => match self.registry.get(name, version.as_deref()) {
                Ok(m) => Ok(Resolved::Model(m.clone())),
                Err(LookupError::UnknownModel(_)) if self.endpoints.contains_key(name) => {
                    if version.as_deref().is_some_and(|v| !v.is_empty()) {
                        return Err(CoreError::BadRequest(format!(
                            "'{name}' is an endpoint; it has no versions (pin a served model with x-sluice-served-model)"
                        )));
                    }
                    Ok(Resolved::Endpoint(self.endpoint(Some(name))?, None))
                }
                Err(e) => Err(e.into()),
            },
            Target::Endpoint { name, served_model } => {
                Ok(Resolved::Endpoint(self.endpoint(name.as_deref())?, served_model.as_deref()))
            }
        }
    }

    fn endpoint(&self, name: Option<&str>) -> Result<&Endpoint, CoreError> {
        let name = match name {
            Some(n) => n,
            None => self.default_endpoint.as_deref().ok_or_else(|| {
                CoreError::NotFound("no default endpoint is configured; call /endpoints/{name}/predict".into())
            })?,
        };
        self.endpoints.get(name).ok_or_else(|| CoreError::NotFound(format!("unknown endpoint '{name}'")))
    }
}

/// The gateway's request path over the current snapshot.
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    ready: AtomicBool,
    /// Stopping: health checks say not ready, inference is still served (the drain delay).
    draining: AtomicBool,
    tables: Arc<TableSet>,
    /// Recent traffic per endpoint and served model (the dashboard's charts).
    traffic: crate::traffic_stats::TrafficStats,
}

impl Gateway {
    pub fn new(snapshot: Snapshot, tables: Arc<TableSet>) -> Gateway {
        Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            ready: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            tables,
            traffic: crate::traffic_stats::TrafficStats::default(),
        }
    }

    /// Recent traffic per endpoint and served model.
    pub fn traffic(&self) -> &crate::traffic_stats::TrafficStats {
        &self.traffic
    }

    /// The inference tables in use (kept across config changes).
    pub fn tables(&self) -> &Arc<TableSet> {
        &self.tables
    }

    /// The current snapshot; a request loads it once and finishes on it.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Swaps in a new snapshot. Requests in flight finish on the one they started with; models
    /// only the old snapshot used are dropped (their queues drained) once those requests end.
    pub fn swap(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// What health checks report: ready to serve inference (false while shutting down, and
    /// during the drain delay before that).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// Serving inference, or refusing it with 503.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Health checks report not ready from now on, while inference is still served: load
    /// balancers take the replica out before it stops accepting.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    fn check_ready(&self) -> Result<(), CoreError> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(CoreError::Unavailable("server is shutting down".into()))
        }
    }

    /// Runs one request: resolve its target, route it, turn its inputs into the model's tensors,
    /// mirror them to shadows, run the model and render the answer with `render`. The request's
    /// record (endpoint metrics, traffic buckets, table row) is finished once, on every exit.
    pub async fn handle<R: Render>(&self, req: Request, render: R) -> Result<Handled<R::Output>, CoreError> {
        let snap = self.snapshot();
        let mut record = Record::start(&self.traffic, req.meta.logged_body.clone());
        let result = self.run(&snap, req, &render, &mut record).await;
        match &result {
            Ok(h) => record.finish(Ok(render.logged_body(&h.output))).await,
            Err(e) => record.finish(Err(e)).await,
        }
        result
    }

    async fn run<'s, R: Render>(
        &self,
        snap: &'s Snapshot,
        req: Request,
        render: &R,
        record: &mut Record<'s>,
    ) -> Result<Handled<R::Output>, CoreError> {
        let Request { target, inputs, outputs, id, meta } = req;
        let resolved = snap.resolve(&target);
        if let Ok(Resolved::Endpoint(ep, _)) = &resolved {
            record.endpoint = Some(ep);
            record.capture = ep.capture(&meta, meta.client_request_id.clone());
        }
        self.check_ready()?;
        let (model, served) = match resolved? {
            Resolved::Model(m) => (m, None),
            Resolved::Endpoint(ep, direct) => {
                let served = route(ep, &meta, direct)?.clone();
                record.served = Some(served.clone());
                (served.model.clone(), Some(served))
            }
        };
        let _in_flight = served.as_ref().map(|s| s.metrics.enter());
        let served_name = served.as_ref().map(|s| s.name.clone()).unwrap_or_else(|| Arc::from(model.name.as_str()));
        let selected = inputs::select_outputs(&model, outputs.as_deref())?;
        let tensors = Arc::new(match inputs {
            Inputs::Tensors(named) => order_inputs(&model, named)?,
            Inputs::Mapped(payload) => payload.into_tensors(&model)?,
            Inputs::Invalid(e) => return Err(e),
        });
        record.inputs = Some(tensors.clone());
        if let Some(ep) = record.endpoint {
            ep.mirror(&tensors, record.capture.as_ref());
        }
        let ran = run_model(&model, tensors).await?;
        record.phases = Some((ran.phases, ran.batch_rows));
        let all = Arc::new(ran.outputs);
        record.outputs = Some(all.clone());
        let answer = Answer {
            model: &model,
            served_model: &served_name,
            request_id: &meta.request_id,
            id: id.as_deref(),
            outputs: &all,
            selected: &selected,
            mlflow_predictions: record.endpoint.is_some_and(|ep| ep.config.mlflow_predictions),
        };
        let output = render.render(answer)?;
        Ok(Handled { output, model, served_model: served_name })
    }

    /// Writes late ground-truth labels for an endpoint's inference table.
    ///
    /// Only labels of ids the table logged are kept unless the table accepts unknown ids
    /// (`inference_table.labels_accept_unknown_ids`); a post none of whose ids is known is a
    /// 400. `budget` is charged the number of labels first (the caller's rate limit).
    pub async fn post_labels(
        &self,
        endpoint: &str,
        body: &[u8],
        budget: impl FnOnce(usize) -> Result<(), CoreError>,
    ) -> Result<LabelsResult, CoreError> {
        let snap = self.snapshot();
        let ep = snap.endpoint(Some(endpoint))?;
        let table = ep.table().ok_or_else(|| {
            CoreError::BadRequest(format!("endpoint '{endpoint}' has no inference table; enable inference_table on it"))
        })?;
        let items = crate::inference_log::labels::parse(body).map_err(|e| CoreError::BadRequest(e.to_string()))?;
        if let Err(e) = budget(items.len()) {
            crate::metrics::labels(endpoint, "rate_limited", items.len());
            return Err(e);
        }
        let (mut known, mut unknown): (Vec<_>, Vec<_>) = items.into_iter().partition(|i| table.knows(i.id()));
        if !unknown.is_empty() {
            // logged by another replica of the same table, perhaps: read what it committed
            table.learn_ids().await;
            let (learnt, still): (Vec<_>, Vec<_>) = unknown.into_iter().partition(|i| table.knows(i.id()));
            known.extend(learnt);
            unknown = still;
        }
        let unknown_ids: Vec<String> = unknown.iter().take(10).map(|i| i.id().to_string()).collect();
        let n_unknown = unknown.len();
        let keep = if table.options().labels_accept_unknown_ids {
            known.into_iter().chain(unknown).collect()
        } else {
            crate::metrics::labels(endpoint, "unknown_id", n_unknown);
            if known.is_empty() {
                return Err(CoreError::BadRequest(format!(
                    "none of the {n_unknown} labels refers to a request this endpoint logged (first ids: {unknown_ids:?}); \
                     label the request_id or client_request_id of an answer, or set \
                     inference_table.labels_accept_unknown_ids = true"
                )));
            }
            known
        };
        let accepted = keep.len();
        table.write_labels(keep).await.map_err(|e| CoreError::Unavailable(format!("labels were not written: {e}")))?;
        crate::metrics::labels(endpoint, "accepted", accepted);
        Ok(LabelsResult { accepted, unknown: n_unknown, unknown_ids })
    }
}

/// The answer to a labels post.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LabelsResult {
    /// Labels written.
    pub accepted: usize,
    /// Labels whose id the table did not log (refused, unless the table accepts unknown ids).
    pub unknown: usize,
    /// The first (at most 10) of those ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_ids: Vec<String>,
}

/// A resolved target.
enum Resolved<'s, 't> {
    Model(Arc<LoadedModel>),
    /// An endpoint, and the served model the request names (bypassing the split).
    Endpoint(&'s Endpoint, Option<&'t str>),
}

/// Picks the served model of an endpoint for a request: the one it names, else by pin, sticky
/// key or weight. Extra body fields are checked here, as only the endpoint knows its sticky
/// field.
fn route<'e>(ep: &'e Endpoint, meta: &RequestMeta, direct: Option<&str>) -> Result<&'e Arc<ServedModel>, CoreError> {
    let sticky_field = ep.sticky_field();
    let mut field_key = None;
    for (name, value) in &meta.fields {
        if Some(name.as_str()) != sticky_field {
            let reads = match sticky_field {
                Some(f) => format!("; endpoint '{}' reads only its sticky-key field '{f}'", ep.name()),
                None => String::new(),
            };
            return Err(CoreError::BadRequest(format!("unknown field '{name}' in the request body{reads}")));
        }
        match value {
            FieldValue::Text(t) => field_key = Some(t.as_str()),
            FieldValue::Null => {}
            FieldValue::Other => return Err(CoreError::BadRequest(format!("{name} must be a string or a number"))),
        }
    }
    if let Some(name) = direct {
        return ep.served(name);
    }
    let sticky = match ep.sticky_header() {
        Some(h) => meta.headers.get(h).and_then(|v| v.to_str().ok()),
        None => field_key,
    };
    ep.route(RouteHints { pin: meta.pin.as_deref(), sticky })
}

/// A model's answer with the time it spent in each phase.
#[derive(Debug)]
pub struct Ran {
    pub outputs: Vec<Tensor>,
    pub phases: PhaseTimes,
    pub batch_rows: usize,
}

/// Runs validated inputs on a model and records its statistics and metrics.
pub(crate) async fn run_model(model: &LoadedModel, inputs: Arc<Vec<Tensor>>) -> Result<Ran, CoreError> {
    let rows = inputs.first().map(Tensor::rows).unwrap_or(1);
    let start = Instant::now();
    let span = tracing::debug_span!("infer", model = %model.name, version = %model.version_str, rows);
    match model.runner.infer(inputs).instrument(span).await {
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
            Ok(Ran { outputs: out.outputs, phases: out.phases, batch_rows: out.batch_rows })
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
