//! The files of a Delta table's latest version, from its log. Tables stay open between calls
//! (each call reads only the commits made since the last), on one runtime thread of their own,
//! so that sync and async callers alike can ask without nesting runtimes.
//!
//! A table in object storage is read through a local directory that holds copies of the files
//! of its latest version (a read-through cache, as Databricks' disk cache): a listing that
//! finds a new version syncs it with the log, downloading the files added since the last
//! (whichever process wrote them) and deleting the copies of files the log removed (compaction,
//! retention); one at the version already synced answers the copies without touching the
//! disk. Data files of a
//! Delta table never change once written, so a copy is valid as long as the log lists its file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use sluice_tables::{DataFile, Location, Table};

/// The runtime the table reads run on (one worker: reads of the log are small).
static RUNTIME: LazyLock<Option<tokio::runtime::Runtime>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("table-log")
        .enable_all()
        .build()
        .map_err(|e| tracing::error!("cannot start the table log reader: {e}"))
        .ok()
});

/// Open tables by directory.
static OPEN: LazyLock<tokio::sync::Mutex<HashMap<PathBuf, Table>>> = LazyLock::new(Default::default);

/// Remote tables by the local directory their copies are kept in.
static REMOTE: LazyLock<Mutex<HashMap<PathBuf, Location>>> = LazyLock::new(Default::default);

/// Makes `dir` the local copy of the table at `remote`: listings of `dir` list the remote
/// table's files, copied into `dir` first.
pub fn mirror(dir: &Path, remote: Location) {
    if let Ok(mut m) = REMOTE.lock() {
        m.insert(dir.to_path_buf(), remote);
    }
}

fn remote_of(dir: &Path) -> Option<Location> {
    REMOTE.lock().ok().and_then(|m| m.get(dir).cloned())
}

/// Per copy directory: the version its copies were last brought in line with, and the copies
/// (all of that version's files). A listing at the same version answers them without looking
/// at the disk; a new version (or an incomplete last sync) syncs again.
static SYNCED: LazyLock<Mutex<HashMap<PathBuf, Synced>>> = LazyLock::new(Default::default);

/// A version and the copies of its files (with what the log says of each).
type Synced = (u64, Vec<Listed>);

/// A data file: its local path (the file itself, or its copy) and what the log says of it.
pub type Listed = (PathBuf, DataFile);

fn synced(dir: &Path, version: Option<u64>) -> Option<Vec<Listed>> {
    let version = version?;
    let m = SYNCED.lock().ok()?;
    m.get(dir).filter(|(v, _)| *v == version).map(|(_, copies)| copies.clone())
}

/// When a log read last failed (warnings at most once a second).
static LAST_WARNING: Mutex<Option<Instant>> = Mutex::new(None);

/// The absolute paths of the data files of the Delta table in `dir` at its latest version,
/// oldest first (by the time each add action gives, then path); `None` when `dir` has no Delta
/// log. A log that cannot be read gives no files (and a warning): listing the directory instead
/// would show uncommitted and removed files.
pub(super) fn log_files(dir: &Path) -> Option<Vec<PathBuf>> {
    log_file_details(dir).map(|files| files.into_iter().map(|(path, _)| path).collect())
}

/// [`log_files`] with what the log says of each file (size, rows, statistics).
pub fn log_file_details(dir: &Path) -> Option<Vec<Listed>> {
    log_listing(dir, None).map(|l| l.files)
}

/// A table's files at one version, and what changed since an earlier one.
#[derive(Debug, Default)]
pub struct Listing {
    /// The version listed (`None`: a remote table nobody has written yet, or an unreadable log).
    pub version: Option<u64>,
    pub files: Vec<Listed>,
    /// What the commits after the version asked for changed, up to `version` (paths relative
    /// to the table, as [`DataFile::path`]); `None` when not asked for or not known.
    pub changes: Option<sluice_tables::Changes>,
}

/// The files of the Delta table in `dir` at its latest version (as [`log_file_details`]) and,
/// when `since` is given, what the commits after `since` changed, read from the same snapshot;
/// `None` when `dir` has no Delta log.
pub fn log_listing(dir: &Path, since: Option<u64>) -> Option<Listing> {
    let remote = remote_of(dir);
    if remote.is_none() && !dir.join("_delta_log").is_dir() {
        return None;
    }
    let rt = RUNTIME.as_ref()?;
    let key = dir.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = tx.send(files(key, remote, since).await);
    });
    match rx.recv() {
        Ok(Ok(listing)) => Some(listing),
        Ok(Err(e)) => {
            warn(dir, &e);
            Some(Listing::default())
        }
        Err(_) => Some(Listing::default()),
    }
}

