//! Databricks' serving-endpoints REST API, `/api/2.0/serving-endpoints`, on the inference port
//! beside `/serving-endpoints/{name}/invocations`, so that `databricks-sdk`'s
//! `WorkspaceClient(host=<sluice>, token=...)` drives Sluice as it drives Databricks Model
//! Serving. A transport over the one control plane: every change goes through
//! [`Control::put_endpoint`] / [`Control::delete_endpoint`], so the admin API, the CLI and the
//! dashboard see the same config and the same history.
//!
//! Shapes are Databricks': requests are translated into a [`RawEndpoint`] (the fields that mean
//! nothing here, such as `workload_size` or `route_optimized`, are kept and given back), and
//! answers rendered as `ServingEndpointDetailed`. A create or a config update is checked at once
//! (a bad request: 400) and applied in the background: the answer says
//! `state.config_update = IN_PROGRESS` with a `pending_config`; a later GET says
//! `NOT_UPDATING` once the models are loaded and swapped in, or `UPDATE_FAILED` (the reason in
//! the pending entities' `state.deployment_state_message`) with the previous config still
//! serving. Errors on these routes are `{"error_code", "message"}` ([`databricks_errors`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, put};
use axum::{Extension, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Map, Value, json};

use super::ApiError;
use super::access::Caller;
use super::http::{json_ok, media_type, read_body};
use crate::config::history::HistoryEntry;
use crate::config::raw::{RawEndpoint, RawServedEntity, RawTag};
use crate::control::{Control, ControlError};

/// The API's path prefix.
pub const PREFIX: &str = "/api/2.0/serving-endpoints";

/// Keys of a create request's top level (besides `name`, `config`, `tags` and `description`)
/// and of `auto_capture_config` that are kept and given back but mean nothing here.
const KEPT_TOP_LEVEL: [&str; 7] = [
    "route_optimized",
    "ai_gateway",
    "rate_limits",
    "email_notifications",
    "budget_policy_id",
    "telemetry_config",
    "usage_policy_id",
];

#[derive(Clone)]
pub struct ServingState {
    pub control: Arc<Control>,
    pub metrics: PrometheusHandle,
    pub max_body_bytes: usize,
    /// Whether the inference port listens on loopback only: without any token configured,
    /// the API is served there and refused elsewhere.
    pub loopback: bool,
    updates: Arc<Updates>,
}

impl ServingState {
    pub fn new(control: Arc<Control>, metrics: PrometheusHandle, max_body_bytes: usize, loopback: bool) -> Self {
        ServingState { control, metrics, max_body_bytes, loopback, updates: Arc::default() }
    }
}

/// Config updates in progress or failed, per endpoint (on the replica that took them).
#[derive(Default)]
struct Updates(Mutex<BTreeMap<String, Update>>, std::sync::atomic::AtomicU64);

#[derive(Debug, Clone)]
struct Update {
    /// `pending_config` as answered.
    pending: Value,
    /// `None` while in progress; the reason once failed.
    failed: Option<String>,
    /// Created by this update (the endpoint did not exist before).
    creates: bool,
    /// Which update (a late finish of an older one changes nothing).
    generation: u64,
}

impl Updates {
    fn get(&self, name: &str) -> Option<Update> {
        self.0.lock().ok()?.get(name).cloned()
    }

    /// Starts an update unless one is in progress; answers its generation.
    fn begin(&self, name: &str, mut update: Update) -> Result<u64, ApiError> {
        let mut m = self
            .0
            .lock()
            .map_err(|_| ApiError::Core(crate::core::CoreError::Internal("update table poisoned".into())))?;
        if m.get(name).is_some_and(|u| u.failed.is_none()) {
            return Err(ApiError::Conflict(format!(
                "endpoint '{name}' has a config update in progress; wait for it (state.config_update) and retry"
            )));
        }
        update.generation = self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let generation = update.generation;
        m.insert(name.to_string(), update);
        Ok(generation)
    }

    fn finish(&self, name: &str, generation: u64, outcome: Result<(), String>) {
        let Ok(mut m) = self.0.lock() else { return };
        if m.get(name).is_none_or(|u| u.generation != generation) {
            return;
        }
        match outcome {
            Ok(()) => {
                m.remove(name);
            }
            Err(why) => {
                if let Some(u) = m.get_mut(name) {
                    u.failed = Some(why);
                }
            }
        }
    }

