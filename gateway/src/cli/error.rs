//! The command line's one error type: bad arguments, an admin API that cannot be reached or
//! answers with an error, a table that cannot be read. Each prints as `error: <message>`.

use std::path::PathBuf;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `traffic set` was given something other than `NAME=PERCENT`.
    #[error("'{pair}' is not NAME=PERCENT")]
    NotPair { pair: String },
    #[error("'{percent}' in '{pair}' is not a whole percentage")]
    NotPercent { percent: String, pair: String },
    #[error("give at least one NAME=PERCENT")]
    NoRoutes,
    /// `--ort-lib` names a path that cannot be written into the config.
    #[error("--ort-lib {} is not a UTF-8 path", path.display())]
    NotUtf8 { path: PathBuf },
    /// A request body or an answer is not the JSON expected.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("bad request for {url}: {source}")]
    Request { url: String, source: hyper::http::Error },
    /// `detail`: the error and its causes (a refused connection, an untrusted certificate).
    #[error("cannot reach the admin API at {base}: {detail} (is sluice running? see --admin-url, --ca-cert)")]
    Unreachable { base: String, detail: String },
    /// The answer's body could not be read.
    #[error(transparent)]
    Body(#[from] hyper::Error),
    /// The admin API answered with a non-2xx status and its `error` text.
    #[error("{status} {message}")]
    Status { status: u16, message: String },
    /// The TLS client could not be set up (`--ca-cert`).
    #[error("{0}")]
    Tls(String),
    #[error("no table at {}", dir.display())]
    NoTable { dir: PathBuf },
    #[error("no table at {}: {source}", dir.display())]
    TableMissing { dir: PathBuf, source: std::io::Error },
    #[error("cannot read the table at {}: {source} (no files published yet?)", dir.display())]
    TableUnreadable { dir: PathBuf, source: DataFusionError },
    #[error("query failed: {0}")]
    Query(DataFusionError),
    #[error(transparent)]
    Delta(#[from] sluice_tables::TableError),
    #[error("{}: {why}", dir.display())]
    Convert { dir: PathBuf, why: String },
    /// The result could not be printed.
    #[error(transparent)]
    Format(#[from] ArrowError),
    /// `config export|import`: the store, the file, or the config in it.
    #[error("{0}")]
    ConfigStore(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_wording() {
        let e = CliError::NotPercent { percent: "x".into(), pair: "a=x".into() };
        assert_eq!(e.to_string(), "'x' in 'a=x' is not a whole percentage");
        assert_eq!(
            CliError::Status { status: 404, message: "unknown endpoint".into() }.to_string(),
            "404 unknown endpoint"
        );
        assert_eq!(CliError::NoTable { dir: PathBuf::from("/d/t") }.to_string(), "no table at /d/t");
    }
}