async fn files(
    dir: PathBuf,
    remote: Option<Location>,
    since: Option<u64>,
) -> Result<Listing, sluice_tables::TableError> {
    let mut open = OPEN.lock().await;
    let table = match open.remove(&dir) {
        Some(mut t) => {
            t.refresh().await?;
            t
        }
        None => {
            let location = remote.clone().unwrap_or_else(|| Location::Local(dir.clone()));
            match Table::open(&location).await {
                Ok(t) => t,
                // a remote table nobody has written yet: no files
                Err(sluice_tables::TableError::NotATable { .. }) if remote.is_some() => return Ok(Listing::default()),
                Err(e) => return Err(e),
            }
        }
    };
    let mut files = table.files()?;
    // a log names its files relative to the table; anything else (an absolute path or URL, `..`)
    // would make a reader read, or a copy land, outside the table's directory
    let outside: Vec<String> = files.iter().filter(|f| !inside(&f.path)).map(|f| f.path.clone()).collect();
    if !outside.is_empty() {
        files.retain(|f| inside(&f.path));
        warn(
            &dir,
            &sluice_tables::TableError::Location {
                location: dir.display().to_string(),
                why: format!("the log names files outside the table, not read: {outside:?}"),
            },
        );
    }
    files.sort_by(|a, b| (a.modified, &a.path).cmp(&(b.modified, &b.path)));
    let version = table.version();
    let changes = match since {
        Some(from) => Some(table.changes_since(from).await),
        None => None,
    };
    let out = match (&remote, synced(&dir, version)) {
        (None, _) => Ok(Vec::new()),
        (Some(_), Some(copies)) => Ok(copies),
        (Some(_), None) => {
            let out = sync_copies(&dir, &table, &files).await;
            if let (Ok(copies), Some(v)) = (&out, version)
                && copies.len() == files.len()
                && let Ok(mut m) = SYNCED.lock()
            {
                m.insert(dir.clone(), (v, copies.clone()));
            }
            out
        }
    };
    open.insert(dir.clone(), table);
    let files = match out {
        Err(e) => return Err(e),
        Ok(copies) if remote.is_some() => copies,
        Ok(_) => files.into_iter().map(|f| (dir.join(&f.path), f)).collect(),
    };
    // changes that cannot be read (a log entry gone missing between two reads) are not known:
    // the reader compares listings instead
    let changes = changes.and_then(|c| c.map_err(|e| warn(&dir, &e)).ok());
    Ok(Listing { version, files, changes })
}

/// Whether a data file path from a log stays inside the table's directory: relative, with
/// normal components only.
fn inside(path: &str) -> bool {
    !path.is_empty()
        && !path.contains("://")
        && Path::new(path).components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Brings the copies in `dir` in line with `files` (the remote table's latest version, in log
/// order): downloads the missing ones (under a hidden name, then renamed, so a listing never
/// sees half a file), deletes copies of files the version no longer has. Answers the copies,
/// in the same order; a file that cannot be downloaded now is left out (and warned about) and
/// tried again at the next listing.
async fn sync_copies(dir: &Path, table: &Table, files: &[DataFile]) -> Result<Vec<Listed>, sluice_tables::TableError> {
    let mut out = Vec::with_capacity(files.len());
    let mut keep = std::collections::HashSet::new();
    for f in files {
        let local = dir.join(&f.path);
        keep.insert(local.clone());
        let have = std::fs::metadata(&local).map(|m| m.len() as i64 == f.size).unwrap_or(false);
        if !have && let Err(e) = download(table, f, &local).await {
            warn(dir, &e);
            continue;
        }
        out.push((local, f.clone()));
    }
    // copies of files the version no longer lists (and downloads a crash left behind)
    for p in sluice_tables::files_under(dir) {
        if !keep.contains(&p) {
            let _ = std::fs::remove_file(&p);
        }
    }
    Ok(out)
}

async fn download(table: &Table, f: &DataFile, local: &Path) -> Result<(), sluice_tables::TableError> {
    let io = |e: std::io::Error| sluice_tables::TableError::Location {
        location: local.display().to_string(),
        why: format!("cannot write the local copy: {e}"),
    };
    let parent = local.parent().unwrap_or(local);
    std::fs::create_dir_all(parent).map_err(io)?;
    let name = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.download"));
    let n = table.download(&f.path, &tmp).await?;
    if n as i64 != f.size {
        let _ = std::fs::remove_file(&tmp);
        return Err(sluice_tables::TableError::Location {
            location: local.display().to_string(),
            why: format!("downloaded {n} bytes, the log says the file has {}", f.size),
        });
    }
    std::fs::rename(&tmp, local).map_err(io)
}

fn warn(dir: &Path, e: &sluice_tables::TableError) {
    let now = Instant::now();
    if let Ok(mut last) = LAST_WARNING.lock()
        && last.is_none_or(|t| now.duration_since(t).as_secs() >= 1)
    {
        *last = Some(now);
        tracing::warn!(table = %dir.display(), "cannot read the table's Delta log; reading no files of it: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_paths_must_stay_inside_the_table() {
        assert!(super::inside("date=2026-12-06/part-00000-1.parquet"));
        for bad in ["", "../x.parquet", "date=1/../../x.parquet", "/etc/passwd", "s3://other/x.parquet", "./x"] {
            assert!(!super::inside(bad), "{bad}");
        }
    }
}
