//! The load tester's error type. Every variant ends the run with exit code 1; a failed SLO is not an
//! error but a result (exit code 2, see [`crate::slo`]).

/// What stops a run before or while it sends load.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags, scenario file or payload file that cannot be used; the message says how to fix it.
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached or answered a setup call (metadata, admin) wrongly.
    #[error("{0}")]
    Connect(String),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }

    pub(crate) fn connect(msg: impl Into<String>) -> Error {
        Error::Connect(msg.into())
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io { path: path.display().to_string(), source }
    }
}
