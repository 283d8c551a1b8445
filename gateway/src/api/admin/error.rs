//! How the errors of the layers under the admin API become its answers: each refusal kind to
//! the status the admin API has always given it, with the error's own message.

use crate::api::ApiError;
use crate::control::ControlError;
use crate::core::CoreError;
use crate::experiment::ExperimentError;
use crate::monitor::MonitorError;
use crate::monitor::service::MonitorCallError;
use crate::rollout::{RolloutError, TrafficError};

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::Invalid(m) => ApiError::Core(CoreError::BadRequest(m)),
            ControlError::Load(b) => ApiError::Core(CoreError::BadRequest(format!("the change was not applied: {b}"))),
            ControlError::NotFound(m) => ApiError::Core(CoreError::NotFound(m)),
            ControlError::Conflict(m) => ApiError::Conflict(m),
            ControlError::Internal(m) => ApiError::Core(CoreError::Internal(m)),
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::BuildError;

    fn m() -> String {
        "m".to_string()
    }

    fn internal(message: &str) -> ApiError {
        ApiError::Core(CoreError::Internal(message.into()))
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
            (RolloutError::Invalid(m()).into(), ApiError::bad_request("m")),
            (RolloutError::NotFound(m()).into(), ApiError::not_found("m")),
            (RolloutError::Conflict(m()).into(), ApiError::Conflict(m())),
            (RolloutError::Traffic(TrafficError::Invalid(m())).into(), ApiError::bad_request("m")),
            (RolloutError::Traffic(TrafficError::NotFound(m())).into(), ApiError::not_found("m")),
            (RolloutError::Traffic(TrafficError::Conflict(m())).into(), ApiError::Conflict(m())),
            (RolloutError::Traffic(TrafficError::Internal(m())).into(), internal("m")),
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
        let all: [fn() -> ControlError; 5] = [
            || ControlError::Invalid(m()),
            load,
            || ControlError::NotFound(m()),
            || ControlError::Conflict(m()),
            || ControlError::Internal(m()),
        ];
        for e in all {
            let via_rollout = ApiError::from(RolloutError::Traffic(TrafficError::from(e())));
            assert_eq!(via_rollout, ApiError::from(e()));
        }
    }
}
