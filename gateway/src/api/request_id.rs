//! Request ids: the client's `x-request-id` when it sends a usable one, else a random 128-bit
//! hex id. The HTTP stack's outermost layer assigns one to every request
//! (`server::stack`) and puts it in the request's extensions as a [`RequestId`]; gRPC reads
//! it from the call's metadata with [`from_headers`]. Either way it is capped at
//! [`MAX_ID_BYTES`](crate::limits::MAX_ID_BYTES).

use std::sync::Arc;

use http::HeaderMap;

use crate::limits::{TooLong, check_id};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request being handled (an HTTP request extension).
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// Why a client's `x-request-id` was refused (a bad request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequestId {
    #[error("{REQUEST_ID_HEADER} is not ASCII text")]
    NotText,
    #[error(transparent)]
    TooLong(#[from] TooLong),
}

/// A random 128-bit request id, hex.
pub fn generate() -> Arc<str> {
    Arc::from(format!("{:032x}", rand::random::<u128>()).as_str())
}

/// The request id a request's headers give: theirs when present and non-empty, else a new one.
pub fn from_headers(headers: &HeaderMap) -> Result<Arc<str>, BadRequestId> {
    match headers.get(REQUEST_ID_HEADER) {
        None => Ok(generate()),
        Some(v) => {
            let v = v.to_str().map_err(|_| BadRequestId::NotText)?;
            check_id(REQUEST_ID_HEADER, v)?;
            Ok(if v.is_empty() { generate() } else { Arc::from(v) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_capped_and_generated_when_absent() {
        let mut h = HeaderMap::new();
        assert_eq!(from_headers(&h).unwrap().len(), 32);
        h.insert(REQUEST_ID_HEADER, "abc".parse().unwrap());
        assert_eq!(&*from_headers(&h).unwrap(), "abc");
        h.insert(REQUEST_ID_HEADER, "".parse().unwrap());
        assert_eq!(from_headers(&h).unwrap().len(), 32);
        h.insert(REQUEST_ID_HEADER, "a".repeat(crate::limits::MAX_ID_BYTES + 1).parse().unwrap());
        assert!(matches!(from_headers(&h), Err(BadRequestId::TooLong(_))));
        h.insert(REQUEST_ID_HEADER, http::HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(from_headers(&h), Err(BadRequestId::NotText));
    }
}