    fn in_progress(&self, name: &str) -> bool {
        self.get(name).is_some_and(|u| u.failed.is_none())
    }

    fn forget(&self, name: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(name);
        }
    }
}

pub fn router(state: ServingState) -> Router {
    // paths written out (PREFIX + ...), so that the auth table's test finds every route here
    Router::new()
        .route("/api/2.0/serving-endpoints", get(list).post(create))
        .route("/api/2.0/serving-endpoints/{name}", get(get_one).delete(delete_one))
        .route("/api/2.0/serving-endpoints/{name}/config", put(update_config))
        .route("/api/2.0/serving-endpoints/{name}/tags", patch(patch_tags).put(put_tags))
        .route("/api/2.0/serving-endpoints/{name}/served-models/{served}/logs", get(logs))
        .route("/api/2.0/serving-endpoints/{name}/served-models/{served}/build-logs", get(logs))
        .route("/api/2.0/serving-endpoints/{name}/metrics", get(metrics))
        .route("/api/2.0/serving-endpoints/{name}/openapi", get(openapi))
        .with_state(state)
}

// ------------------------------------------------------------------------------------------
// errors in Databricks' shape

/// Databricks' `error_code` for an error answer of `status`.
pub fn error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 | 415 | 422 => "INVALID_PARAMETER_VALUE",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "RESOURCE_DOES_NOT_EXIST",
        405 => "BAD_REQUEST",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 => "RESOURCE_CONFLICT",
        429 => "REQUEST_LIMIT_EXCEEDED",
        503 => "TEMPORARILY_UNAVAILABLE",
        500..=599 => "INTERNAL_ERROR",
        _ => "BAD_REQUEST",
    }
}

/// Largest error body rewritten (errors are a line or two).
const MAX_ERROR_BYTES: usize = 64 << 10;

/// The stack's layer for this API: an error answer under `/api/2.0/` (from a handler, or from
/// the auth and limit layers below) becomes `{"error_code": ..., "message": ...}`, as
/// Databricks answers and `databricks-sdk` parses. One that has an `error_code` already is
/// left as it is.
pub async fn databricks_errors(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let api = path.starts_with("/api/2.0/") || path == PREFIX;
    // the query routes of Databricks and of MLflow's scoring server: both shapes, Sluice's
    // `error` kept beside `error_code` and `message`
    let query = path == "/invocations" || (path.starts_with("/serving-endpoints/") && path.ends_with("/invocations"));
    let ours = api || query;
    let resp = next.run(req).await;
    let status = resp.status();
    if !ours || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BYTES).await.unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    if parsed.as_ref().is_some_and(|v| v.get("error_code").is_some()) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    let message =
        if message.trim().is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { message };
    // a query that cannot be served is a BAD_REQUEST to Databricks and MLflow alike
    let code = if query && status == StatusCode::BAD_REQUEST { "BAD_REQUEST" } else { error_code(status) };
    let mut body = json!({"error_code": code, "message": message});
    if query {
        body["error"] = json!(message);
    }
    let out = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(out))
}

/// An error answer with a Databricks code the status alone does not give.
fn coded(status: StatusCode, code: &str, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], json!({"error_code": code, "message": message}).to_string())
        .into_response()
}

fn control_error(e: ControlError) -> ApiError {
    e.into()
}

// ------------------------------------------------------------------------------------------
// requests

use super::access::principal_name as principal;

/// Without any token configured, the API answers only on a loopback inference port: the
/// inference port is often reachable from other machines, and these routes change the config.
fn allowed(s: &ServingState) -> Result<(), ApiError> {
    if s.loopback || s.control.access().any_token() {
        return Ok(());
    }
    Err(ApiError::Forbidden(
        "the serving-endpoints API changes the config: on an inference port that is not loopback it needs \
         server.admin_token or [[auth.tokens]] (a token with the manage scope)"
            .into(),
    ))
}

