//! The one place where an error becomes an HTTP status with `{"error": ...}` and the matching
//! gRPC code, chosen together: the request path's [`CoreError`] and the transports' own kinds
//! ([`ApiError::codes`]), the errors of the layers under the admin API (control, rollouts,
//! experiments, monitors: their `From` impls below), and the status an inference-table row
//! records ([`status_code`]). Each is table-tested for every variant.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::control::ControlError;
use crate::core::CoreError;
use crate::experiment::ExperimentError;
use crate::monitor::MonitorError;
use crate::monitor::service::MonitorCallError;
use crate::rollout::{RolloutError, TrafficError};

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
    /// Refused for who or where the caller is (a cross-site request, a foreign Host).
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the target's state (e.g. a rollout owns the traffic).
    #[error("{0}")]
    Conflict(String),
}

impl From<crate::limits::TooLong> for ApiError {
    fn from(e: crate::limits::TooLong) -> ApiError {
        ApiError::Core(e.into())
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> ApiError {
        match e {
            crate::auth::AuthError::Missing | crate::auth::AuthError::Invalid => ApiError::Unauthorized(e.to_string()),
            crate::auth::AuthError::Denied { .. } => ApiError::Forbidden(e.to_string()),
        }
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
            ApiError::Core(e) => core_codes(e),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, tonic::Code::ResourceExhausted),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, tonic::Code::DeadlineExceeded),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, tonic::Code::InvalidArgument),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, tonic::Code::Unimplemented),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, tonic::Code::PermissionDenied),
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
            ApiError::Forbidden(_) => "forbidden",
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

/// HTTP status and gRPC code of a request-path error.
fn core_codes(e: &CoreError) -> (StatusCode, tonic::Code) {
    match e {
        CoreError::BadRequest(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
        CoreError::Forbidden(_) => (StatusCode::FORBIDDEN, tonic::Code::PermissionDenied),
        CoreError::NotFound(_) => (StatusCode::NOT_FOUND, tonic::Code::NotFound),
        CoreError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, tonic::Code::ResourceExhausted),
        CoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
        CoreError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, tonic::Code::DeadlineExceeded),
        CoreError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal),
    }
}

/// The HTTP status an inference-table row records for a request-path error: the status the
/// client got (the core is handed this function; it chooses no codes itself).
pub fn status_code(e: &CoreError) -> u16 {
    core_codes(e).0.as_u16()
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

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::Invalid(m) => ApiError::Core(CoreError::BadRequest(m)),
            ControlError::Load(b) => ApiError::Core(CoreError::BadRequest(format!("the change was not applied: {b}"))),
            ControlError::NotFound(m) => ApiError::Core(CoreError::NotFound(m)),
            ControlError::Conflict(m) => ApiError::Conflict(m),
            ControlError::Internal(m) => ApiError::Core(CoreError::Internal(m)),
            ControlError::Store(m) | ControlError::NotReady(m) => ApiError::Core(CoreError::Unavailable(m)),
        }
    }
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
                TrafficError::Unavailable(m) => ApiError::Core(CoreError::Unavailable(m)),
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

impl From<MonitorError> for ApiError {
    fn from(e: MonitorError) -> ApiError {
        match e {
            MonitorError::Config(m) => ApiError::not_found(m),
            other => ApiError::Core(CoreError::Internal(other.to_string())),
        }
    }
}

