//! KServe V2 REST health, metadata, Triton model config and statistics. A name that is not a
//! model but an endpoint answers for the endpoint (see [`v2::resolve`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{HttpState, json_ok};
use crate::api::{ApiError, v2};
use crate::core::CoreError;

pub async fn server_metadata() -> Response {
    json_ok(&v2::server_metadata())
}

pub async fn live() -> Response {
    json_ok(&serde_json::json!({ "live": true }))
}

pub async fn ready(State(state): State<HttpState>) -> Response {
    if state.gateway.is_ready() {
        json_ok(&serde_json::json!({ "ready": true }))
    } else {
        ApiError::Core(CoreError::Unavailable("server is not ready".into())).into_response()
    }
}

fn with_model(
    state: &HttpState,
    model: &str,
    version: Option<&str>,
    f: impl FnOnce(&v2::Resolved) -> Response,
) -> Response {
    match v2::resolve(&state.gateway.snapshot(), model, version) {
        Ok(r) => f(&r),
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub async fn model_metadata(State(state): State<HttpState>, Path(model): Path<String>) -> Response {
    with_model(&state, &model, None, |r| json_ok(&r.metadata()))
}

pub async fn model_metadata_v(
    State(state): State<HttpState>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    with_model(&state, &model, Some(&version), |r| json_ok(&r.metadata()))
}

fn ready_response(state: &HttpState) -> Response {
    if state.gateway.is_ready() {
        StatusCode::OK.into_response()
    } else {
        ApiError::Core(CoreError::Unavailable("server is not ready".into())).into_response()
    }
}

pub async fn model_ready(State(state): State<HttpState>, Path(model): Path<String>) -> Response {
    with_model(&state, &model, None, |_| ready_response(&state))
}

pub async fn model_ready_v(State(state): State<HttpState>, Path((model, version)): Path<(String, String)>) -> Response {
    with_model(&state, &model, Some(&version), |_| ready_response(&state))
}

pub async fn model_config(State(state): State<HttpState>, Path(model): Path<String>) -> Response {
    with_model(&state, &model, None, |r| json_ok(&r.config()))
}

pub async fn model_config_v(
    State(state): State<HttpState>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    with_model(&state, &model, Some(&version), |r| json_ok(&r.config()))
}

/// Statistics of every version of a model (Triton answers all versions when none is named).
pub async fn model_stats(State(state): State<HttpState>, Path(model): Path<String>) -> Response {
    with_model(&state, &model, None, |r| json_ok(&r.statistics()))
}

pub async fn model_stats_v(State(state): State<HttpState>, Path((model, version)): Path<(String, String)>) -> Response {
    with_model(&state, &model, Some(&version), |r| json_ok(&r.statistics()))
}

pub async fn all_stats(State(state): State<HttpState>) -> Response {
    let snap = state.gateway.snapshot();
    let stats = snap.registry.iter().map(|m| v2::model_statistics(m)).collect();
    json_ok(&v2::StatisticsResponse { model_stats: stats })
}
