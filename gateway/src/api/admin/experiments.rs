//! Experiment analysis (`/experiments/{endpoint}`): the A/B report of an endpoint, from its
//! config and history as the control plane holds them.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::AdminState;
use crate::api::ApiError;
use crate::api::http::json_ok;
use crate::experiment::ReportRequest;

pub(super) fn routes() -> Router<AdminState> {
    Router::new().route("/experiments/{endpoint}", get(report))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportParams {
    since: Option<String>,
    until: Option<String>,
    window: Option<String>,
}

/// `GET /experiments/{endpoint}?since=&until=&window=`: the A/B report.
async fn report(
    State(s): State<AdminState>,
    Path(endpoint): Path<String>,
    params: Result<Query<ReportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(format!("{e}; use since, until and window")))?;
    let req = ReportRequest { since: p.since, until: p.until, window: p.window };
    let config = s.control.config().await;
    let e = config.endpoint(&endpoint).ok_or_else(|| ApiError::not_found(format!("unknown endpoint '{endpoint}'")))?;
    let history = s.control.history(&endpoint).await?;
    let hint = s.rollouts.incumbent_of(&endpoint).await;
    Ok(json_ok(&crate::experiment::endpoint_report(e, &history, &req, hint).await?))
}
