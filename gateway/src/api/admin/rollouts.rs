//! Progressive delivery (`/rollouts`): list, read, start, pause, resume and abort rollouts.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{AdminState, json_body};
use crate::api::ApiError;
use crate::api::http::json_ok;
use crate::rollout::spec::RawRollout;

pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/rollouts", get(list))
        .route("/rollouts/{endpoint}", get(get_one).post(start))
        .route("/rollouts/{endpoint}/pause", post(pause))
        .route("/rollouts/{endpoint}/resume", post(resume))
        .route("/rollouts/{endpoint}/abort", post(abort))
}

/// `GET /rollouts`: every rollout this gateway knows (running and finished).
async fn list(State(s): State<AdminState>) -> Response {
    json_ok(&serde_json::json!({ "rollouts": s.rollouts.list().await }))
}

/// `GET /rollouts/{endpoint}`.
async fn get_one(State(s): State<AdminState>, Path(endpoint): Path<String>) -> Result<Response, ApiError> {
    Ok(json_ok(&s.rollouts.get(&endpoint).await?))
}

/// `POST /rollouts/{endpoint}` with a rollout (`candidate`, `steps`, `interval`, ...): starts it.
async fn start(
    State(s): State<AdminState>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let value: serde_json::Value = json_body(&s, &headers, body).await?;
    let raw: RawRollout =
        serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("invalid rollout: {e}")))?;
    let st = s.rollouts.start_rollout(&endpoint, raw).await?;
    Ok((StatusCode::CREATED, json_ok(&st)).into_response())
}

async fn pause(State(s): State<AdminState>, Path(endpoint): Path<String>) -> Result<Response, ApiError> {
    Ok(json_ok(&s.rollouts.pause(&endpoint).await?))
}

async fn resume(State(s): State<AdminState>, Path(endpoint): Path<String>) -> Result<Response, ApiError> {
    Ok(json_ok(&s.rollouts.resume(&endpoint).await?))
}

async fn abort(State(s): State<AdminState>, Path(endpoint): Path<String>) -> Result<Response, ApiError> {
    Ok(json_ok(&s.rollouts.abort(&endpoint).await?))
}
