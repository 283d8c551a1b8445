//! Which Parquet files of a table are safe to read. One bad file (cut short by a copy, written
//! by another tool, corrupted on disk) must not fail every read of the table, so readers take
//! [`usable_files`] rather than every file.
//!
//! A file is usable when its footer loads, every column chunk lies inside the file, and its
//! schema is compatible with the table's: it has every non-nullable column of the table's
//! schema, and it merges with the table's schema and every other usable file's the way
//! DataFusion merges them (same type for the same column name). The table's schema is the
//! writer's when this process writes the table ([`expect_schema`]), else the schema most of its
//! readable files share (ties: the newest file's).
//!
//! Footers are read once per file version (path, size, modification time), outside the cache's
//! lock. Each skipped file version is counted once in
//! `sluice_table_files_skipped_total{table,reason}` and warned about at most once a second per
//! table (with the number of warnings held back).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::{Instant, SystemTime};

use datafusion::arrow::datatypes::{Schema, SchemaRef};

/// Why a file is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The footer (metadata) cannot be read, or the data it describes is not all in the file.
    Unreadable,
    /// The file's columns do not fit the table's.
    IncompatibleSchema,
    /// The monitor cannot place the file in time: no INT64 statistics for its timestamp column.
    NoTimestampStatistics,
}

impl SkipReason {
    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::Unreadable => "unreadable",
            SkipReason::IncompatibleSchema => "incompatible_schema",
            SkipReason::NoTimestampStatistics => "no_timestamp_statistics",
        }
    }
}

/// One file and what is wrong with it, if anything.
#[derive(Debug, Clone, PartialEq)]
pub struct FileCheck {
    pub path: PathBuf,
    pub problem: Option<(SkipReason, String)>,
}

/// A file version's footer: its Arrow schema, or why it cannot be read.
#[derive(Debug, Clone)]
struct Footer {
    size: u64,
    modified: Option<SystemTime>,
    schema: Result<SchemaRef, String>,
    /// Counted (and warned about) as skipped already.
    reported: bool,
}

#[derive(Debug, Default)]
struct Dir {
    files: HashMap<PathBuf, Footer>,
    last_warning: Option<Instant>,
    held_back: u64,
}

static DIRS: LazyLock<Mutex<HashMap<PathBuf, Dir>>> = LazyLock::new(Default::default);
static EXPECTED: LazyLock<Mutex<HashMap<PathBuf, SchemaRef>>> = LazyLock::new(Default::default);

/// Records the schema this process writes into table directory `dir`.
pub fn expect_schema(dir: &Path, schema: SchemaRef) {
    if let Ok(mut m) = EXPECTED.lock() {
        m.insert(dir.to_path_buf(), schema);
    }
}

/// The usable Parquet files under `dir`, oldest first; skipped ones are counted and warned about.
pub fn usable_files(dir: &Path) -> Vec<PathBuf> {
    usable_of(dir, super::list_parquet(dir))
}

/// [`usable_files`] of files listed already (a listing of `dir`'s log at one version).
pub fn usable_of(dir: &Path, files: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut out = Vec::with_capacity(files.len());
    for c in check_files(dir, files) {
        match c.problem {
            None => out.push(c.path),
            Some((reason, detail)) => report_skip(dir, &c.path, reason, &detail),
        }
    }
    out
}

/// Every Parquet file under `dir` (as [`super::list_parquet`] lists them) with its verdict.
pub fn check_dir(dir: &Path) -> Vec<FileCheck> {
    check_files(dir, super::list_parquet(dir))
}

/// The verdict on each of `files` of the table in `dir`.
fn check_files(dir: &Path, files: Vec<PathBuf>) -> Vec<FileCheck> {
    let footers = footers(dir, &files);
    let expected = EXPECTED.lock().ok().and_then(|m| m.get(dir).cloned());
    judge(&files, &footers, expected)
}

/// Counts and warns about a skipped file, once per file version (the monitor also skips files
/// it cannot place in time).
pub fn report_skip(dir: &Path, path: &Path, reason: SkipReason, detail: &str) {
    let Ok(mut dirs) = DIRS.lock() else { return };
    let d = dirs.entry(dir.to_path_buf()).or_default();
    if let Some(f) = d.files.get_mut(path) {
        if f.reported {
            return;
        }
        f.reported = true;
    }
    let table = table_label(dir);
    crate::metrics::table_file_skipped(&table, reason.label());
    let now = Instant::now();
    if d.last_warning.is_some_and(|t| now.duration_since(t).as_secs() < 1) {
        d.held_back += 1;
        return;
    }
    let held_back = std::mem::take(&mut d.held_back);
    d.last_warning = Some(now);
    tracing::warn!(
        table = %table, path = %path.display(), reason = reason.label(), held_back,
        "skipping a table file that cannot be read safely: {detail} (sluice_table_files_skipped_total; `sluice table check` lists them)"
    );
}

