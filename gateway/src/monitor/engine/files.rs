//! The refresh's first steps: the table's files at its latest version and which of them can be
//! placed in time (their Parquet footers), whether anything changed since the last refresh, and
//! which files are new, rewritten or gone.
//!
//! A Delta table's log says what each commit since the last processed version did: appends add
//! files with new rows, deletes (retention) remove files with their rows, and rewrites (optimize)
//! replace files by others holding the same rows. The windows of new and removed files are
//! recomputed; a rewrite of files already read is a rename (the new files' footers are read for
//! their time ranges, their rows are not, no window is recomputed). Whatever the log cannot
//! vouch for (no version yet, a commit no longer in the log, a schema change, a plain-Parquet
//! directory, a file skipped before) is compared file by file with the state instead, which is
//! never wrong, only slower.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use sluice_tables::Rewrite;

use super::{FileInfo, Monitor, State};
use crate::inference_log::read::check::{SkipReason, report_skip};
use crate::inference_log::read::{log_listing, usable_files, usable_of};

/// A table's usable files at one version, and the rewrites since the last refresh's version.
pub(super) struct Listing {
    pub files: Vec<PathBuf>,
    version: Option<u64>,
    renames: Renames,
}

/// The table's usable files, with the footers read of those not seen before.
pub(super) struct Scan {
    listing: Listing,
    /// Footers read during the scan, by path (files whose size changed or that are new).
    fresh: HashMap<PathBuf, FileInfo>,
}

impl Scan {
    pub fn files(&self) -> &[PathBuf] {
        &self.listing.files
    }
}

/// The files of this refresh against the persisted list.
pub(super) struct FileDiff {
    /// Every usable file listed (the scan's).
    pub files: Vec<PathBuf>,
    /// The new and changed files, and the files that are gone: their windows are recomputed.
    pub changed: Vec<FileInfo>,
    /// Every file kept, by its key in the state.
    pub all: BTreeMap<String, (PathBuf, FileInfo)>,
    version: Option<u64>,
}

/// Files that rewrites put in place of files already read, with the same rows, and the files
/// they replaced (paths relative to the table).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Renames {
    pub added: HashSet<String>,
    pub removed: HashSet<String>,
}

/// Which of `rewrites` (in log order) only replaced files already read (`read`, or the output
/// of an earlier such rewrite). One that folds in a file not read yet (appended since the last
/// refresh, or skipped) is not a rename: its outputs count as new files and the files it
/// replaced as gone.
pub(super) fn renames(rewrites: &[Rewrite], read: impl Fn(&str) -> bool) -> Renames {
    let mut r = Renames::default();
    for w in rewrites {
        let all_read = w.removed.iter().all(|p| r.added.contains(p) || (read(p) && !r.removed.contains(p)));
        if w.removed.is_empty() || !all_read {
            continue;
        }
        for p in &w.removed {
            if !r.added.remove(p) {
                r.removed.insert(p.clone());
            }
        }
        r.added.extend(w.added.iter().cloned());
    }
    r
}

/// The usable files of the table in `dir`, the version listed, and the rewrites since version
/// `since` as renames of files `read` (none when the log cannot tell).
fn listing(dir: &Path, since: Option<u64>, read: impl Fn(&str) -> bool) -> Listing {
    match log_listing(dir, since) {
        Some(l) => {
            let renames = match l.changes {
                Some(c) if !c.restart => renames(&c.rewrites, read),
                _ => Renames::default(),
            };
            let files = usable_of(dir, l.files.into_iter().map(|(p, _)| p).collect());
            Listing { files, version: l.version, renames }
        }
        None => Listing { files: usable_files(dir), version: None, renames: Renames::default() },
    }
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The key of a file in `dir` (its path under `dir`).
fn key_in(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir).unwrap_or(p).display().to_string()
}

impl Monitor {
    /// The key of a data file in the persisted state (its path under the table).
    fn file_key(&self, p: &Path) -> String {
        key_in(&self.table_dir, p)
    }