async fn body_json(s: &ServingState, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    match media_type(headers)?.as_deref() {
        None | Some("application/json") => {}
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {other} is not supported; send application/json"
            )));
        }
    }
    let bytes = read_body(body, s.max_body_bytes).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn object(v: Value, what: &str) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::bad_request(format!("{what} must be a JSON object, not {}", kind(&other)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON value without its `null`s (a config is TOML, which has none; Databricks clients
/// send them for unset fields).
fn without_nulls(v: Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            Some(Value::Object(m.into_iter().filter_map(|(k, v)| without_nulls(v).map(|v| (k, v))).collect()))
        }
        Value::Array(a) => Some(Value::Array(a.into_iter().filter_map(without_nulls).collect())),
        other => Some(other),
    }
}

/// A kept value must fit a TOML config (the config file, `sluice config export`): no integer
/// above `i64::MAX`.
fn check_kept(field: &str, v: &Value) -> Result<(), ApiError> {
    match v {
        Value::Number(n) if n.as_i64().is_none() && !n.is_f64() => {
            Err(ApiError::bad_request(format!("{field}: {n} is too large (at most {})", i64::MAX)))
        }
        Value::Array(a) => a.iter().try_for_each(|x| check_kept(field, x)),
        Value::Object(m) => m.values().try_for_each(|x| check_kept(field, x)),
        _ => Ok(()),
    }
}

/// A legacy `served_models` entry as a served entity (`model_name` -> `entity_name`,
/// `model_version` -> `entity_version`).
fn served_model_as_entity(v: Value) -> Result<Value, ApiError> {
    let mut m = object(v, "a served_models entry")?;
    for (from, to) in [("model_name", "entity_name"), ("model_version", "entity_version")] {
        if let Some(x) = m.remove(from) {
            m.insert(to.into(), x);
        }
    }
    Ok(Value::Object(m))
}

/// The endpoint `name` as the core config fields of a Databricks request (`config` of a create,
/// the body of an update) say, on top of `base` (the endpoint's settings that these fields do
/// not cover: shadows, monitor, rollout... are kept).
fn endpoint_from(name: &str, core: Map<String, Value>, base: Option<&RawEndpoint>) -> Result<RawEndpoint, ApiError> {
    let mut core = core;
    // `config.name` is sent by databricks-sdk; it must name this endpoint when given
    if let Some(n) = core.remove("name")
        && n.as_str() != Some(name)
    {
        return Err(ApiError::bad_request(format!("config.name is {n} but the endpoint is '{name}'")));
    }
    let mut entities = Vec::new();
    if let Some(list) = core.remove("served_entities") {
        let Value::Array(list) = list else {
            return Err(ApiError::bad_request("served_entities must be an array"));
        };
        entities.extend(list);
    }
    if let Some(list) = core.remove("served_models") {
        let Value::Array(list) = list else {
            return Err(ApiError::bad_request("served_models must be an array"));
        };
        for m in list {
            entities.push(served_model_as_entity(m)?);
        }
    }
    let mut out = match base {
        Some(b) => object(serde_json::to_value(b).unwrap_or_default(), "the endpoint")?,
        None => Map::new(),
    };
    out.insert("name".into(), Value::String(name.to_string()));
    if !entities.is_empty() || base.is_none() {
        if entities.is_empty() {
            return Err(ApiError::bad_request("config.served_entities: list at least one served entity"));
        }
        out.insert("served_entities".into(), Value::Array(entities));
        // new entities: a traffic config of the old ones would not fit
        if !core.contains_key("traffic_config") {
            out.remove("traffic_config");
        }
    }
    if let Some(t) = core.remove("traffic_config") {
        out.insert("traffic_config".into(), t);
    }
    if let Some(capture) = core.remove("auto_capture_config") {
        let capture = object(capture, "auto_capture_config")?;
        capture.values().try_for_each(|v| check_kept("auto_capture_config", v))?;
        let mut table = out.remove("inference_table").and_then(|t| t.as_object().cloned()).unwrap_or_default();
        if let Some(e) = capture.get("enabled") {
            table.insert("enabled".into(), e.clone());
        }
        // Databricks writes `<prefix>_payload`; so does this table
        if let Some(prefix) = capture.get("table_name_prefix").and_then(Value::as_str) {
            table.insert("table".into(), Value::String(format!("{prefix}_payload")));
        }
        out.insert("inference_table".into(), Value::Object(table));
        let mut kept = out.remove("databricks").and_then(|d| d.as_object().cloned()).unwrap_or_default();
        kept.insert("auto_capture_config".into(), Value::Object(capture));
        out.insert("databricks".into(), Value::Object(kept));
    }
    // anything else is one of Sluice's own endpoint settings (shadow, monitor, ...)
    for (k, v) in core {
        out.insert(k, v);
    }
    let value = without_nulls(Value::Object(out)).unwrap_or_default();
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("invalid endpoint config: {e}")))
}

