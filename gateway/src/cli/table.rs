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
use super::args::{Output, TableCommand};

mod upkeep;

/// Runs a `table` subcommand over the tables under `data_dir`.
pub fn run(command: TableCommand, data_dir: &Path) -> ExitCode {
    let (table, q, output) = match command {
        TableCommand::Count { table, output } => (table, TableQuery::Count, output),
        TableCommand::Tail { table, n, output } => (table, TableQuery::Tail(n), output),
        TableCommand::Sql { table, query, output } => (table, TableQuery::Sql(query), output),
        TableCommand::Optimize { table, target_size } => {
            return with_location(&table, data_dir, |l| upkeep::run(upkeep::Job::Optimize(target_size), l));
        }
        TableCommand::Vacuum { table, retain } => {
            return with_location(&table, data_dir, |l| upkeep::run(upkeep::Job::Vacuum(retain), l));
        }
        TableCommand::Convert { table } => {
            return with_location(&table, data_dir, |l| upkeep::run(upkeep::Job::Convert, l));
        }
        TableCommand::Check { table } => {
            if table.starts_with("s3://") {
                eprintln!(
                    "error: `sluice table check` reads local files; for a table in object storage, check the gateway's copies under storage.cache_dir"
                );
                return ExitCode::FAILURE;
            }
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
    let location = match table_location(&table, data_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_outcome(rt.block_on(query_location(&location, &q, output)))
}

/// Prints a command's output (exit 0) or its error (exit 1).
pub(crate) fn print_outcome(r: Result<String, CliError>) -> ExitCode {
    match r {
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

/// Resolves a table argument: `s3://bucket/prefix/table` (endpoint, region and credentials
/// from the `AWS_*` environment variables), an existing directory, or `<data_dir>/<name>`.
pub fn table_location(table: &str, data_dir: &Path) -> Result<sluice_tables::Location, CliError> {
    if table.starts_with("s3://") {
        return Ok(sluice_tables::Location::parse(table, &sluice_tables::S3Options::default())?);
    }
    Ok(sluice_tables::Location::Local(table_dir(table, data_dir)))
}

fn with_location(table: &str, data_dir: &Path, f: impl FnOnce(&sluice_tables::Location) -> ExitCode) -> ExitCode {
    match table_location(table, data_dir) {
        Ok(l) => f(&l),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves a local table argument: an existing directory, or `<data_dir>/<name>`.
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
    query_location(&sluice_tables::Location::Local(dir.to_path_buf()), q, Output::Table).await
}

/// Runs a query over the table at `location` (and its labels table, when there is one) and
/// prints its rows as a table or as a JSON array of row objects (nulls left out, as arrow's JSON
/// writer does).
pub async fn query_location(
    location: &sluice_tables::Location,
    q: &TableQuery,
    output: Output,
) -> Result<String, CliError> {
    let ctx = SessionContext::new();
    match location.local_path() {
        Some(dir) => {
            register(&ctx, "t", dir).await?;
            let labels = crate::inference_log::labels::dir_of(dir);
            if labels.is_dir() {
                register(&ctx, "labels", &labels).await?;
            }
        }
        None => {
            sluice_tables::Table::open(location).await?.register(&ctx, "t", None).await?;
            let name = location.to_string();
            let name = name.rsplit('/').next().unwrap_or_default();
            match sluice_tables::Table::open(&location.sibling(&format!("{name}_labels"))).await {
                Ok(l) => l.register(&ctx, "labels", None).await?,
                Err(sluice_tables::TableError::NotATable { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let sql = match q {
        TableQuery::Count => "SELECT count(*) AS rows FROM t".to_string(),
        TableQuery::Tail(n) => format!("SELECT * FROM t ORDER BY timestamp DESC, request_id, row_index LIMIT {n}"),
        TableQuery::Sql(s) => s.clone(),
    };
    let df = ctx.sql(&sql).await.map_err(CliError::Query)?;
    let batches = df.collect().await.map_err(CliError::Query)?;
    match output {
        Output::Table => Ok(pretty_format_batches(&batches)?.to_string()),
        Output::Json => {
            let mut w = datafusion::arrow::json::ArrayWriter::new(Vec::new());
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
            let text = String::from_utf8(w.into_inner()).unwrap_or_default();
            // an empty result writes nothing at all
            Ok(if text.is_empty() { "[]".into() } else { text })
        }
    }
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