impl From<MonitorCallError> for ApiError {
    fn from(e: MonitorCallError) -> ApiError {
        match e {
            MonitorCallError::NotFound(m) => ApiError::Core(CoreError::NotFound(m)),
            MonitorCallError::Failed(m) => ApiError::Core(CoreError::Internal(format!("monitor refresh failed: {m}"))),
            MonitorCallError::NotLeader(m) => ApiError::Conflict(m),
        }
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
            (ApiError::Forbidden("x".into()), 403, tonic::Code::PermissionDenied),
            (ApiError::Conflict("x".into()), 409, tonic::Code::FailedPrecondition),
        ];
        for (err, status, code) in table {
            assert_eq!(err.codes(), (StatusCode::from_u16(status).unwrap(), code), "{err:?}");
            if let ApiError::Core(core) = &err {
                assert_eq!(status_code(core), status, "the table row records what the client got: {core:?}");
            }
            let grpc = tonic::Status::from(err.clone());
            assert_eq!(grpc.code(), code);
            assert_eq!(grpc.message(), err.to_string());
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status);
        }
    }

    /// The errors of the layers under the request path (models, the registry, request caps)
    /// reach clients through `CoreError`: every variant, and the status and code it ends as.
    #[test]
    fn lower_request_path_errors_answer_with_their_status() {
        use crate::registry::LookupError;
        use crate::runtime::RuntimeError;
        let m = || "m".to_string();
        let cases: Vec<(CoreError, u16, tonic::Code)> = vec![
            (RuntimeError::Library(m()).into(), 500, tonic::Code::Internal),
            (RuntimeError::Load { model: m(), version: 1, message: m() }.into(), 500, tonic::Code::Internal),
            (RuntimeError::Overloaded { model: m(), capacity: 1 }.into(), 429, tonic::Code::ResourceExhausted),
            (RuntimeError::Inference(m()).into(), 500, tonic::Code::Internal),
            (RuntimeError::Stopped(m()).into(), 503, tonic::Code::Unavailable),
            (RuntimeError::Timeout(std::time::Duration::from_secs(1)).into(), 504, tonic::Code::DeadlineExceeded),
            (RuntimeError::WorkerPanicked(m()).into(), 500, tonic::Code::Internal),
            (LookupError::UnknownModel(m()).into(), 404, tonic::Code::NotFound),
            (LookupError::UnknownVersion(m(), m()).into(), 404, tonic::Code::NotFound),
            (crate::limits::TooLong { field: m(), len: 300 }.into(), 400, tonic::Code::InvalidArgument),
        ];
        for (e, status, code) in cases {
            assert_eq!(status_code(&e), status, "{e:?}");
            assert_eq!(ApiError::Core(e.clone()).codes().1, code, "{e:?}");
        }
        use crate::api::request_id::BadRequestId;
        let too_long = crate::limits::TooLong { field: m(), len: 300 };
        for e in [BadRequestId::NotText, BadRequestId::TooLong(too_long)] {
            assert_eq!(ApiError::from(e).codes(), (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument));
        }
    }

    #[test]
    fn error_body_is_json_with_error_member() {
        let v: serde_json::Value = serde_json::from_slice(&error_body("bad \"thing\"")).unwrap();
        assert_eq!(v["error"], "bad \"thing\"");
    }
}

#[cfg(test)]
mod layer_errors {
    use super::*;
    use crate::core::BuildError;

    fn m() -> String {
        "m".to_string()
    }

    fn internal(message: &str) -> ApiError {
        ApiError::Core(CoreError::Internal(message.into()))
    }

    fn unavailable(message: &str) -> ApiError {
        ApiError::Core(CoreError::Unavailable(message.into()))
    }

    fn load() -> ControlError {
        ControlError::Load(BuildError::Endpoint { endpoint: "e".into(), message: "bad".into() })
    }

    /// Every variant of every error under the admin API, and the answer it gives.
    #[test]
    fn each_refusal_answers_with_its_status_and_message() {
        let cases: Vec<(ApiError, ApiError)> = vec![
            (ControlError::Invalid(m()).into(), ApiError::bad_request("m")),
            (load().into(), ApiError::bad_request("the change was not applied: endpoint 'e': bad")),
            (ControlError::NotFound(m()).into(), ApiError::not_found("m")),
            (ControlError::Conflict(m()).into(), ApiError::Conflict(m())),
            (ControlError::Internal(m()).into(), internal("m")),
            (ControlError::Store(m()).into(), unavailable("m")),
            (ControlError::NotReady(m()).into(), unavailable("m")),
            (RolloutError::Invalid(m()).into(), ApiError::bad_request("m")),
            (RolloutError::NotFound(m()).into(), ApiError::not_found("m")),
            (RolloutError::Conflict(m()).into(), ApiError::Conflict(m())),
            (RolloutError::Traffic(TrafficError::Invalid(m())).into(), ApiError::bad_request("m")),
            (RolloutError::Traffic(TrafficError::NotFound(m())).into(), ApiError::not_found("m")),
            (RolloutError::Traffic(TrafficError::Conflict(m())).into(), ApiError::Conflict(m())),
            (RolloutError::Traffic(TrafficError::Internal(m())).into(), internal("m")),
            (RolloutError::Traffic(TrafficError::Unavailable(m())).into(), unavailable("m")),
            (ExperimentError::Invalid(m()).into(), ApiError::bad_request("m")),
            (ExperimentError::Failed(m()).into(), internal("the analysis failed: m")),
            (MonitorError::Config(m()).into(), ApiError::not_found("m")),
            (MonitorError::Io(m()).into(), internal("m")),
            (MonitorError::Query(m()).into(), internal("query failed: m")),
            (MonitorCallError::NotFound(m()).into(), ApiError::not_found("m")),
            (MonitorCallError::Failed(m()).into(), internal("monitor refresh failed: m")),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    /// A traffic change the control plane refuses gets the same answer whether an operator or a
    /// rollout asked for it (a rollout sees the refusal through `TrafficError`).
    #[test]
    fn a_refused_rollout_step_answers_like_a_refused_edit() {
        let all: [fn() -> ControlError; 7] = [
            || ControlError::Invalid(m()),
            load,
            || ControlError::NotFound(m()),
            || ControlError::Conflict(m()),
            || ControlError::Internal(m()),
            || ControlError::Store(m()),
            || ControlError::NotReady(m()),
        ];
        for e in all {
            let via_rollout = ApiError::from(RolloutError::Traffic(TrafficError::from(e())));
            assert_eq!(via_rollout, ApiError::from(e()));
        }
    }
}
