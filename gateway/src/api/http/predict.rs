//! `POST /predict`, `/endpoints/{name}/predict`, `/serving-endpoints/{name}/invocations`.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{HttpState, json_response, media_type, read_body};
use crate::api::ApiError;
use crate::api::access::Caller;
use crate::api::meta::{MODEL_VERSION_HEADER, SERVED_MODEL_HEADER, request_meta};
use crate::api::mlflow::{self, Predictions};
use crate::api::request_id::RequestId;
use crate::core::{CoreError, Inputs, Request, Target, Transport};

pub async fn default_endpoint(
    State(state): State<HttpState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, Target::Endpoint { name: None, served_model: None }, id, headers, body).await
}

/// `POST /endpoints/{name}/served-models/{served}/predict`: bypasses the traffic split.
pub async fn served_model(
    State(state): State<HttpState>,
    Extension(id): Extension<RequestId>,
    Path((endpoint, served)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, Target::Endpoint { name: Some(endpoint), served_model: Some(served) }, id, headers, body).await
}

pub async fn endpoint(
    State(state): State<HttpState>,
    Extension(id): Extension<RequestId>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, Target::Endpoint { name: Some(endpoint), served_model: None }, id, headers, body).await
}

/// Databricks' header naming the served model that answered (`databricks-sdk` reads it).
pub const DATABRICKS_SERVED_MODEL_HEADER: &str = "served-model-name";

/// Adds who-served-it headers, Sluice's and Databricks' (the request id is set by the stack's
/// outermost layer).
pub(crate) fn answer_headers(r: &mut Response, served: &str, version: &str) {
    let h = r.headers_mut();
    for (name, value) in
        [(SERVED_MODEL_HEADER, served), (MODEL_VERSION_HEADER, version), (DATABRICKS_SERVED_MODEL_HEADER, served)]
    {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
}

/// `/predict`: parse (MLflow formats) -> the core -> render `{"predictions": ...}`.
async fn handle(state: HttpState, target: Target, id: RequestId, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let mut meta = request_meta(Transport::Predict, id.0, headers)?;
        match media_type(&meta.headers)?.as_deref() {
            None | Some("application/json") => {}
            Some(other) => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "Content-Type {other} is not supported; send application/json"
                )));
            }
        }
        let bytes = read_body(body, state.max_body_bytes).await?;
        let inputs = match mlflow::parse(&bytes) {
            Ok(parsed) => {
                meta.client_request_id = parsed.client_request_id;
                meta.fields = parsed.fields;
                Inputs::Mapped(Box::new(parsed.payload))
            }
            Err(e) => Inputs::Invalid(e),
        };
        meta.logged_body = Some(bytes);
        Ok(state.gateway.handle(Request::new(target, inputs, meta), Predictions).await?)
    }
    .await;
    match result {
        Ok(h) => {
            let mut r = json_response(StatusCode::OK, h.output);
            answer_headers(&mut r, &h.served_model, &h.model.version_str);
            r
        }
        Err(e) => rejected(e),
    }
}

/// Counts a request the HTTP transport answers with an error, and renders the error.
pub(crate) fn rejected(e: ApiError) -> Response {
    crate::metrics::rejected("http", e.kind());
    e.into_response()
}

/// `POST /endpoints/{name}/labels`: late ground truth for the endpoint's inference table.
pub async fn labels(
    State(state): State<HttpState>,
    Path(endpoint): Path<String>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let who = caller.and_then(|Extension(c)| c.0.map(|p| p.name.clone())).unwrap_or_else(|| "anonymous".into());
    let result = async {
        match media_type(&headers)?.as_deref() {
            None | Some("application/json") => {}
            Some(other) => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "Content-Type {other} is not supported; send application/json"
                )));
            }
        }
        let bytes = read_body(body, state.max_body_bytes).await?;
        let budget = |n: usize| {
            state.labels_rate.take(&who, n).map_err(|wait| {
                CoreError::Overloaded(format!(
                    "principal '{who}' is over its label rate (server.labels_per_second = {}); retry in {:.1} s",
                    state.labels_rate.per_second(),
                    wait.as_secs_f64()
                ))
            })
        };
        Ok(state.gateway.post_labels(&endpoint, &bytes, budget).await?)
    }
    .await;
    match result {
        Ok(r) => super::json_ok(&r),
        Err(e) => rejected(e),
    }
}
