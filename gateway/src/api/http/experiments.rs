//! Admin routes of progressive delivery and experiment analysis: rollouts (`/rollouts`), the A/B
//! report (`/experiments/{endpoint}`) and, on a gateway started with `--test-clock`, the clock
//! tests move (`/debug/clock`). Mounted by [`super::admin::routes`], behind its token check.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::admin::{AdminState, json_body};
use super::json_ok;
use crate::api::ApiError;
use crate::core::CoreError;
use crate::experiment::{ExperimentError, ReportRequest};
use crate::rollout::spec::RawRollout;
use crate::rollout::{RolloutError, TrafficError};

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/rollouts", get(list))
        .route("/rollouts/{endpoint}", get(get_one).post(start))
        .route("/rollouts/{endpoint}/pause", post(pause))
        .route("/rollouts/{endpoint}/resume", post(resume))
        .route("/rollouts/{endpoint}/abort", post(abort))
        .route("/experiments/{endpoint}", get(report))
        .route("/debug/clock", get(clock).post(advance))
        .route("/debug/worker-panic", post(worker_panic))
}

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> ApiError {
        match e {
            RolloutError::Invalid(m) => ApiError::bad_request(m),
            RolloutError::NotFound(m) => ApiError::not_found(m),
            RolloutError::Conflict(m) => ApiError::Conflict(m),
            RolloutError::Traffic(t) => match t {
                TrafficError::Invalid(m) => ApiError::bad_request(m),
                TrafficError::NotFound(m) => ApiError::not_found(m),
                TrafficError::Conflict(m) => ApiError::Conflict(m),
                TrafficError::Internal(m) => ApiError::Core(CoreError::Internal(m)),
            },
        }
    }
}

impl From<ExperimentError> for ApiError {
    fn from(e: ExperimentError) -> ApiError {
        match e {
            ExperimentError::Invalid(m) => ApiError::bad_request(m),
            ExperimentError::Failed(m) => ApiError::Core(CoreError::Internal(format!("the analysis failed: {m}"))),
        }
    }
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

fn test_clock(s: &AdminState) -> Result<&crate::clock::Clock, ApiError> {
    let c = s.rollouts.clock();
    if c.is_test() {
        Ok(c)
    } else {
        Err(ApiError::not_found("no test clock: start the gateway with --test-clock to move rollout time"))
    }
}

/// `GET /debug/clock`: the rollout clock (test clock only).
async fn clock(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let now = test_clock(&s)?.now_us();
    Ok(json_ok(&serde_json::json!({ "now": crate::experiment::report::rfc3339(now), "now_us": now })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    /// e.g. "5m".
    advance: String,
}

/// `POST /debug/clock {"advance": "5m"}`: moves the test clock forward; rollouts are judged at once.
async fn advance(State(s): State<AdminState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let c = test_clock(&s)?.clone();
    let a: Advance = serde_json::from_value(json_body(&s, &headers, body).await?)
        .map_err(|e| ApiError::bad_request(format!("send {{\"advance\": \"5m\"}}: {e}")))?;
    let by = humantime::parse_duration(a.advance.trim())
        .map_err(|e| ApiError::bad_request(format!("advance '{}' is not a duration: {e}", a.advance)))?;
    let now = c.advance(by).map_err(ApiError::bad_request)?;
    Ok(json_ok(&serde_json::json!({ "now": crate::experiment::report::rfc3339(now), "now_us": now })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PanicTarget {
    model: String,
    #[serde(default)]
    version: Option<String>,
}

/// `POST /debug/worker-panic {"model": "m", "version": "1"}` (test clock only): the next
/// execution of that model version panics in its worker thread, so tests can show that the
/// requests it held get 500s and the model goes on serving.
async fn worker_panic(State(s): State<AdminState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    test_clock(&s)?;
    let t: PanicTarget = serde_json::from_value(json_body(&s, &headers, body).await?)
        .map_err(|e| ApiError::bad_request(format!("send {{\"model\": \"name\", \"version\": \"1\"}}: {e}")))?;
    let snapshot = s.control.gateway().snapshot();
    let model = snapshot.registry.get(&t.model, t.version.as_deref()).map_err(CoreError::from)?;
    model.runner.inject_panic();
    Ok(json_ok(&serde_json::json!({ "model": model.name, "version": model.version_str })))
}
