//! The files of a local Delta table's latest version, from its log. Tables stay open between
//! calls (each call reads only the commits made since the last), on one runtime thread of their
//! own, so that sync and async callers alike can ask without nesting runtimes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use sluice_tables::{Location, Table};

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

/// When a log read last failed (warnings at most once a second).
static LAST_WARNING: Mutex<Option<Instant>> = Mutex::new(None);

/// The absolute paths of the data files of the Delta table in `dir` at its latest version,
/// oldest first (by the time each add action gives, then path); `None` when `dir` has no Delta log. A log that cannot be read gives no files (and a
/// warning): listing the directory instead would show uncommitted and removed files.
pub(super) fn log_files(dir: &Path) -> Option<Vec<PathBuf>> {
    if !dir.join("_delta_log").is_dir() {
        return None;
    }
    let rt = RUNTIME.as_ref()?;
    let key = dir.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = tx.send(files(key).await);
    });
    match rx.recv() {
        Ok(Ok(files)) => Some(files),
        Ok(Err(e)) => {
            warn(dir, &e);
            Some(Vec::new())
        }
        Err(_) => Some(Vec::new()),
    }
}

async fn files(dir: PathBuf) -> Result<Vec<PathBuf>, sluice_tables::TableError> {
    let mut open = OPEN.lock().await;
    let table = match open.remove(&dir) {
        Some(mut t) => {
            t.refresh().await?;
            t
        }
        None => Table::open(&Location::Local(dir.clone())).await?,
    };
    let mut files = table.files()?;
    files.sort_by(|a, b| (a.modified, &a.path).cmp(&(b.modified, &b.path)));
    let out: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f.path)).collect();
    open.insert(dir, table);
    Ok(out)
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
