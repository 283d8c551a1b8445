//! `POST /predict`, `/endpoints/{name}/predict`, `/serving-endpoints/{name}/invocations`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{HttpState, json_response, media_type, read_body};
use crate::api::ApiError;
use crate::core::{PredictTarget, RequestMeta};
use crate::limits::check_id;
use sluice_wire::SERVED_MODEL_HEADER;

pub const MODEL_VERSION_HEADER: &str = "x-sluice-model-version";
pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const REQUESTER_HEADER: &str = "x-sluice-requester";

pub async fn default_endpoint(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, PredictTarget::default(), headers, body).await
}

/// `POST /endpoints/{name}/served-models/{served}/predict`: bypasses the traffic split.
pub async fn served_model(
    State(state): State<HttpState>,
    Path((endpoint, served)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, PredictTarget { endpoint: Some(&endpoint), served_model: Some(&served) }, headers, body).await
}

pub async fn endpoint(
    State(state): State<HttpState>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, PredictTarget { endpoint: Some(&endpoint), served_model: None }, headers, body).await
}

/// The request metadata of an HTTP request: its id (sent or generated), pin header, headers.
/// An id or requester over [`MAX_ID_BYTES`](crate::limits::MAX_ID_BYTES) is a 400.
pub(crate) fn request_meta(headers: HeaderMap) -> Result<RequestMeta, ApiError> {
    let request_id = match headers.get(REQUEST_ID_HEADER) {
        None => new_request_id(),
        Some(v) => {
            let v = v.to_str().map_err(|_| ApiError::bad_request(format!("{REQUEST_ID_HEADER} is not ASCII text")))?;
            check_id(REQUEST_ID_HEADER, v)?;
            if v.is_empty() { new_request_id() } else { v.to_string() }
        }
    };
    let pin = headers.get(SERVED_MODEL_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let requester = requester(&headers)?;
    Ok(RequestMeta { request_id: Arc::from(request_id.as_str()), pin, headers, requester })
}

/// Who sent a request: `x-sluice-requester` (at most [`MAX_ID_BYTES`](crate::limits::MAX_ID_BYTES),
/// else a 400), else the user agent cut to that length.
pub(crate) fn requester(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if let Some(v) = headers.get(REQUESTER_HEADER).and_then(|v| v.to_str().ok()) {
        check_id(REQUESTER_HEADER, v)?;
        return Ok(Some(v.to_string()));
    }
    let agent = headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok());
    Ok(agent.map(|s| {
        let mut end = s.len().min(crate::limits::MAX_ID_BYTES);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    }))
}

/// Adds who-served-it headers and the request id.
pub(crate) fn answer_headers(r: &mut Response, served: &str, version: &str, request_id: &str) {
    let h = r.headers_mut();
    for (name, value) in
        [(SERVED_MODEL_HEADER, served), (MODEL_VERSION_HEADER, version), (REQUEST_ID_HEADER, request_id)]
    {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
}

async fn handle(state: HttpState, target: PredictTarget<'_>, headers: HeaderMap, body: Body) -> Response {
    let meta = match request_meta(headers) {
        Ok(m) => m,
        Err(e) => return rejected(e),
    };
    let result = async {
        match media_type(&meta.headers)?.as_deref() {
            None | Some("application/json") => {}
            Some(other) => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "Content-Type {other} is not supported; send application/json"
                )));
            }
        }
        let bytes = read_body(body, state.max_body_bytes, &meta.headers).await?;
        Ok(state.gateway.predict(target, &meta, &bytes).await?)
    }
    .await;
    match result {
        Ok(p) => {
            let mut r = json_response(StatusCode::OK, p.body);
            answer_headers(&mut r, &p.served_model, &p.model.version_str, &meta.request_id);
            r
        }
        Err(e) => {
            let mut r = rejected(e);
            if let Ok(v) = HeaderValue::from_str(&meta.request_id) {
                r.headers_mut().insert(HeaderName::from_static(REQUEST_ID_HEADER), v);
            }
            r
        }
    }
}

/// Counts a request the HTTP transport answers with an error, and renders the error.
pub(crate) fn rejected(e: ApiError) -> Response {
    crate::metrics::rejected("http", e.kind());
    e.into_response()
}

/// A random 128-bit request id, hex.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `POST /endpoints/{name}/labels`: late ground truth for the endpoint's inference table.
pub async fn labels(
    State(state): State<HttpState>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        match media_type(&headers)?.as_deref() {
            None | Some("application/json") => {}
            Some(other) => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "Content-Type {other} is not supported; send application/json"
                )));
            }
        }
        let bytes = read_body(body, state.max_body_bytes, &headers).await?;
        Ok(state.gateway.post_labels(&endpoint, &bytes).await?)
    }
    .await;
    match result {
        Ok(r) => super::json_ok(&r),
        Err(e) => rejected(e),
    }
}
