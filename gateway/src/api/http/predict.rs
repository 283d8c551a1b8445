//! `POST /predict`, `/endpoints/{name}/predict`, `/serving-endpoints/{name}/invocations`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{HttpState, json_response, media_type, read_body};
use crate::api::ApiError;

pub const SERVED_MODEL_HEADER: &str = "x-sluice-served-model";
pub const MODEL_VERSION_HEADER: &str = "x-sluice-model-version";
pub const REQUEST_ID_HEADER: &str = "x-request-id";

pub async fn default_endpoint(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    handle(state, None, headers, body).await
}

pub async fn endpoint(
    State(state): State<HttpState>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, Some(endpoint), headers, body).await
}

async fn handle(state: HttpState, endpoint: Option<String>, headers: HeaderMap, body: Body) -> Response {
    let request_id = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
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
        Ok(state.gateway.predict(endpoint.as_deref(), &bytes).await?)
    }
    .await;
    let mut response = match result {
        Ok(p) => {
            let mut r = json_response(StatusCode::OK, p.body);
            let h = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&p.served_model) {
                h.insert(HeaderName::from_static(SERVED_MODEL_HEADER), v);
            }
            if let Ok(v) = HeaderValue::from_str(&p.model.version_str) {
                h.insert(HeaderName::from_static(MODEL_VERSION_HEADER), v);
            }
            r
        }
        Err(e) => {
            crate::metrics::rejected("http", e.kind());
            e.into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(HeaderName::from_static(REQUEST_ID_HEADER), v);
    }
    response
}

/// A random 128-bit request id, hex.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