// ------------------------------------------------------------------------------------------
// answers

fn ms_of(rfc3339: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as u64)
}

fn version_str(e: &RawServedEntity) -> String {
    match &e.entity_version {
        crate::config::raw::RawVersion::Num(n) => n.to_string(),
        crate::config::raw::RawVersion::Str(s) => s.clone(),
    }
}

fn entity_name(e: &RawServedEntity) -> String {
    e.served_name()
}

/// `served_entities` and `served_models` (the legacy view) of an endpoint config, each with a
/// deployment state.
fn entities(raw: &RawEndpoint, deployment: &str, message: &str) -> (Vec<Value>, Vec<Value>) {
    let mut served_entities = Vec::new();
    let mut served_models = Vec::new();
    for e in &raw.served_entities {
        let state = json!({"deployment": deployment, "deployment_state_message": message});
        let mut v = serde_json::to_value(e).unwrap_or_default();
        v["name"] = json!(entity_name(e));
        v["entity_version"] = json!(version_str(e));
        v["state"] = state.clone();
        served_entities.push(v);
        let mut m = json!({
            "name": entity_name(e),
            "model_name": e.entity_name,
            "model_version": version_str(e),
            "scale_to_zero_enabled": e.scale_to_zero_enabled.unwrap_or(false),
            "state": state,
        });
        for (k, x) in [("workload_size", &e.workload_size), ("workload_type", &e.workload_type)] {
            if let Some(x) = x {
                m[k] = json!(x);
            }
        }
        served_models.push(m);
    }
    (served_entities, served_models)
}

/// `config` (or `pending_config`) of an endpoint.
fn core_config(raw: &RawEndpoint, version: u64, deployment: &str, message: &str) -> Value {
    let (served_entities, served_models) = entities(raw, deployment, message);
    let mut c = json!({
        "config_version": version,
        "served_entities": served_entities,
        "served_models": served_models,
    });
    if let Some(t) = &raw.traffic_config {
        c["traffic_config"] = serde_json::to_value(t).unwrap_or_default();
    }
    let capture = raw.databricks.as_ref().and_then(|d| d.get("auto_capture_config")).cloned();
    if raw.inference_table.is_some() || capture.is_some() {
        let mut a = capture.unwrap_or_else(|| json!({}));
        a["enabled"] = json!(raw.inference_table.as_ref().and_then(|t| t.enabled).unwrap_or(false));
        let table = raw.inference_table.as_ref().and_then(|t| t.table.clone()).unwrap_or_else(|| raw.name.clone());
        a["state"] = json!({"payload_table": {"name": table, "status": "ACTIVE"}});
        c["auto_capture_config"] = a;
    }
    c
}

