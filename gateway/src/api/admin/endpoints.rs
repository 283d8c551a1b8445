//! Live endpoint config: list, read, replace, delete, change traffic, history and rollback, and
//! reloading the config file (`/admin/...`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};

use super::{AdminState, json_body};
use crate::api::ApiError;
use crate::api::access::Caller;
use crate::api::http::json_ok;
use crate::config::history::HistoryEntry;
use crate::config::raw::{RawEndpoint, RawTrafficConfig};
use crate::control::Control;

pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/admin/replica", get(replica))
        .route("/admin/endpoints", get(list))
        .route("/admin/endpoints/{name}", get(get_one).put(put_one).delete(delete_one))
        .route("/admin/endpoints/{name}/traffic", patch(set_traffic).put(set_traffic))
        .route("/admin/endpoints/{name}/history", get(history))
        .route("/admin/endpoints/{name}/rollback", post(rollback))
        .route("/admin/reload", post(reload))
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

/// This replica in its fleet: its id, whether it leads, the config store and the version in force.
async fn replica(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let l = s.control.leadership();
    Ok(json_ok(&serde_json::json!({
        "id": l.id,
        "leader": l.is_leader(),
        "leader_id": l.leader_id(),
        "config_store": s.control.store().map(|st| st.location().to_string()),
        "store_version": s.control.store_version().await,
    })))
}

async fn put_one(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
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
    s.control.put_endpoint(endpoint, principal(caller)).await?;
    Ok(json_ok(&view(&s.control, &name).await?))
}

async fn delete_one(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
) -> Result<Response, ApiError> {
    s.control.delete_endpoint(&name, principal(caller)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_traffic(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let value: serde_json::Value = json_body(&s, &headers, body).await?;
    // Accept {"routes": [...]} or {"traffic_config": {"routes": [...]}}.
    let value = value.get("traffic_config").cloned().unwrap_or(value);
    let traffic: RawTrafficConfig =
        serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("invalid traffic config: {e}")))?;
    s.control.set_traffic(&name, traffic, principal(caller)).await?;
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
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let b: RollbackBody = json_body(&s, &headers, body).await?;
    s.control.rollback(&name, b.version, principal(caller)).await?;
    Ok(json_ok(&view(&s.control, &name).await?))
}

async fn reload(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let changed = s.control.reload_from_file().await?;
    Ok(json_ok(&serde_json::json!({ "reloaded": true, "changed_endpoints": changed })))
}

/// The name of the principal that called, for the config history.
use crate::api::access::principal_name as principal;
