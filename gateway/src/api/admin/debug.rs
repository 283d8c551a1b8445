//! Test hooks of a gateway started with `--test-clock` (`/debug/...`): read and move the rollout
//! clock, and make a model's next execution panic in its worker. Elsewhere they answer 404.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::{AdminState, json_body};
use crate::api::ApiError;
use crate::api::http::json_ok;
use crate::core::CoreError;

pub(super) fn routes() -> Router<AdminState> {
    Router::new().route("/debug/clock", get(clock).post(advance)).route("/debug/worker-panic", post(worker_panic))
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
    let now = c.advance(by).map_err(|e| ApiError::bad_request(e.to_string()))?;
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