/// `ServingEndpointDetailed` of endpoint `name`: from the config in force and its history,
/// and the update this replica is running or failed.
async fn detailed(s: &ServingState, name: &str) -> Result<Value, ApiError> {
    // the update first: a finished one is published in the config before it is forgotten,
    // so the endpoint is found in one or the other
    let update = s.updates.get(name);
    let config = s.control.config().await;
    let live = config.raw.endpoints.iter().find(|e| e.name == name).cloned();
    if live.is_none() && !update.as_ref().is_some_and(|u| u.creates) {
        return Err(ApiError::not_found(format!("serving endpoint '{name}' does not exist")));
    }
    let history: Vec<HistoryEntry> = s.control.history(name).await.unwrap_or_default();
    let mut out = json!({"name": name, "id": name, "permission_level": "CAN_MANAGE"});
    let config_update = match &update {
        None => "NOT_UPDATING",
        Some(Update { failed: None, .. }) => "IN_PROGRESS",
        Some(Update { failed: Some(_), .. }) => "UPDATE_FAILED",
    };
    let ready = if live.is_some() { "READY" } else { "NOT_READY" };
    out["state"] = json!({"ready": ready, "config_update": config_update});
    if let Some(raw) = &live {
        let version = history.last().map_or(0, |h| h.version);
        out["config"] = core_config(raw, version, "DEPLOYMENT_READY", "");
        if !raw.tags.is_empty() {
            out["tags"] = serde_json::to_value(&raw.tags).unwrap_or_default();
        }
        if let Some(d) = &raw.description {
            out["description"] = json!(d);
        }
        if let Some(kept) = &raw.databricks {
            for k in KEPT_TOP_LEVEL {
                if let Some(v) = kept.get(k) {
                    out[k] = v.clone();
                }
            }
        }
        // created by the entry after the last deletion; updated by the last one
        let since = history.iter().rposition(|h| h.config.is_none()).map_or(0, |i| i + 1);
        if let Some(first) = history.get(since) {
            out["creation_timestamp"] = json!(ms_of(&first.time));
            if let Some(by) = &first.by {
                out["creator"] = json!(by);
            }
        }
        if let Some(last) = history.last() {
            out["last_updated_timestamp"] = json!(ms_of(&last.time));
        }
    }
    if let Some(u) = update {
        out["pending_config"] = u.pending;
        if let Some(why) = u.failed {
            // the reason, where Databricks gives it: the pending entities' deployment state
            if let Some(list) = out["pending_config"]["served_entities"].as_array_mut() {
                for e in list.iter_mut() {
                    e["state"] = json!({"deployment": "DEPLOYMENT_FAILED", "deployment_state_message": why});
                }
            }
            if let Some(list) = out["pending_config"]["served_models"].as_array_mut() {
                for e in list.iter_mut() {
                    e["state"] = json!({"deployment": "DEPLOYMENT_FAILED", "deployment_state_message": why});
                }
            }
        }
    }
    Ok(out)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Checks `endpoint` at once, then applies it in the background; answers the endpoint with
/// `IN_PROGRESS` and its `pending_config`.
/// How a request makes the endpoint's new config of the endpoint as it is when the change is
/// applied (`None`: it does not exist), so that edits made meanwhile are not undone.
type Apply = Box<dyn FnOnce(Option<&RawEndpoint>) -> Result<RawEndpoint, ControlError> + Send>;

/// Checks `endpoint` (what the request makes of the endpoint now) at once, then applies the
/// change in the background (`apply`, on the endpoint as it is then); answers the endpoint with
/// `IN_PROGRESS` and its `pending_config`.
async fn start_update(
    s: &ServingState,
    endpoint: RawEndpoint,
    apply: Apply,
    by: Option<String>,
    creates: bool,
) -> Result<Response, ApiError> {
    let name = endpoint.name.clone();
    s.control.check_endpoint(&endpoint).await.map_err(control_error)?;
    let next = s.control.history(&name).await.ok().and_then(|h| h.last().map(|e| e.version)).unwrap_or(0) + 1;
    let mut pending = core_config(&endpoint, next, "DEPLOYMENT_CREATING", "loading the served models");
    pending["start_time"] = json!(now_ms());
    let generation = s.updates.begin(&name, Update { pending, failed: None, creates, generation: 0 })?;
    let (control, updates, n) = (s.control.clone(), s.updates.clone(), name.clone());
    s.control.tasks().spawn(async move {
        let outcome = control.update_endpoint(&n, by, apply).await.map(|_| ()).map_err(|e| e.to_string());
        if let Err(why) = &outcome {
            tracing::warn!(endpoint = %n, "serving-endpoints config update failed: {why}");
        }
        updates.finish(&n, generation, outcome);
    });
    Ok(json_ok(&detailed(s, &name).await?))
}

fn invalid(e: ApiError) -> ControlError {
    ControlError::Invalid(e.to_string())
}

async fn list(State(s): State<ServingState>) -> Result<Response, ApiError> {
    allowed(&s)?;
    // updates first (see `detailed`)
    let mut names: Vec<String> = match s.updates.0.lock() {
        Ok(m) => m.iter().filter(|(_, u)| u.creates).map(|(n, _)| n.clone()).collect(),
        Err(_) => Vec::new(),
    };
    let config = s.control.config().await;
    names.extend(config.raw.endpoints.iter().map(|e| e.name.clone()));
    names.sort();
    names.dedup();
    let mut endpoints = Vec::new();
    for n in names {
        let Ok(mut d) = detailed(&s, &n).await else { continue };
        // the list shows summaries: served entities and models without their state or traffic
        if let Some(c) = d.get_mut("config").and_then(Value::as_object_mut) {
            c.remove("traffic_config");
            c.remove("auto_capture_config");
        }
        if let Some(o) = d.as_object_mut() {
            o.remove("pending_config");
        }
        endpoints.push(d);
    }
    Ok(json_ok(&json!({ "endpoints": endpoints })))
}

async fn create(
    State(s): State<ServingState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    allowed(&s)?;
    let endpoint = create_request(body_json(&s, &headers, body).await?)?;
    let name = endpoint.name.clone();
    // an endpoint whose create failed may be created again (or updated)
    if s.control.config().await.raw.endpoints.iter().any(|e| e.name == name)
        || s.updates.get(&name).is_some_and(|u| u.creates && u.failed.is_none())
    {
        return Ok(coded(
            StatusCode::CONFLICT,
            "RESOURCE_ALREADY_EXISTS",
            format!("serving endpoint '{name}' already exists"),
        ));
    }
    let made = endpoint.clone();
    let apply: Apply = Box::new(move |current| match current {
        Some(_) => Err(ControlError::Conflict(format!("serving endpoint '{}' already exists", made.name))),
        None => Ok(made),
    });
    start_update(&s, endpoint, apply, principal(caller), true).await
}

/// The endpoint a create request's body (`{name, config, tags, ...}`) asks for.
pub(crate) fn create_request(body: Value) -> Result<RawEndpoint, ApiError> {
    let mut req = object(body, "the request body")?;
    let Some(name) = req.remove("name").and_then(|n| n.as_str().map(str::to_string)) else {
        return Err(ApiError::bad_request("name: give the endpoint's name (a string)"));
    };
    let core = match req.remove("config") {
        Some(c) => object(c, "config")?,
        None => return Err(ApiError::bad_request("config: give served_entities (and traffic_config)")),
    };
    let mut endpoint = endpoint_from(&name, core, None)?;
    apply_top_level(&mut endpoint, req)?;
    Ok(endpoint)
}

/// The endpoint a config update's body (`{served_entities, traffic_config, ...}`) makes of
/// `base`.
pub(crate) fn update_request(base: &RawEndpoint, body: Value) -> Result<RawEndpoint, ApiError> {
    endpoint_from(&base.name.clone(), object(body, "the request body")?, Some(base))
}

/// `tags`, `description` and the kept fields of a create request's top level.
fn apply_top_level(endpoint: &mut RawEndpoint, mut req: Map<String, Value>) -> Result<(), ApiError> {
    if let Some(tags) = req.remove("tags").and_then(without_nulls) {
        endpoint.tags = serde_json::from_value(tags)
            .map_err(|e| ApiError::bad_request(format!("tags: {e} (a list of {{key, value}})")))?;
    }
    if let Some(d) = req.remove("description").and_then(without_nulls) {
        endpoint.description =
            Some(d.as_str().map(str::to_string).ok_or_else(|| ApiError::bad_request("description must be a string"))?);
    }
    let mut kept = endpoint.databricks.take().unwrap_or_default();
    for k in KEPT_TOP_LEVEL {
        if let Some(v) = req.remove(k).and_then(without_nulls) {
            check_kept(k, &v)?;
            kept.insert(k.to_string(), v);
        }
    }
    if let Some(k) = req.keys().next() {
        return Err(ApiError::bad_request(format!("unknown field '{k}' in the request")));
    }
    endpoint.databricks = (!kept.is_empty()).then_some(kept);
    Ok(())
}

async fn live_endpoint(s: &ServingState, name: &str) -> Result<RawEndpoint, ApiError> {
    s.control
        .config()
        .await
        .raw
        .endpoints
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| ApiError::not_found(format!("serving endpoint '{name}' does not exist")))
}

