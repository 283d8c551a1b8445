//! What every transport reads from a request's headers (gRPC: its metadata) besides the body:
//! the served-model pin, the requester and the sticky-key header, one function for all.

use std::sync::Arc;

use http::HeaderMap;

use super::ApiError;
use crate::core::{RequestMeta, Transport};
use crate::limits::check_id;

pub use sluice_wire::SERVED_MODEL_HEADER;
pub const MODEL_VERSION_HEADER: &str = "x-sluice-model-version";
pub const REQUESTER_HEADER: &str = "x-sluice-requester";

/// The metadata of a request with id `request_id`. A requester over
/// [`MAX_ID_BYTES`](crate::limits::MAX_ID_BYTES) is a bad request.
pub fn request_meta(transport: Transport, request_id: Arc<str>, headers: HeaderMap) -> Result<RequestMeta, ApiError> {
    let pin = headers.get(SERVED_MODEL_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let requester = requester(&headers)?;
    Ok(RequestMeta { transport, request_id, pin, headers, requester, ..RequestMeta::default() })
}

/// Who sent a request: `x-sluice-requester` (at most [`MAX_ID_BYTES`](crate::limits::MAX_ID_BYTES),
/// else a 400), else the user agent cut to that length.
pub fn requester(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if let Some(v) = headers.get(REQUESTER_HEADER).and_then(|v| v.to_str().ok()) {
        check_id(REQUESTER_HEADER, v)?;
        return Ok(Some(v.to_string()));
    }
    let agent = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok());
    Ok(agent.map(|s| {
        let mut end = s.len().min(crate::limits::MAX_ID_BYTES);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    }))
}
