//! Admin API (port 8002): live endpoint config editing, history and rollback, reload.
//!
//! Every `/admin` route needs `Authorization: Bearer <token>` when a token is configured (it must
//! be when the admin port is not bound to loopback). Bodies use the Databricks endpoint shape.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{json_ok, read_body};
use crate::api::ApiError;
use crate::config::raw::{RawEndpoint, RawTrafficConfig, Secret};
use crate::control::{Control, ControlError, HistoryEntry};
use crate::core::CoreError;

/// State of the admin routes.
#[derive(Clone)]
pub struct AdminState {
    pub control: Arc<Control>,
    pub rollouts: Arc<crate::rollout::Rollouts>,
    pub token: Option<Secret>,
    pub max_body_bytes: usize,
}

/// `/admin/...` routes with bearer-token checking.
pub fn routes(state: AdminState) -> Router {
    Router::new()
        .route("/admin/endpoints", get(list))
        .route("/admin/endpoints/{name}", get(get_one).put(put_one).delete(delete_one))
        .route("/admin/endpoints/{name}/traffic", patch(set_traffic).put(set_traffic))
        .route("/admin/endpoints/{name}/history", get(history))
        .route("/admin/endpoints/{name}/rollback", post(rollback))
        .route("/admin/reload", post(reload))
        .route("/monitors", get(monitors_list))
        .route("/monitors/{endpoint}", get(monitor_status))
        .route("/monitors/{endpoint}/refresh", post(monitor_refresh))
        .merge(super::experiments::routes())
        .merge(super::dashboard::routes())
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(Secret(token)) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            None => {
                return ApiError::Unauthorized("the admin API needs Authorization: Bearer <token>".into())
                    .into_response();
            }
            Some(g) if !constant_time_eq(g.as_bytes(), token.as_bytes()) => {
                return ApiError::Unauthorized("the admin token is wrong".into()).into_response();
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::Invalid(m) => ApiError::Core(CoreError::BadRequest(m)),
            ControlError::Load(b) => ApiError::Core(CoreError::BadRequest(format!("the change was not applied: {b}"))),
            ControlError::NotFound(m) => ApiError::Core(CoreError::NotFound(m)),
            ControlError::Conflict(m) => ApiError::Conflict(m),
            ControlError::Internal(m) => ApiError::Core(CoreError::Internal(m)),
        }
    }
}

/// A served model as the admin API shows it.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct ServedModelView {
    pub name: String,
    pub model: String,
    pub version: String,
    /// Percent of traffic routed to it (0 for shadows).
    pub traffic_percentage: u32,
    /// Percent of traffic mirrored to it, when it is a shadow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u32>,
}

/// An endpoint as the admin API shows it.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct EndpointView {
    pub name: String,
    pub config_version: u64,
    pub served_models: Vec<ServedModelView>,
    /// The endpoint config as written (what PUT takes back).
    pub config: RawEndpoint,
}

async fn views(control: &Control) -> Vec<EndpointView> {
    let config = control.config().await;
    let versions = control.versions().await;
    config
        .endpoints
        .iter()
        .map(|e| EndpointView {
            name: e.name.clone(),
            config_version: versions.get(&e.name).copied().unwrap_or(0),
            served_models: e
                .served_entities
                .iter()
                .map(|s| ServedModelView {
                    name: s.name.clone(),
                    model: s.model.clone(),
                    version: s.version.to_string(),
                    traffic_percentage: e
                        .routes
                        .iter()
                        .find(|r| r.served_model_name == s.name)
                        .map(|r| r.traffic_percentage)
                        .unwrap_or(0),
                    mirror_percent: e.shadows.iter().find(|x| x.served_model_name == s.name).map(|x| x.mirror_percent),
                })
                .collect(),
            config: e.raw.clone(),
        })
        .collect()
}

async fn view(control: &Control, name: &str) -> Result<EndpointView, ApiError> {
    views(control)
        .await
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| ApiError::not_found(format!("unknown endpoint '{name}'")))
}

