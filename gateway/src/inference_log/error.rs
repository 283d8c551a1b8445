//! The inference log's error type: what can go wrong opening a table or writing its files.
//! Posted labels have their own, [`super::labels::LabelsError`], worded for the client.

use std::path::PathBuf;

use datafusion::arrow::error::ArrowError;
use datafusion::parquet::errors::ParquetError;

/// Why a table could not be opened, or a file of it written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The writer thread of `table` could not be spawned.
    #[error("cannot start the writer of table {table}: {source}")]
    StartWriter { table: String, source: std::io::Error },
    /// The table's Arrow schema (or a batch of a fixed schema) could not be built.
    #[error(transparent)]
    Schema(ArrowError),
    /// The records could not be turned into columns.
    #[error("cannot build columns: {0}")]
    Columns(ArrowError),
    /// The Parquet writer could not be configured.
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    /// The part file could not be written, closed or renamed into place.
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_table_and_path() {
        let e = LogError::StartWriter { table: "t".into(), source: std::io::Error::other("no threads") };
        assert_eq!(e.to_string(), "cannot start the writer of table t: no threads");
        let e = LogError::Write { path: PathBuf::from("/d/p.parquet"), source: std::io::Error::other("disk full") };
        assert_eq!(e.to_string(), "cannot write /d/p.parquet: disk full");
    }
}
