//! `sluice table optimize|vacuum|convert`: compaction, removal of unreferenced files, and the
//! one-time conversion of a plain-Parquet table directory into a Delta table.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::SessionContext;
use sluice_tables::{Location, Table, TableSpec};

use crate::cli::CliError;
use crate::inference_log::CHECKPOINT_INTERVAL;

/// What to do to a table.
#[derive(Debug, Clone, Copy)]
pub enum Job {
    Optimize(u64),
    Vacuum(Duration),
    Convert,
}

pub fn run(job: Job, table: &Location) -> ExitCode {
    let Some(rt) = super::super::runtime() else { return ExitCode::FAILURE };
    super::print_outcome(rt.block_on(go(job, table)))
}

async fn go(job: Job, loc: &Location) -> Result<String, CliError> {
    match job {
        Job::Optimize(target) => {
            let mut t = Table::open(loc).await?;
            let o = t.optimize(target).await?;
            Ok(format!("{loc}: {} files compacted into {} (version {})", o.files_removed, o.files_added, o.version))
        }
        Job::Vacuum(retain) => {
            let mut t = Table::open(loc).await?;
            let v = t.vacuum(retain).await?;
            Ok(format!(
                "{loc}: {} unreferenced files deleted, {} old log entries removed",
                v.files_deleted, v.log_entries_deleted
            ))
        }
        Job::Convert => match loc.local_path() {
            Some(dir) => convert(dir).await,
            None => Err(CliError::Convert {
                dir: loc.to_string().into(),
                why: "convert works on a local directory (tables in object storage were never plain Parquet)".into(),
            }),
        },
    }
}

/// Rewrites the plain Parquet files under `dir` as one Delta commit (unsigned columns become
/// `INT`, which Delta and Spark accept), then removes them. Run it with the gateway stopped.
/// Interrupted, it leaves either the old files alone or a Delta table beside old files that no
/// reader sees (`vacuum` deletes them).
async fn convert(dir: &Path) -> Result<String, CliError> {
    let bad = |why: String| CliError::Convert { dir: dir.to_path_buf(), why };
    if dir.join("_delta_log").is_dir() {
        return Err(bad("already a Delta table".into()));
    }
    let old = crate::inference_log::read::list_parquet(dir);
    if old.is_empty() {
        return Err(bad("no Parquet files to convert".into()));
    }
    let ctx = SessionContext::new();
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![("date".to_string(), DataType::Utf8)]);
    let abs = std::fs::canonicalize(dir).map_err(|e| bad(e.to_string()))?;
    ctx.register_listing_table("t", &format!("{}/", abs.display()), options, None, None)
        .await
        .map_err(|source| CliError::TableUnreadable { dir: dir.to_path_buf(), source })?;
    let batches = ctx.table("t").await.map_err(CliError::Query)?.collect().await.map_err(CliError::Query)?;
    let batches: Vec<RecordBatch> = batches.iter().map(signed).collect::<Result<_, _>>()?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let Some(first) = batches.first() else {
        return Err(bad("the files hold no rows".into()));
    };
    let spec = TableSpec {
        schema: first.schema(),
        partition_by: vec!["date".into()],
        checkpoint_interval: CHECKPOINT_INTERVAL,
    };
    let mut t = Table::open_or_create(&Location::Local(dir.to_path_buf()), &spec).await?;
    let version = t.append(&batches).await?;
    let mut removed = 0;
    for f in &old {
        if std::fs::remove_file(f).is_ok() {
            removed += 1;
        }
    }
    Ok(format!(
        "{}: {rows} rows from {} files converted to a Delta table (version {version}); {removed} old files removed",
        dir.display(),
        old.len()
    ))
}

/// `b` with unsigned integer columns cast to signed ones (`status_code` and `batch_size` to
/// `Int32`, as the gateway writes them now) and `date` last.
fn signed(b: &RecordBatch) -> Result<RecordBatch, CliError> {
    let mut fields: Vec<Field> = Vec::new();
    let mut cols = Vec::new();
    let mut date = None;
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        let to = match f.data_type() {
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32
                if matches!(f.name().as_str(), "status_code" | "batch_size") =>
            {
                Some(DataType::Int32)
            }
            DataType::UInt8 | DataType::UInt16 => Some(DataType::Int32),
            DataType::UInt32 | DataType::UInt64 => Some(DataType::Int64),
            _ => None,
        };
        let (field, col) = match to {
            Some(t) => (Field::new(f.name(), t.clone(), f.is_nullable()), cast(c, &t)?),
            None => (f.as_ref().clone(), c.clone()),
        };
        if f.name() == "date" {
            date = Some((field.with_nullable(false), col));
        } else {
            fields.push(field);
            cols.push(col);
        }
    }
    if let Some((f, c)) = date {
        fields.push(f);
        cols.push(c);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}
