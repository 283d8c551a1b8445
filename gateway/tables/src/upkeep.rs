//! Table upkeep, each safe while gateways keep appending: compaction of small files
//! (`optimize`: its removes carry `dataChange=false`, so appends never conflict with it),
//! `vacuum` of files no version within the retention refers to, and retention (whole old
//! partitions removed by a Delta delete: a commit, never files deleted behind the log).

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use deltalake_core::DeltaTable;
use deltalake_core::checkpoints::{cleanup_metadata, create_checkpoint};
use deltalake_core::datafusion::catalog::Session;
use deltalake_core::delta_datafusion::DeltaSessionContext;
use deltalake_core::operations::vacuum::VacuumMode;
use deltalake_core::parquet::basic::{Compression, ZstdLevel};
use deltalake_core::parquet::file::properties::WriterProperties;

use crate::{Table, TableError};

/// What `optimize` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Optimized {
    pub files_removed: u64,
    pub files_added: u64,
    pub version: u64,
}

/// What `vacuum` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vacuumed {
    pub files_deleted: usize,
    /// Log entries removed (older than the log retention and covered by a checkpoint).
    pub log_entries_deleted: usize,
}

/// What retention removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retained {
    pub files_removed: usize,
    pub rows_removed: Option<usize>,
    pub version: u64,
}

/// The DataFusion session the rewrites (optimize, delete) run in: delta-rs' defaults, but with
/// plain (not view) string and binary types, so that the files they write carry the same Arrow
/// types as the appends' (readers that merge the files' schemas would refuse `Utf8View` beside
/// `Utf8`).
fn rewrite_session() -> Result<Arc<dyn Session>, deltalake_core::DeltaTableError> {
    let overrides =
        HashMap::from([("datafusion.execution.parquet.schema_force_view_types".to_string(), "false".to_string())]);
    Ok(Arc::new(DeltaSessionContext::new_with_session_overrides(&overrides)?.state()))
}

impl Table {
    fn take(&mut self) -> DeltaTable {
        let log = self.delta().log_store();
        std::mem::replace(self.delta_mut(), DeltaTable::new(log))
    }

    /// Compacts each partition's small files into files of about `target_bytes`.
    pub async fn optimize(&mut self, target_bytes: u64) -> Result<Optimized, TableError> {
        self.refresh().await?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| self.derr(e.into()))?))
            .build();
        let session = rewrite_session().map_err(|e| self.derr(e))?;
        let t = self.take();
        let target = NonZeroU64::new(target_bytes.max(1)).unwrap_or(NonZeroU64::MIN);
        let optimize = t
            .clone()
            .optimize()
            .with_target_size(target)
            .with_writer_properties(props)
            .with_commit_properties(crate::table::commit_properties());
        match optimize.with_session_state(session).await {
            Ok((t, m)) => {
                *self.delta_mut() = t;
                Ok(Optimized {
                    files_removed: m.num_files_removed,
                    files_added: m.num_files_added,
                    version: self.version().unwrap_or(0),
                })
            }
            Err(e) => {
                *self.delta_mut() = t;
                Err(self.derr(e))
            }
        }
    }

    /// Deletes data files that no version of the last `retain` refers to (removed by optimize
    /// or retention, and files of appends that never committed), then checkpoints and drops log
    /// entries older than the table's log retention that a checkpoint covers.
    pub async fn vacuum(&mut self, retain: Duration) -> Result<Vacuumed, TableError> {
        self.refresh().await?;
        let period = chrono::Duration::from_std(retain).unwrap_or(chrono::Duration::MAX);
        let t = self.take();
        let res = t
            .clone()
            .vacuum()
            .with_commit_properties(crate::table::commit_properties())
            .with_retention_period(period)
            // `--retain` below the table's deletedFileRetentionDuration is the operator's call
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .await;
        let files_deleted = match res {
            Ok((t, m)) => {
                *self.delta_mut() = t;
                m.files_deleted.len()
            }
            Err(e) => {
                *self.delta_mut() = t;
                return Err(self.derr(e));
            }
        };
        create_checkpoint(self.delta(), None).await.map_err(|e| self.derr(e))?;
        let log_entries_deleted = cleanup_metadata(self.delta(), None).await.map_err(|e| self.derr(e))?;
        Ok(Vacuumed { files_deleted, log_entries_deleted })
    }

    /// Removes the rows of partitions whose `column` value is before `first_kept` (a string
    /// comparison: `date` values `YYYY-MM-DD` sort as dates) in one delete commit.
    pub async fn remove_partitions_before(&mut self, column: &str, first_kept: &str) -> Result<Retained, TableError> {
        if !first_kept.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':' || c == ' ') {
            return Err(TableError::Location {
                location: self.location().to_string(),
                why: format!("bad partition bound {first_kept:?}"),
            });
        }
        self.refresh().await?;
        let old =
            |f: &crate::DataFile| f.partition.get(column).is_some_and(|v| v.as_deref().is_some_and(|v| v < first_kept));
        if !self.files()?.iter().any(old) {
            // nothing to remove: no commit
            return Ok(Retained { files_removed: 0, rows_removed: Some(0), version: self.version().unwrap_or(0) });
        }
        let session = rewrite_session().map_err(|e| self.derr(e))?;
        let t = self.take();
        let predicate = format!("\"{}\" < '{first_kept}'", column.replace('"', "\"\""));
        let delete =
            t.clone().delete().with_predicate(predicate).with_commit_properties(crate::table::commit_properties());
        match delete.with_session_state(session).await {
            Ok((t, m)) => {
                *self.delta_mut() = t;
                Ok(Retained {
                    files_removed: m.num_removed_files,
                    rows_removed: m.num_deleted_rows,
                    version: self.version().unwrap_or(0),
                })
            }
            Err(e) => {
                *self.delta_mut() = t;
                Err(self.derr(e))
            }
        }
    }
}
