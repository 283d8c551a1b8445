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
}

/// A query error, explained (DataFusion's messages are nested).
pub(crate) fn qerr(e: impl std::fmt::Display) -> MonitorError {
    MonitorError::Query(crate::analysis::explain(e))
}

/// An I/O error naming what was done to which path.
pub(crate) fn ioerr(what: &str, path: &Path, e: impl std::fmt::Display) -> MonitorError {
    MonitorError::Io(format!("{what} {}: {e}", path.display()))
}
