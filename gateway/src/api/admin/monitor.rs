//! Monitors (`/monitors`): the monitored endpoints, a monitor's status, and a refresh now.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::AdminState;
use crate::api::ApiError;
use crate::monitor::service::Status;

pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/monitors", get(list))
        .route("/monitors/{endpoint}", get(status))
        .route("/monitors/{endpoint}/refresh", post(refresh))
}

/// `GET /monitors`: the monitored endpoints.
async fn list(State(s): State<AdminState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "monitors": s.monitors.names() }))
}

/// `GET /monitors/{endpoint}`: status, last refresh, latest metrics and alerts.
async fn status(State(s): State<AdminState>, Path(endpoint): Path<String>) -> Result<Json<Status>, ApiError> {
    Ok(Json(s.monitors.status(&endpoint)?))
}

/// `POST /monitors/{endpoint}/refresh`: refresh now and answer with what it did.
async fn refresh(
    State(s): State<AdminState>,
    Path(endpoint): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let result = s.monitors.refresh(&endpoint, Duration::from_secs(600)).await?;
    let status = s.monitors.status(&endpoint)?;
    Ok(Json(serde_json::json!({ "refresh": result, "status": status })))
}
