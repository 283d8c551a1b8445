//! HTTP transport (axum): routes, shared state, body limits and content types.

pub(crate) mod infer;
pub mod predict;
mod v2_meta;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;

use super::ApiError;
use crate::core::Gateway;

/// State shared by HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    pub gateway: Arc<Gateway>,
    pub max_body_bytes: usize,
    pub metrics: PrometheusHandle,
    /// Labels each principal may post (`server.labels_per_second`).
    pub labels_rate: Arc<super::rate::RateLimiter>,
}

/// The inference port's routes: `/predict` formats, KServe V2 REST, `/metrics`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/predict", post(predict::default_endpoint))
        // the MLflow scoring server's routes (`mlflow models serve`): the default endpoint
        .route("/invocations", post(predict::default_endpoint))
        .route("/ping", get(ping))
        .route("/version", get(version))
        .route("/endpoints/{endpoint}/predict", post(predict::endpoint))
        .route("/serving-endpoints/{endpoint}/invocations", post(predict::endpoint))
        .route("/endpoints/{endpoint}/served-models/{served}/predict", post(predict::served_model))
        .route("/endpoints/{endpoint}/labels", post(predict::labels))
        .route("/v2", get(v2_meta::server_metadata))
        .route("/v2/health/live", get(v2_meta::live))
        .route("/v2/health/ready", get(v2_meta::ready))
        .route("/v2/models/stats", get(v2_meta::all_stats))
        .route("/v2/models/{model}", get(v2_meta::model_metadata))
        .route("/v2/models/{model}/ready", get(v2_meta::model_ready))
        .route("/v2/models/{model}/config", get(v2_meta::model_config))
        .route("/v2/models/{model}/stats", get(v2_meta::model_stats))
        .route("/v2/models/{model}/infer", post(infer::infer))
        .route("/v2/models/{model}/versions/{version}", get(v2_meta::model_metadata_v))
        .route("/v2/models/{model}/versions/{version}/ready", get(v2_meta::model_ready_v))
        .route("/v2/models/{model}/versions/{version}/config", get(v2_meta::model_config_v))
        .route("/v2/models/{model}/versions/{version}/stats", get(v2_meta::model_stats_v))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer::infer_v))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// `GET /ping`: 200 with a newline, as MLflow's scoring server answers its health check.
async fn ping() -> &'static str {
    "\n"
}

/// `GET /version`: the server's version, as MLflow's scoring server answers (plain text).
async fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Metrics and health, which the admin port serves too (open, like on this port).
pub(crate) fn ops_routes() -> Router<HttpState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(v2_meta::live))
        .route("/v2/health/live", get(v2_meta::live))
        .route("/v2/health/ready", get(v2_meta::ready))
}

async fn metrics(axum::extract::State(state): axum::extract::State<HttpState>) -> Response {
    let text = crate::metrics::render(&state.metrics, &state.gateway.snapshot().registry);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// Unknown paths: 404 with the method and path, counted as rejected.
pub(crate) async fn fallback(method: Method, uri: Uri) -> ApiError {
    crate::metrics::rejected("http", "not_found");
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

/// A known path with another method: 405, counted as rejected.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    crate::metrics::rejected("http", "method_not_allowed");
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// The error a body read past `server.body_read_timeout_ms` ends with (set by the stack's body
/// deadline layer); [`read_body`] answers it with 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms (server.body_read_timeout_ms)", .0.as_millis())]
pub struct BodyTimeout(pub std::time::Duration);

/// Reads a request body. The stack's body limit layer stops it at `limit` bytes (413, with
/// `limit` in the message) and its deadline layer stops a late one (408).
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, usize::MAX).await.map_err(|e| {
        // Whichever layer failed the read is somewhere down the error's sources.
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::PayloadTooLarge(limit);
            }
            if let Some(t) = s.downcast_ref::<BodyTimeout>() {
                return ApiError::RequestTimeout(t.to_string());
            }
            source = s.source();
        }
        ApiError::bad_request(format!("cannot read request body: {e}"))
    })
}

/// The media type of a request without parameters, lowercased (`None` when absent).
pub(crate) fn media_type(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        None => Ok(None),
        Some(v) => {
            let s =
                v.to_str().map_err(|_| ApiError::UnsupportedMediaType("Content-Type is not readable text".into()))?;
            Ok(Some(s.split(';').next().unwrap_or("").trim().to_ascii_lowercase()))
        }
    }
}

/// A JSON response with a status.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Serialises a value as a 200 JSON response.
pub(crate) fn json_ok<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => {
            ApiError::Core(crate::core::CoreError::Internal(format!("cannot encode response: {e}"))).into_response()
        }
    }
}