async fn get_one(State(s): State<ServingState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    allowed(&s)?;
    Ok(json_ok(&detailed(&s, &name).await?))
}

async fn update_config(
    State(s): State<ServingState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    allowed(&s)?;
    let body = body_json(&s, &headers, body).await?;
    let (endpoint, creates) = match live_endpoint(&s, &name).await {
        Ok(base) => (update_request(&base, body.clone())?, false),
        // an endpoint whose create failed: this config creates it
        Err(_) if s.updates.get(&name).is_some_and(|u| u.creates && u.failed.is_some()) => {
            (endpoint_from(&name, object(body.clone(), "the request body")?, None)?, true)
        }
        Err(e) => return Err(e),
    };
    let n = name.clone();
    let apply: Apply = Box::new(move |current| match current {
        Some(base) => update_request(base, body).map_err(invalid),
        None if creates => endpoint_from(&n, object(body, "the request body").map_err(invalid)?, None).map_err(invalid),
        None => Err(ControlError::NotFound(format!("serving endpoint '{n}' does not exist"))),
    });
    start_update(&s, endpoint, apply, principal(caller), creates).await
}

async fn delete_one(
    State(s): State<ServingState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
) -> Result<Response, ApiError> {
    allowed(&s)?;
    if s.updates.in_progress(&name) {
        return Err(ApiError::Conflict(format!(
            "endpoint '{name}' has a config update in progress; delete it once the update is done"
        )));
    }
    let failed_create = s.updates.get(&name).is_some_and(|u| u.creates && u.failed.is_some());
    match s.control.delete_endpoint(&name, principal(caller)).await {
        Ok(_) => {}
        Err(ControlError::NotFound(_)) if failed_create => {}
        Err(e) => return Err(control_error(e)),
    }
    s.updates.forget(&name);
    Ok(json_ok(&json!({})))
}

