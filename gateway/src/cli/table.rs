//! `sluice table count|tail|sql|check|optimize|vacuum|convert`: look at and look after an
//! inference table without leaving Sluice. Queries read the table's latest Delta version
//! (delta-rs' DataFusion table provider; `date` is a column), registered as `t`, and its labels
//! table (if any) as `labels`; a directory without a Delta log (Parquet written elsewhere) is
//! read as a `date`-partitioned listing. `check` lists every file of the table and its labels
//! with `OK` or the reason readers (monitor, rollouts, experiments) skip it. `optimize`,
//! `vacuum` and `convert` are in [`upkeep`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::SessionContext;

use super::CliError;
use super::args::TableCommand;

mod upkeep;

/// Runs a `table` subcommand over the tables under `data_dir`.
pub fn run(command: TableCommand, data_dir: &Path) -> ExitCode {
    let (table, q) = match command {
        TableCommand::Count { table } => (table, TableQuery::Count),
        TableCommand::Tail { table, n } => (table, TableQuery::Tail(n)),
        TableCommand::Sql { table, query } => (table, TableQuery::Sql(query)),
        TableCommand::Optimize { table, target_size } => {
            return upkeep::run(upkeep::Job::Optimize(target_size), &table_dir(&table, data_dir));
        }
        TableCommand::Vacuum { table, retain } => {
            return upkeep::run(upkeep::Job::Vacuum(retain), &table_dir(&table, data_dir));
        }
        TableCommand::Convert { table } => {
            return upkeep::run(upkeep::Job::Convert, &table_dir(&table, data_dir));
        }
        TableCommand::Check { table } => {
            return match check(&table_dir(&table, data_dir)) {
                Ok((out, ok)) => {
                    println!("{out}");
                    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let Some(rt) = super::runtime() else { return ExitCode::FAILURE };
    match rt.block_on(query(&table_dir(&table, data_dir), &q)) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What to print.
#[derive(Debug, Clone)]
pub enum TableQuery {
    Count,
    Tail(usize),
    Sql(String),
}

/// Resolves a table argument: an existing directory, or `<data_dir>/<name>`.
pub fn table_dir(table: &str, data_dir: &Path) -> PathBuf {
    let p = PathBuf::from(table);
    if p.is_dir() { p } else { data_dir.join(table) }
}

async fn register(ctx: &SessionContext, name: &str, dir: &Path) -> Result<(), CliError> {
    if dir.join("_delta_log").is_dir() {
        let t = sluice_tables::Table::open(&sluice_tables::Location::Local(dir.to_path_buf())).await?;
        return Ok(t.register(ctx, name, None).await?);
    }
    let abs = std::fs::canonicalize(dir).map_err(|source| CliError::TableMissing { dir: dir.to_path_buf(), source })?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![("date".to_string(), DataType::Utf8)]);
    let url = format!("{}/", abs.display());
    ctx.register_listing_table(name, &url, options, None, None)
        .await
        .map_err(|source| CliError::TableUnreadable { dir: dir.to_path_buf(), source })
}

/// Runs a query over the table in `dir` and returns it as a printed table.
pub async fn query(dir: &Path, q: &TableQuery) -> Result<String, CliError> {
    let ctx = SessionContext::new();
    register(&ctx, "t", dir).await?;
    let labels = crate::inference_log::labels::dir_of(dir);
    if labels.is_dir() {
        register(&ctx, "labels", &labels).await?;
    }
    let sql = match q {
        TableQuery::Count => "SELECT count(*) AS rows FROM t".to_string(),
        TableQuery::Tail(n) => format!("SELECT * FROM t ORDER BY timestamp DESC, request_id, row_index LIMIT {n}"),
        TableQuery::Sql(s) => s.clone(),
    };
    let df = ctx.sql(&sql).await.map_err(CliError::Query)?;
    let batches = df.collect().await.map_err(CliError::Query)?;
    Ok(pretty_format_batches(&batches)?.to_string())
}

/// `sluice table check`: every file of the table in `dir` and of its labels table, with `OK` or
/// why it is skipped, and whether all are OK.
pub fn check(dir: &Path) -> Result<(String, bool), CliError> {
    use crate::inference_log::read::check::check_dir;
    if !dir.is_dir() {
        return Err(CliError::NoTable { dir: dir.to_path_buf() });
    }
    let labels = crate::inference_log::labels::dir_of(dir);
    let mut out = String::new();
    let (mut total, mut bad) = (0usize, 0usize);
    for d in [dir.to_path_buf(), labels] {
        for c in check_dir(&d) {
            total += 1;
            let shown = c.path.strip_prefix(dir.parent().unwrap_or(dir)).unwrap_or(&c.path).display().to_string();
            match c.problem {
                None => out.push_str(&format!("OK    {shown}\n")),
                Some((reason, detail)) => {
                    bad += 1;
                    out.push_str(&format!("SKIP  {shown}  {}: {detail}\n", reason.label()));
                }
            }
        }
    }
    out.push_str(&format!("{total} files, {bad} skipped"));
    Ok((out, bad == 0))
}