async fn list(State(s): State<AdminState>) -> Response {
    json_ok(&serde_json::json!({ "endpoints": views(&s.control).await }))
}

async fn get_one(State(s): State<AdminState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    Ok(json_ok(&view(&s.control, &name).await?))
}

pub(super) async fn json_body<T: serde::de::DeserializeOwned>(
    s: &AdminState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    match super::media_type(headers)?.as_deref() {
        None | Some("application/json") => {}
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {other} is not supported; send application/json"
            )));
        }
    }
    let bytes = read_body(body, s.max_body_bytes, headers).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

async fn put_one(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut value: serde_json::Value = json_body(&s, &headers, body).await?;
    if let Some(obj) = value.as_object_mut() {
        match obj.get("name").and_then(|n| n.as_str()) {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!("body names endpoint '{n}' but the path names '{name}'")));
            }
            _ => {
                obj.insert("name".into(), serde_json::Value::String(name.clone()));
            }
        }
    }
    let endpoint: RawEndpoint =
        serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("invalid endpoint config: {e}")))?;
    s.control.put_endpoint(endpoint).await?;
    Ok(json_ok(&view(&s.control, &name).await?))
}

async fn delete_one(State(s): State<AdminState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    s.control.delete_endpoint(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_traffic(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let value: serde_json::Value = json_body(&s, &headers, body).await?;
    // Accept {"routes": [...]} or {"traffic_config": {"routes": [...]}}.
    let value = value.get("traffic_config").cloned().unwrap_or(value);
    let traffic: RawTrafficConfig =
        serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("invalid traffic config: {e}")))?;
    s.control.set_traffic(&name, traffic).await?;
    Ok(json_ok(&view(&s.control, &name).await?))
}

#[derive(Serialize)]
struct HistoryView {
    endpoint: String,
    history: Vec<HistoryEntry>,
}

async fn history(State(s): State<AdminState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let history = s.control.history(&name).await?;
    Ok(json_ok(&HistoryView { endpoint: name, history }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: u64,
}

async fn rollback(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let b: RollbackBody = json_body(&s, &headers, body).await?;
    s.control.rollback(&name, b.version).await?;
    Ok(json_ok(&view(&s.control, &name).await?))
}

async fn reload(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let changed = s.control.reload_from_file().await?;
    Ok(json_ok(&serde_json::json!({ "reloaded": true, "changed_endpoints": changed })))
}

fn monitors_of(state: &AdminState) -> &Arc<crate::monitor::service::Monitors> {
    state.control.monitors()
}

impl From<crate::monitor::service::MonitorCallError> for ApiError {
    fn from(e: crate::monitor::service::MonitorCallError) -> ApiError {
        use crate::monitor::service::MonitorCallError as E;
        match e {
            E::NotFound(m) => ApiError::Core(CoreError::NotFound(m)),
            E::Failed(m) => ApiError::Core(CoreError::Internal(format!("monitor refresh failed: {m}"))),
        }
    }
}

/// `GET /monitors`: the monitored endpoints.
async fn monitors_list(State(state): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    let m = monitors_of(&state);
    Ok(Json(serde_json::json!({ "monitors": m.names() })))
}

/// `GET /monitors/{endpoint}`: status, last refresh, latest metrics and alerts.
async fn monitor_status(
    State(state): State<AdminState>,
    Path(endpoint): Path<String>,
) -> Result<Json<crate::monitor::service::Status>, ApiError> {
    Ok(Json(monitors_of(&state).status(&endpoint)?))
}

/// `POST /monitors/{endpoint}/refresh`: refresh now and answer with what it did.
async fn monitor_refresh(
    State(state): State<AdminState>,
    Path(endpoint): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = monitors_of(&state);
    let result = m.refresh(&endpoint, std::time::Duration::from_secs(600)).await?;
    let status = m.status(&endpoint)?;
    Ok(Json(serde_json::json!({ "refresh": result, "status": status })))
}
