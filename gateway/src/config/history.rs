//! Each endpoint's numbered config history, as data: the control plane appends to it, the admin
//! API shows it and the experiment analysis reads the traffic split of each version from it.

use serde::{Deserialize, Serialize};

use super::raw::RawEndpoint;

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Startup,
    Api,
    File,
    Rollback,
    /// A rollout moved traffic (a step, a promotion, a rollback, an abort).
    Rollout,
    /// `sluice config import` wrote it to the config store.
    Import,
    /// An MLflow registry alias moved (`watch_aliases`).
    Registry,
}

impl Source {
    /// The metric label of the source.
    pub fn label(self) -> &'static str {
        match self {
            Source::Startup => "startup",
            Source::Api => "api",
            Source::File => "file",
            Source::Rollback => "rollback",
            Source::Rollout => "rollout",
            Source::Import => "import",
            Source::Registry => "registry",
        }
    }
}

/// One numbered entry of an endpoint's config history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub version: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub source: Source,
    /// The principal that made the change (when tokens are configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why, when the change was made by the gateway itself (rollouts) or an import says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The config store's version that made this change (with a config store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_version: Option<u64>,
    /// The endpoint config from this version on; `None` when the change removed the endpoint.
    pub config: Option<RawEndpoint>,
}
