//! What a rollout needs of the control plane, and nothing more: the config in force, and one
//! way to change an endpoint's traffic (recorded in its history, optionally held against other
//! edits). [`crate::control::Control`] implements it; the rollout never sees the control plane
//! itself, so it cannot reach the gateway, the monitors or the history through it.

use futures::future::BoxFuture;

use crate::config::Config;
use crate::config::raw::RawTrafficConfig;

/// Why the control plane refused a rollout's traffic change, by the kind of refusal (the admin
/// API answers each kind with its own status).
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// The change is not a valid config, or it could not be applied (its models failed).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The endpoint's state does not allow the change.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
    /// The config store cannot be reached, or the fleet did not load the change: try again.
    #[error("{0}")]
    Unavailable(String),
}

/// The control plane as a rollout uses it.
pub trait TrafficControl: Send + Sync {
    /// The config in force.
    fn config(&self) -> BoxFuture<'_, Config>;

    /// Sets `endpoint`'s traffic on behalf of a rollout (taking `drop_shadow` off the shadow
    /// list, for a candidate that leaves its shadow step), recording `reason` in the history.
    /// With `pin`, the rollout holds the traffic from now on; without, any hold is released.
    fn rollout_traffic<'a>(
        &'a self,
        endpoint: &'a str,
        traffic: RawTrafficConfig,
        drop_shadow: Option<String>,
        reason: String,
        pin: bool,
    ) -> BoxFuture<'a, Result<(), TrafficError>>;

    /// Releases a rollout's hold on an endpoint's traffic.
    fn unpin(&self, endpoint: &str);

    /// Holds `endpoint`'s traffic for a rollout another replica runs (edits of it are refused
    /// here too), without changing it.
    fn pin(&self, _endpoint: &str, _traffic: RawTrafficConfig) {}

    /// Whether this replica leads the fleet (starts config-declared rollouts); a replica
    /// without a config store always does.
    fn leads(&self) -> bool {
        true
    }
}