/// `PATCH .../tags`: `{add_tags: [{key, value}], delete_tags: [key]}`; answers every tag.
async fn patch_tags(
    State(s): State<ServingState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    allowed(&s)?;
    let mut req = object(body_json(&s, &headers, body).await?, "the request body")?;
    let add: Vec<RawTag> = match req.remove("add_tags").and_then(without_nulls) {
        Some(v) => serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("add_tags: {e}")))?,
        None => Vec::new(),
    };
    let delete: Vec<String> = match req.remove("delete_tags").and_then(without_nulls) {
        Some(v) => serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("delete_tags: {e}")))?,
        None => Vec::new(),
    };
    if let Some(k) = req.keys().next() {
        return Err(ApiError::bad_request(format!("unknown field '{k}'; give add_tags and delete_tags")));
    }
    set_tags(&s, &name, principal(caller), move |tags| {
        tags.retain(|t| !delete.contains(&t.key));
        for t in add {
            match tags.iter_mut().find(|x| x.key == t.key) {
                Some(x) => *x = t,
                None => tags.push(t),
            }
        }
    })
    .await
}

/// `PUT .../tags`: `{tags: [{key, value}]}` replaces them all.
async fn put_tags(
    State(s): State<ServingState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    allowed(&s)?;
    let mut req = object(body_json(&s, &headers, body).await?, "the request body")?;
    let tags = req.remove("tags").and_then(without_nulls).unwrap_or_else(|| json!([]));
    if let Some(k) = req.keys().next() {
        return Err(ApiError::bad_request(format!("unknown field '{k}'; give tags")));
    }
    let tags: Vec<RawTag> = serde_json::from_value(tags).map_err(|e| ApiError::bad_request(format!("tags: {e}")))?;
    set_tags(&s, &name, principal(caller), move |t| *t = tags).await
}

/// Changes the tags of endpoint `name` with `f`, on the endpoint as it is when the change is
/// made; answers every tag.
async fn set_tags(
    s: &ServingState,
    name: &str,
    by: Option<String>,
    f: impl FnOnce(&mut Vec<RawTag>) + Send,
) -> Result<Response, ApiError> {
    if s.updates.in_progress(name) {
        return Err(ApiError::Conflict(format!("endpoint '{name}' has a config update in progress; retry after it")));
    }
    let missing = || ControlError::NotFound(format!("serving endpoint '{name}' does not exist"));
    s.control
        .update_endpoint(name, by, |current| {
            let mut e = current.cloned().ok_or_else(missing)?;
            f(&mut e.tags);
            Ok(e)
        })
        .await
        .map_err(control_error)?;
    let tags = live_endpoint(s, name).await?.tags;
    Ok(json_ok(&json!({ "tags": tags })))
}

