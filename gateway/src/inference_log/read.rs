//! Reading inference tables back (the monitor, experiment analysis and rollout guardrails): the
//! files of a table's current version, a DataFusion session that reads them reproducibly, and
//! the join of each row with its latest label. Readers list a table with [`usable_files`], which
//! skips (and counts) files that cannot be read safely ([`check`]).
//!
//! A Delta table's files are the ones its log lists at the latest version (never a file being
//! uploaded, or one compaction or retention removed); a directory without a log (Parquet
//! written by another tool) is listed as it is.

use std::path::{Path, PathBuf};

use datafusion::error::DataFusionError;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

pub mod check;
mod delta;
pub use check::{expect_schema, usable_files, usable_of};
pub use delta::{Listing, log_file_details, log_listing, mirror};

/// The data files of the table in `dir`, oldest first, whether readable or not (readers want
/// [`usable_files`]): a Delta table's from its log (in the order written), else the Parquet
/// files under `dir` sorted by path (recursively; hidden temporary files skipped).
pub fn list_parquet(dir: &Path) -> Vec<PathBuf> {
    if let Some(files) = delta::log_files(dir) {
        return files;
    }
    let hidden = |p: &PathBuf| {
        p.strip_prefix(dir).is_ok_and(|r| r.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.')))
    };
    let mut out: Vec<PathBuf> = sluice_tables::files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet") && !hidden(p))
        .collect();
    out.sort();
    out
}

/// The request and client request ids of the newest rows of the table in `dir` (newest files
/// first, at most `limit`), for a table that opens again to know what it logged before.
/// Unreadable files are skipped.
pub fn recent_ids(dir: &Path, limit: usize) -> Vec<String> {
    ids_in(list_parquet(dir).into_iter().rev(), limit)
}

/// The request and client request ids in `files`, in that order, until `limit` are read.
/// Unreadable files are skipped.
pub fn ids_in(files: impl Iterator<Item = PathBuf>, limit: usize) -> Vec<String> {
    use datafusion::arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for file in files {
        let Ok(f) = std::fs::File::open(&file) else { continue };
        let Ok(builder) = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f) else { continue };
        let schema = builder.parquet_schema();
        let wanted: Vec<usize> = (0..schema.num_columns())
            .filter(|&i| matches!(schema.column(i).name(), "request_id" | "client_request_id"))
            .collect();
        let mask = parquet::arrow::ProjectionMask::leaves(schema, wanted);
        let Ok(reader) = builder.with_projection(mask).build() else { continue };
        for batch in reader.flatten() {
            for col in batch.columns() {
                let Some(strings) = col.as_string_opt::<i32>() else { continue };
                for i in 0..strings.len() {
                    if strings.is_valid(i) {
                        out.push(strings.value(i).to_string());
                    }
                }
            }
        }
        if out.len() >= limit {
            break;
        }
    }
    out
}

/// A session on one partition (results do not depend on scheduling), plain (non-view) strings,
/// within the analysis memory limit (`server.analysis_memory_bytes`, [`crate::analysis`]).
pub fn new_ctx() -> SessionContext {
    let mut cfg = SessionConfig::new().with_target_partitions(1).with_batch_size(8192);
    cfg.options_mut().execution.parquet.schema_force_view_types = false;
    crate::analysis::session(cfg)
}

/// Registers `files` as table `name`.
pub async fn register_files(ctx: &SessionContext, name: &str, files: &[PathBuf]) -> Result<(), DataFusionError> {
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let df = ctx.read_parquet(paths, ParquetReadOptions::default()).await?;
    ctx.register_table(name, df.into_view())?;
    Ok(())
}

/// SQL selecting every row of table `t` with `label` and `label_value` from table `labels`: the
/// latest label posted for its `request_id`, else for its `client_request_id` (when `t` has
/// that column).
pub fn labelled_sql(has_client_request_id: bool) -> String {
    let latest = |key: &str| {
        format!(
            "SELECT {key} AS __id, last_value(label ORDER BY \"timestamp\") AS __l, \
             last_value(label_value ORDER BY \"timestamp\") AS __lv FROM labels WHERE {key} IS NOT NULL GROUP BY {key}"
        )
    };
    let client = if has_client_request_id {
        format!("LEFT JOIN ({}) lc ON t.client_request_id = lc.__id", latest("client_request_id"))
    } else {
        "LEFT JOIN (SELECT CAST(NULL AS VARCHAR) AS __id, CAST(NULL AS VARCHAR) AS __l, CAST(NULL AS DOUBLE) AS __lv) lc ON FALSE".to_string()
    };
    format!(
        "SELECT t.*, coalesce(lr.__l, lc.__l) AS label, coalesce(lr.__lv, lc.__lv) AS label_value FROM t \
         LEFT JOIN ({}) lr ON t.request_id = lr.__id {client}",
        latest("request_id")
    )
}

/// Registers `t` (the table's files), `labels` (when there are label files) and the view `v`:
/// every row of `t` with `label` and `label_value` (NULL where none was posted).
pub async fn register_labelled(
    ctx: &SessionContext,
    files: &[PathBuf],
    labels: &[PathBuf],
) -> Result<(), DataFusionError> {
    register_files(ctx, "t", files).await?;
    let t_schema = ctx.table("t").await?.schema().as_arrow().clone();
    let has = |c: &str| t_schema.field_with_name(c).is_ok();
    let sql = if !labels.is_empty() && !has("label") {
        register_files(ctx, "labels", labels).await?;
        labelled_sql(has("client_request_id"))
    } else if !has("label") {
        "SELECT t.*, CAST(NULL AS VARCHAR) AS label, CAST(NULL AS DOUBLE) AS label_value FROM t".to_string()
    } else {
        "SELECT * FROM t".to_string()
    };
    let df = ctx.sql(&sql).await?;
    ctx.register_table("v", df.into_view())?;
    Ok(())
}