/// The `table` label of a directory: its name.
fn table_label(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The footers of `files`, from the cache or read now (outside the lock).
fn footers(dir: &Path, files: &[PathBuf]) -> Vec<Footer> {
    let stat = |p: &PathBuf| {
        let m = std::fs::metadata(p).ok();
        (m.as_ref().map_or(0, |m| m.len()), m.and_then(|m| m.modified().ok()))
    };
    let stats: Vec<(u64, Option<SystemTime>)> = files.iter().map(stat).collect();
    let cached: Vec<Option<Footer>> = match DIRS.lock() {
        Ok(mut dirs) => {
            let d = dirs.entry(dir.to_path_buf()).or_default();
            // forget files that are gone
            let listed: std::collections::HashSet<&PathBuf> = files.iter().collect();
            d.files.retain(|p, _| listed.contains(p));
            files
                .iter()
                .zip(&stats)
                .map(|(p, (size, modified))| {
                    d.files.get(p).filter(|f| f.size == *size && f.modified == *modified).cloned()
                })
                .collect()
        }
        Err(_) => vec![None; files.len()],
    };
    let mut out = Vec::with_capacity(files.len());
    let mut fresh = Vec::new();
    for ((p, (size, modified)), c) in files.iter().zip(&stats).zip(cached) {
        let f = c.unwrap_or_else(|| {
            let f = Footer { size: *size, modified: *modified, schema: read_footer(p), reported: false };
            fresh.push((p.clone(), f.clone()));
            f
        });
        out.push(f);
    }
    if !fresh.is_empty()
        && let Ok(mut dirs) = DIRS.lock()
    {
        let d = dirs.entry(dir.to_path_buf()).or_default();
        d.files.extend(fresh);
    }
    out
}

/// The Arrow schema in a file's footer, after checking that the data it describes is there.
fn read_footer(path: &Path) -> Result<SchemaRef, String> {
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file.metadata().map_err(|e| format!("cannot stat: {e}"))?.len();
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| e.to_string())?;
    for (i, rg) in meta.metadata().row_groups().iter().enumerate() {
        for c in rg.columns() {
            let (start, n) = c.byte_range();
            if start.checked_add(n).is_none_or(|end| end > len) {
                return Err(format!(
                    "row group {i} column '{}' lies beyond the end of the file ({len} bytes)",
                    c.column_path()
                ));
            }
        }
    }
    Ok(meta.schema().clone())
}

/// A schema without its metadata, as DataFusion reads Parquet schemas.
fn plain(s: &Schema) -> Schema {
    Schema::new(s.fields().clone())
}

/// The schema most readable files share; ties go to the newest (files are sorted oldest first).
fn majority(footers: &[Footer]) -> Option<SchemaRef> {
    let mut groups: Vec<(Schema, SchemaRef, usize)> = Vec::new();
    for f in footers.iter().rev() {
        let Ok(s) = &f.schema else { continue };
        let p = plain(s);
        match groups.iter_mut().find(|g| g.0 == p) {
            Some(g) => g.2 += 1,
            None => groups.push((p, s.clone(), 1)),
        }
    }
    let mut best: Option<&(Schema, SchemaRef, usize)> = None;
    for g in &groups {
        if best.is_none_or(|b| g.2 > b.2) {
            best = Some(g);
        }
    }
    best.map(|b| b.1.clone())
}

/// Verdicts for `files` (sorted oldest first) given their footers, newest first against the
/// schema merged so far, so that of two conflicting files the older one is skipped.
fn judge(files: &[PathBuf], footers: &[Footer], expected: Option<SchemaRef>) -> Vec<FileCheck> {
    let reference = expected.or_else(|| majority(footers));
    let mut merged = reference.as_deref().map(plain);
    let mut out: Vec<FileCheck> = Vec::with_capacity(files.len());
    for (path, f) in files.iter().zip(footers).rev() {
        let problem = match &f.schema {
            Err(e) => Some((SkipReason::Unreadable, e.clone())),
            Ok(s) => match (&reference, &merged) {
                (Some(r), Some(m)) => match compatible(r, m, s) {
                    Ok(next) => {
                        merged = Some(next);
                        None
                    }
                    Err(e) => Some((SkipReason::IncompatibleSchema, e)),
                },
                _ => None,
            },
        };
        out.push(FileCheck { path: path.clone(), problem });
    }
    out.reverse();
    out
}

/// Whether a file with schema `file` fits a table with schema `table`, whose usable files so far
/// merge into `merged`; returns the merge with it.
fn compatible(table: &Schema, merged: &Schema, file: &Schema) -> Result<Schema, String> {
    for t in table.fields() {
        match file.field_with_name(t.name()) {
            Err(_) if !t.is_nullable() => {
                return Err(format!("it has no column '{}', which the table requires", t.name()));
            }
            Ok(f) if f.data_type() != t.data_type() => {
                return Err(format!("column '{}' is {}, the table's is {}", t.name(), f.data_type(), t.data_type()));
            }
            _ => {}
        }
    }
    Schema::try_merge([merged.clone(), plain(file)]).map_err(|e| format!("its columns conflict with the table's: {e}"))
}

#[cfg(test)]
mod tests;
