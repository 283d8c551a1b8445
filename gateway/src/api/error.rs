//! The one place where an error kind becomes an HTTP status with `{"error": ...}` and the
//! matching gRPC code, chosen together.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::core::CoreError;

/// Errors a transport can answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("request body is larger than the limit of {0} bytes (server.max_body_bytes)")]
    PayloadTooLarge(usize),
    /// The client did not send the request in time.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Unauthorized(String),
    /// The request conflicts with the target's state (e.g. a rollout owns the traffic).
    #[error("{0}")]
    Conflict(String),
}

impl From<crate::limits::TooLong> for ApiError {
    fn from(e: crate::limits::TooLong) -> ApiError {
        ApiError::Core(e.into())
    }
}

impl From<super::request_id::BadRequestId> for ApiError {
    fn from(e: super::request_id::BadRequestId) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError::Core(CoreError::BadRequest(msg.into()))
    }

    pub fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError::Core(CoreError::NotFound(msg.into()))
    }

    /// HTTP status and gRPC code for this error.
    pub fn codes(&self) -> (StatusCode, tonic::Code) {
        match self {
            ApiError::Core(CoreError::BadRequest(_)) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
            ApiError::Core(CoreError::Forbidden(_)) => (StatusCode::FORBIDDEN, tonic::Code::PermissionDenied),
            ApiError::Core(CoreError::NotFound(_)) => (StatusCode::NOT_FOUND, tonic::Code::NotFound),
            ApiError::Core(CoreError::Overloaded(_)) => (StatusCode::TOO_MANY_REQUESTS, tonic::Code::ResourceExhausted),
            ApiError::Core(CoreError::Unavailable(_)) => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
            ApiError::Core(CoreError::Timeout(_)) => (StatusCode::GATEWAY_TIMEOUT, tonic::Code::DeadlineExceeded),
            ApiError::Core(CoreError::Internal(_)) => (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, tonic::Code::ResourceExhausted),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, tonic::Code::DeadlineExceeded),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, tonic::Code::InvalidArgument),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, tonic::Code::Unimplemented),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, tonic::Code::FailedPrecondition),
        }
    }

    /// Bounded reason name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Core(e) => e.kind(),
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Conflict(_) => "conflict",
        }
    }

    /// The message, cut to [`crate::limits::MAX_ERROR_BYTES`] (it may quote the request).
    pub fn message(&self) -> String {
        crate::limits::bounded_message(&self.to_string()).into_owned()
    }

    fn log(&self, message: &str) {
        let (status, _) = self.codes();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "{message}");
        } else {
            tracing::debug!(status = status.as_u16(), "{message}");
        }
    }
}

/// `{"error": "..."}` as bytes.
pub fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_else(|_| b"{\"error\":\"\"}".to_vec())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.message();
        self.log(&message);
        let (status, _) = self.codes();
        (status, [(axum::http::header::CONTENT_TYPE, "application/json")], error_body(&message)).into_response()
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> tonic::Status {
        let message = e.message();
        e.log(&message);
        let (_, code) = e.codes();
        tonic::Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_a_status_and_code() {
        let table = [
            (ApiError::Core(CoreError::BadRequest("x".into())), 400, tonic::Code::InvalidArgument),
            (ApiError::Core(CoreError::Forbidden("x".into())), 403, tonic::Code::PermissionDenied),
            (ApiError::Core(CoreError::NotFound("x".into())), 404, tonic::Code::NotFound),
            (ApiError::Core(CoreError::Overloaded("x".into())), 429, tonic::Code::ResourceExhausted),
            (ApiError::Core(CoreError::Unavailable("x".into())), 503, tonic::Code::Unavailable),
            (ApiError::Core(CoreError::Timeout("x".into())), 504, tonic::Code::DeadlineExceeded),
            (ApiError::Core(CoreError::Internal("x".into())), 500, tonic::Code::Internal),
            (ApiError::PayloadTooLarge(10), 413, tonic::Code::ResourceExhausted),
            (ApiError::RequestTimeout("x".into()), 408, tonic::Code::DeadlineExceeded),
            (ApiError::UnsupportedMediaType("x".into()), 415, tonic::Code::InvalidArgument),
            (ApiError::MethodNotAllowed("x".into()), 405, tonic::Code::Unimplemented),
            (ApiError::Unauthorized("x".into()), 401, tonic::Code::Unauthenticated),
            (ApiError::Conflict("x".into()), 409, tonic::Code::FailedPrecondition),
        ];
        for (err, status, code) in table {
            assert_eq!(err.codes(), (StatusCode::from_u16(status).unwrap(), code), "{err:?}");
            let grpc = tonic::Status::from(err.clone());
            assert_eq!(grpc.code(), code);
            assert_eq!(grpc.message(), err.to_string());
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status);
        }
    }

    #[test]
    fn error_body_is_json_with_error_member() {
        let v: serde_json::Value = serde_json::from_slice(&error_body("bad \"thing\"")).unwrap();
        assert_eq!(v["error"], "bad \"thing\"");
    }
}
