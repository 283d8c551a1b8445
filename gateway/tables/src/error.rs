//! The errors of this crate: where a table is, what delta-rs or the object store said, and
//! whether trying again can help.

use deltalake_core::DeltaTableError;

/// (Sources are boxed: delta-rs' errors are large, and a `Result` carries its error's size.)
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table location {location:?}: {why}")]
    Location { location: String, why: String },
    #[error("{location}: not a Delta table (no _delta_log)")]
    NotATable { location: String },
    #[error(
        "{location}: a directory of plain Parquet files (the format before Delta tables): run `sluice table convert {location}` once"
    )]
    PlainParquet { location: String },
    #[error(
        "{location}: column {column:?} is {found} in the new rows but {expected} in the table; a column's type cannot change (write it under a new name)"
    )]
    SchemaConflict { location: String, column: String, expected: String, found: String },
    #[error("{location}: {source}")]
    Delta {
        location: String,
        #[source]
        source: Box<DeltaTableError>,
    },
    #[error("{location}: {source}")]
    DataFusion {
        location: String,
        #[source]
        source: Box<deltalake_core::datafusion::error::DataFusionError>,
    },
    #[error("{location}: {source}")]
    Arrow {
        location: String,
        #[source]
        source: Box<deltalake_core::arrow::error::ArrowError>,
    },
}

impl TableError {
    /// Whether trying the same rows again cannot help: the rows do not fit the table (schema),
    /// the location is wrong, or the table refuses writes. Anything else (object storage
    /// unreachable, slow, answering 5xx or 403 for a moment, a commit race lost) is retried by
    /// the writers, with backoff, while their queue's bound and `on_queue_full` decide what
    /// happens to new rows.
    pub fn is_permanent(&self) -> bool {
        match self {
            TableError::Location { .. }
            | TableError::NotATable { .. }
            | TableError::PlainParquet { .. }
            | TableError::SchemaConflict { .. }
            | TableError::Arrow { .. } => true,
            TableError::Delta { source, .. } => delta_permanent(source),
            TableError::DataFusion { .. } => false,
        }
    }
}

fn delta_permanent(e: &DeltaTableError) -> bool {
    use deltalake_core::kernel::transaction::TransactionError;
    match e {
        DeltaTableError::SchemaMismatch { .. }
        | DeltaTableError::Arrow { .. }
        | DeltaTableError::InvalidData { .. }
        | DeltaTableError::PartitionError { .. }
        | DeltaTableError::MissingFeature { .. }
        | DeltaTableError::UnsupportedColumnMapping { .. }
        | DeltaTableError::InvalidTableLocation(_)
        | DeltaTableError::NotATable(_) => true,
        DeltaTableError::Transaction { source } => matches!(
            source,
            TransactionError::DeltaTableAppendOnly
                | TransactionError::UnsupportedTableFeatures(_)
                | TransactionError::TableFeaturesRequired(_)
        ),
        _ => false,
    }
}