/// What this process knows of a served model: where it came from and how it serves, its
/// inputs and outputs, and its counts (Databricks answers the container's log here).
async fn logs(
    State(s): State<ServingState>,
    Path((name, served)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    allowed(&s)?;
    let raw = live_endpoint(&s, &name).await?;
    let Some(entity) = raw.served_entities.iter().find(|e| entity_name(e) == served) else {
        return Err(ApiError::not_found(format!("endpoint '{name}' has no served model '{served}'")));
    };
    let snapshot = s.control.gateway().snapshot();
    let version = version_str(entity);
    let mut text =
        format!("served model '{served}' of endpoint '{name}': model {} version {version}\n", entity.entity_name);
    match snapshot.registry.get(&entity.entity_name, Some(&version)) {
        Ok(m) => {
            text.push_str(&format!(
                "loaded; provider {}; problem type {:?}\n",
                entity.provider.as_deref().unwrap_or("cpu"),
                m.manifest.problem_type
            ));
            for (what, specs) in [("input", &m.runner.schema().inputs), ("output", &m.runner.schema().outputs)] {
                for t in specs.iter() {
                    text.push_str(&format!("{what} {} {} {:?}\n", t.name, t.dtype.v2_name(), t.shape));
                }
            }
            if let Some(f) = &m.features {
                text.push_str(&format!("features: {}\n", f.join(", ")));
            }
        }
        Err(e) => text.push_str(&format!("not loaded: {e}\n")),
    }
    let rendered = crate::metrics::render(&s.metrics, &s.control.gateway().snapshot().registry);
    for line in rendered.lines().filter(|l| !l.starts_with('#')) {
        if has_label(line, "model", &entity.entity_name) && has_label(line, "version", &version) {
            text.push_str(line);
            text.push('\n');
        }
    }
    Ok(json_ok(&json!({ "logs": text })))
}

/// The endpoint's series of `/metrics`, in Prometheus' text format: the samples labelled with
/// this endpoint, or with one of its served models, with their `# HELP` and `# TYPE`.
async fn metrics(State(s): State<ServingState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    allowed(&s)?;
    let raw = live_endpoint(&s, &name).await?;
    let rendered = crate::metrics::render(&s.metrics, &s.control.gateway().snapshot().registry);
    let models: Vec<(String, String)> =
        raw.served_entities.iter().map(|e| (e.entity_name.clone(), version_str(e))).collect();
    let mine = |line: &str| {
        has_label(line, "endpoint", &name)
            || models.iter().any(|(m, v)| has_label(line, "model", m) && has_label(line, "version", v))
    };
    let mut out = String::new();
    let mut header: Vec<&str> = Vec::new();
    for line in rendered.lines() {
        if line.starts_with("# HELP") || line.starts_with("# TYPE") {
            if header.len() == 2 || header.first().is_some_and(|h| !same_metric(h, line)) {
                header.clear();
            }
            header.push(line);
        } else if mine(line) {
            for h in header.drain(..) {
                out.push_str(h);
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response())
}

/// Whether a Prometheus sample line has label `k` equal to `v` (not a label whose name ends
/// the same: `model_version` is not `version`).
fn has_label(line: &str, k: &str, v: &str) -> bool {
    let l = format!("{k}=\"{v}\"");
    line.contains(&format!("{{{l}")) || line.contains(&format!(",{l}"))
}

fn same_metric(a: &str, b: &str) -> bool {
    a.split_whitespace().nth(2) == b.split_whitespace().nth(2)
}

/// An OpenAPI 3 document of the endpoint's query route: the request formats the served models
/// take (their features as columns, or their input tensors) and the answer.
async fn openapi(State(s): State<ServingState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    allowed(&s)?;
    let raw = live_endpoint(&s, &name).await?;
    let snapshot = s.control.gateway().snapshot();
    let model = raw
        .served_entities
        .iter()
        .find_map(|e| snapshot.registry.get(&e.entity_name, Some(&version_str(e))).ok().cloned());
    let mlflow = raw.response_format.as_deref() == Some("mlflow");
    Ok(json_ok(&crate::api::openapi::document(&name, model.as_deref(), mlflow)))
}