    /// Lists the table's files and reads the footers of those not seen yet; a file that cannot
    /// be placed in time is skipped (and counted).
    pub(super) fn scan_files(&self) -> Scan {
        let ts_col = &self.spec.timestamp_col;
        let mut listing = listing(&self.table_dir, self.state.table_version, |k| self.state.files.contains_key(k));
        let mut fresh: HashMap<PathBuf, FileInfo> = HashMap::new();
        listing.files.retain(|p| {
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
        Scan { listing, fresh }
    }

    /// The key of a label file in the persisted state: its path under the labels table, the
    /// same on every replica (their local copies live in different directories).
    fn label_key(&self, p: &Path) -> String {
        key_in(self.labels_dir.as_deref().unwrap_or(Path::new("")), p)
    }

    /// The labels table's usable files (none without one).
    pub(super) fn label_files(&self) -> Listing {
        match self.labels_dir.as_deref() {
            Some(dir) => listing(dir, self.state.labels_version, |k| {
                self.state.label_files.contains_key(&key_in(dir, &dir.join(k)))
            }),
            None => Listing { files: Vec::new(), version: None, renames: Renames::default() },
        }
    }

    /// The same files, the same label files and the same spec as the last refresh.
    pub(super) fn unchanged(&self, files: &[PathBuf], labels: &[PathBuf]) -> bool {
        let same_files = files.len() == self.state.files.len()
            && files.iter().all(|p| self.state.files.get(&self.file_key(p)).is_some_and(|i| i.size == size(p)));
        let same_labels = labels.len() == self.state.label_files.len()
            && labels.iter().all(|p| self.state.label_files.get(&self.label_key(p)) == Some(&size(p)));
        let same_spec = self.state.fingerprint.starts_with(&format!("v2|{:?}|", self.spec_for_fingerprint()));
        same_files && same_labels && same_spec
    }

    /// Records that nothing changed up to the listed versions.
    pub(super) fn remember_versions(&mut self, scan: &Scan, labels: &Listing) {
        self.state.table_version = scan.listing.version;
        self.state.labels_version = labels.version;
    }

    /// Which files are new, rewritten or gone since the files the state lists.
    pub(super) fn diff_files(&self, scan: Scan, report: &mut super::RefreshReport) -> FileDiff {
        let Scan { listing: Listing { files, version, renames }, mut fresh } = scan;
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
                    if renames.added.contains(&k) {
                        report.rewritten_files += 1;
                    } else {
                        changed.push(i.clone());
                        report.new_files += 1;
                    }
                    i
                }
            };
            all.insert(k, (p.clone(), info));
        }
        for (k, info) in &self.state.files {
            if !all.contains_key(k) && !renames.removed.contains(k) {
                changed.push(info.clone());
                report.removed_files += 1;
            }
        }
        FileDiff { files, changed, all, version }
    }

    /// Label files that are new or have grown since the last refresh (not those a rewrite put
    /// in place of label files already read).
    pub(super) fn new_label_files(&self, labels: &Listing) -> Vec<PathBuf> {
        let dir = self.labels_dir.as_deref().unwrap_or(Path::new(""));
        labels
            .files
            .iter()
            .filter(|p| self.state.label_files.get(&self.label_key(p)) != Some(&size(p)))
            .filter(|p| !labels.renames.added.contains(&key_in(dir, p)))
            .cloned()
            .collect()
    }

    /// Records the files this refresh has read (after its outputs are written), and the
    /// versions they are of.
    pub(super) fn remember_files(&mut self, diff: FileDiff, labels: &Listing) {
        self.state.files = diff.all.into_iter().map(|(k, (_, i))| (k, i)).collect();
        self.state.table_version = diff.version;
        self.state.label_files = labels.files.iter().map(|p| (self.label_key(p), size(p))).collect();
        self.state.labels_version = labels.version;
    }

    /// Starts the state over for a new fingerprint (alert state is kept) and clears the outputs.
    pub(super) async fn reset_outputs(&mut self, fingerprint: String) -> Result<(), super::MonitorError> {
        let alerts = std::mem::take(&mut self.state.alerts);
        self.state = State { fingerprint, alerts, ..State::default() };
        self.tables = None;
        for kind in ["profile", "drift"] {
            crate::monitor::output::clear(&self.metric_location(kind)).await?;
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
