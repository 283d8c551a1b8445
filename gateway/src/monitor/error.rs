//! The monitor's one error type, shared by the engine, custom metrics, alerts and the views (a
//! leaf of `monitor`, so none of them imports another for it).

use std::path::Path;

/// Why a monitor refresh, check or read failed.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The spec does not fit the table (a missing column, a bad expression): the operator's fix.
    #[error("{0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// DataFusion or Arrow failed on a query the monitor built.
    #[error("query failed: {0}")]
    Query(String),
    /// A monitor of endpoint `endpoint` does not fit its table (`sluice validate`, a reload).
    #[error("endpoints.{endpoint}.monitor: {source}")]
    Endpoint { endpoint: String, source: Box<MonitorError> },
    /// The manifest that implies an endpoint's table schema could not be loaded.
    #[error(transparent)]
    Manifest(#[from] crate::registry::ManifestError),
    /// The table schema a layout implies could not be built.
    #[error(transparent)]
    Table(#[from] crate::inference_log::LogError),
    /// The analysis runtime the monitors run on could not start.
    #[error(transparent)]
    Analysis(#[from] crate::analysis::AnalysisError),
    /// A monitor's status lock was poisoned by a panic.
    #[error("monitor status lock poisoned")]
    Poisoned,
    /// Asked of a replica that does not lead its fleet (only the leader refreshes).
    #[error("{0}")]
    NotLeader(String),
}

/// A query error, explained (DataFusion's messages are nested).
pub(crate) fn qerr(e: impl std::fmt::Display) -> MonitorError {
    MonitorError::Query(crate::analysis::explain(e))
}

/// An I/O error naming what was done to which path.
pub(crate) fn ioerr(what: &str, path: &Path, e: impl std::fmt::Display) -> MonitorError {
    MonitorError::Io(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_errors_name_the_field() {
        let e = MonitorError::Endpoint {
            endpoint: "fraud".into(),
            source: Box::new(MonitorError::Config("the table has no column 'x'".into())),
        };
        assert_eq!(e.to_string(), "endpoints.fraud.monitor: the table has no column 'x'");
    }
}
