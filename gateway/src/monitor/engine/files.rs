//! The refresh's first steps: which of the table's files can be placed in time (their Parquet
//! footers), whether anything changed since the last refresh, and which files are new, changed
//! or gone.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::{FileInfo, Monitor, State};
use crate::inference_log::read::check::{SkipReason, report_skip};
use crate::inference_log::read::usable_files;

/// The table's usable files, with the footers read of those not seen before.
pub(super) struct Scan {
    pub files: Vec<PathBuf>,
    /// Footers read during the scan, by path (files whose size changed or that are new).
    fresh: HashMap<PathBuf, FileInfo>,
}

/// The files of this refresh against the persisted list.
pub(super) struct FileDiff {
    /// Every usable file listed (the scan's).
    pub files: Vec<PathBuf>,
    /// The new and changed files, and the files that are gone: their windows are recomputed.
    pub changed: Vec<FileInfo>,
    /// Every file kept, by its key in the state.
    pub all: BTreeMap<String, (PathBuf, FileInfo)>,
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

impl Monitor {
    /// The key of a data file in the persisted state (its path under the table).
    fn file_key(&self, p: &Path) -> String {
        p.strip_prefix(&self.table_dir).unwrap_or(p).display().to_string()
    }

    /// Lists the table's files and reads the footers of those not seen yet; a file that cannot
    /// be placed in time is skipped (and counted).
    pub(super) fn scan_files(&self) -> Scan {
        let ts_col = &self.spec.timestamp_col;
        let mut files = usable_files(&self.table_dir);
        let mut fresh: HashMap<PathBuf, FileInfo> = HashMap::new();
        files.retain(|p| {
            if self.state.files.get(&self.file_key(p)).is_some_and(|i| i.size == size(p)) {
                return true;
            }
            match file_info(p, ts_col) {
                Ok(i) => {
                    fresh.insert(p.clone(), i);
                    true
                }
                Err((reason, e)) => {
                    report_skip(&self.table_dir, p, reason, &e);
                    false
                }
            }
        });
        Scan { files, fresh }
    }

    /// The same files, the same label files and the same spec as the last refresh.
    pub(super) fn unchanged(&self, files: &[PathBuf], labels: &[PathBuf]) -> bool {
        let same_files = files.len() == self.state.files.len()
            && files.iter().all(|p| self.state.files.get(&self.file_key(p)).is_some_and(|i| i.size == size(p)));
        let same_labels = labels.len() == self.state.label_files.len()
            && labels.iter().all(|p| self.state.label_files.get(&p.display().to_string()) == Some(&size(p)));
        let same_spec = self.state.fingerprint.starts_with(&format!("v2|{:?}|", self.spec_for_fingerprint()));
        same_files && same_labels && same_spec
    }

    /// Which files are new, changed or gone since the files the state lists.
    pub(super) fn diff_files(&self, scan: Scan, report: &mut super::RefreshReport) -> FileDiff {
        let Scan { files, mut fresh } = scan;
        let ts_col = &self.spec.timestamp_col;
        let mut changed: Vec<FileInfo> = Vec::new();
        let mut all: BTreeMap<String, (PathBuf, FileInfo)> = BTreeMap::new();
        for p in &files {
            let k = self.file_key(p);
            let info = match self.state.files.get(&k) {
                Some(i) if i.size == size(p) => i.clone(),
                _ => {
                    let i = match fresh.remove(p).map_or_else(|| file_info(p, ts_col), Ok) {
                        Ok(i) => i,
                        Err((reason, e)) => {
                            report_skip(&self.table_dir, p, reason, &e);
                            continue;
                        }
                    };
                    changed.push(i.clone());
                    report.new_files += 1;
                    i
                }
            };
            all.insert(k, (p.clone(), info));
        }
        for (k, info) in &self.state.files {
            if !all.contains_key(k) {
                changed.push(info.clone());
                report.removed_files += 1;
            }
        }
        FileDiff { files, changed, all }
    }

    /// Label files that are new or have grown since the last refresh.
    pub(super) fn new_label_files(&self, labels: &[PathBuf]) -> Vec<PathBuf> {
        labels
            .iter()
            .filter(|p| self.state.label_files.get(&p.display().to_string()) != Some(&size(p)))
            .cloned()
            .collect()
    }

    /// Records the files this refresh has read (after its outputs are written).
    pub(super) fn remember_files(&mut self, diff: FileDiff, labels: &[PathBuf]) {
        self.state.files = diff.all.into_iter().map(|(k, (_, i))| (k, i)).collect();
        for p in labels {
            self.state.label_files.insert(p.display().to_string(), size(p));
        }
    }

    /// Starts the state over for a new fingerprint (alert state is kept) and clears the outputs.
    pub(super) async fn reset_outputs(&mut self, fingerprint: String) -> Result<(), super::MonitorError> {
        let alerts = std::mem::take(&mut self.state.alerts);
        self.state = State { fingerprint, alerts, ..State::default() };
        self.tables = None;
        for d in [self.profile_dir(), self.drift_dir()] {
            crate::monitor::output::clear(&d).await?;
        }
        Ok(())
    }
}

/// Timestamp range and row count from a Parquet footer (statistics of `ts_col`), or why the
/// file cannot be placed in time.
fn file_info(path: &Path, ts_col: &str) -> Result<FileInfo, (SkipReason, String)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::statistics::Statistics;
    let unreadable = |what: &str, e: &dyn std::fmt::Display| (SkipReason::Unreadable, format!("{what}: {e}"));
    let file = std::fs::File::open(path).map_err(|e| unreadable("cannot open", &e))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let reader = SerializedFileReader::new(file).map_err(|e| unreadable("cannot read", &e))?;
    let meta = reader.metadata();
    let schema = meta.file_metadata().schema_descr();
    let idx = (0..schema.num_columns()).find(|&i| schema.column(i).name() == ts_col);
    let (mut lo, mut hi, mut rows) = (i64::MAX, i64::MIN, 0u64);
    for rg in meta.row_groups() {
        rows += rg.num_rows().max(0) as u64;
        let stats = idx.and_then(|i| rg.column(i).statistics());
        match stats {
            Some(Statistics::Int64(s)) => {
                if let (Some(a), Some(b)) = (s.min_opt(), s.max_opt()) {
                    lo = lo.min(*a);
                    hi = hi.max(*b);
                }
            }
            _ if rg.num_rows() > 0 => {
                return Err((
                    SkipReason::NoTimestampStatistics,
                    format!("no INT64 timestamp statistics for column '{ts_col}'"),
                ));
            }
            _ => {}
        }
    }
    if lo > hi {
        (lo, hi) = (0, -1);
    }
    Ok(FileInfo { size, rows, min_ts: lo, max_ts: hi })
}
