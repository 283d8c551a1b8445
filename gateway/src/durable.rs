//! Durable file writes, shared by every file Sluice publishes or persists: inference-table
//! parts, monitor metric tables, monitor state and rollout state.
//!
//! [`write_atomic`] writes a hidden temporary file in the destination's directory, fsyncs it,
//! renames it over the destination and fsyncs the directory. A reader, or a restart after a
//! crash or a power cut, sees the old file or the new one, never a torn one.
//!
//! JSON state files also keep their previous good version beside them (`<name>.prev`):
//! [`save_json`] copies the current file there before replacing it, if the current one still
//! loads, and [`load_json`] falls back to it, with a warning and a count in
//! `sluice_state_load_failures_total{kind,outcome}`, when the current one is torn or corrupt
//! (a disk that lied about a flush, a copy cut short, a hand edit).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically and durably (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with `write` filling the temporary file (e.g. a Parquet writer).
/// Creates the directory if needed. On any error the temporary file is removed and the
/// destination is left as it was.
pub fn write_atomic_with<T>(path: &Path, write: impl FnOnce(&mut File) -> io::Result<T>) -> io::Result<T> {
    let dir = parent(path);
    std::fs::create_dir_all(dir)?;
    let tmp = temp_path(path);
    let written = (|| {
        let mut file = File::create(&tmp)?;
        let out = write(&mut file)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        Ok(out)
    })();
    match written {
        Ok(out) => {
            sync_dir(dir)?;
            Ok(out)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The directory of `path` (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.<name>.<pid>-<seq>.tmp` beside `path`: hidden, so table listings never see it, and unique
/// per write, so two writers never share one.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    parent(path).join(format!(".{name}.{}-{seq}.tmp", std::process::id()))
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// `<path>.prev`: the previous good version of a state file.
pub fn prev_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".prev");
    PathBuf::from(s)
}

/// Saves `value` as pretty JSON at `path`, keeping the version it replaces as `<path>.prev`
/// when that version still loads as a `T` (a torn file never replaces a good `.prev`).
pub fn save_json<T: Serialize + DeserializeOwned>(path: &Path, value: &T) -> io::Result<()> {
    let body = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    if let Ok(current) = std::fs::read(path)
        && current != body
        && serde_json::from_slice::<T>(&current).is_ok()
    {
        write_atomic(&prev_path(path), &current)?;
    }
    write_atomic(path, &body)
}

/// What [`load_json`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded<T> {
    /// No state file: a fresh start.
    Missing,
    /// The state file.
    Current(T),
    /// The state file was unusable (the reason); this is its previous version.
    Previous(T, String),
    /// Neither the state file nor its previous version could be loaded (the reasons).
    Lost(String),
}

impl<T> Loaded<T> {
    /// The state, if any version of it loaded.
    pub fn into_option(self) -> Option<T> {
        match self {
            Loaded::Current(t) | Loaded::Previous(t, _) => Some(t),
            Loaded::Missing | Loaded::Lost(_) => None,
        }
    }
}

/// Loads the JSON state file at `path`, falling back to `<path>.prev` when it is torn or
/// corrupt. Warns and counts (`kind`: what the state is, e.g. `monitor`) whenever the current
/// file cannot be used. A missing file is a fresh start, not a failure: deleting a state file
/// resets it, and its `.prev` is not brought back.
pub fn load_json<T: DeserializeOwned>(path: &Path, kind: &'static str) -> Loaded<T> {
    let current = match std::fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => Err(e.to_string()),
        Ok(bytes) => serde_json::from_slice::<T>(&bytes).map_err(|e| e.to_string()),
    };
    let why = match current {
        Ok(t) => return Loaded::Current(t),
        Err(why) => why,
    };
    let prev = prev_path(path);
    let previous = std::fs::read(&prev)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<T>(&b).map_err(|e| e.to_string()));
    match previous {
        Ok(t) => {
            crate::metrics::state_load_failure(kind, "previous");
            tracing::warn!(kind, path = %path.display(), "state file is unusable ({why}); using its previous version {}", prev.display());
            Loaded::Previous(t, why)
        }
        Err(prev_why) => {
            crate::metrics::state_load_failure(kind, "lost");
            tracing::error!(kind, path = %path.display(), "state file is unusable ({why}) and so is its previous version ({prev_why}); starting without it");
            Loaded::Lost(format!("{why}; previous version: {prev_why}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct S {
        n: u32,
        names: Vec<String>,
    }

    fn s(n: u32) -> S {
        S { n, names: vec!["a".into(), "b".into()] }
    }

    fn visible(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.bin");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(visible(&dir.path().join("sub")), vec!["x.bin".to_string()]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        write_atomic(&path, b"old").unwrap();
        let r = write_atomic_with(&path, |f| {
            f.write_all(b"half")?;
            Err::<(), _>(io::Error::other("disk full"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(visible(dir.path()), vec!["x.bin".to_string()]);
    }

    #[test]
    fn write_atomic_reports_an_unwritable_directory() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        assert!(write_atomic(&blocker.join("x.json"), b"{}").is_err());
    }

    #[test]
    fn save_json_keeps_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save_json(&path, &s(1)).unwrap();
        assert!(!prev_path(&path).exists(), "nothing to keep on the first save");
        save_json(&path, &s(2)).unwrap();
        assert_eq!(load_json::<S>(&path, "test"), Loaded::Current(s(2)));
        let prev: S = serde_json::from_slice(&std::fs::read(prev_path(&path)).unwrap()).unwrap();
        assert_eq!(prev, s(1));
    }

    #[test]
    fn a_torn_state_file_falls_back_to_its_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save_json(&path, &s(1)).unwrap();
        save_json(&path, &s(2)).unwrap();
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        assert!(matches!(load_json::<S>(&path, "test"), Loaded::Previous(p, _) if p == s(1)));
        // the next save must not rotate the torn file over the good previous version
        save_json(&path, &s(3)).unwrap();
        let prev: S = serde_json::from_slice(&std::fs::read(prev_path(&path)).unwrap()).unwrap();
        assert_eq!(prev, s(1));
        assert_eq!(load_json::<S>(&path, "test"), Loaded::Current(s(3)));
    }

    #[test]
    fn missing_and_lost_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(load_json::<S>(&path, "test"), Loaded::Missing);
        std::fs::write(&path, b"{\"n\": 1, \"na").unwrap();
        assert!(matches!(load_json::<S>(&path, "test"), Loaded::Lost(_)));
        std::fs::write(prev_path(&path), b"").unwrap();
        assert!(matches!(load_json::<S>(&path, "test"), Loaded::Lost(_)));
        // a deleted state file is a reset: its previous version is not brought back
        save_json(&path, &s(1)).unwrap();
        save_json(&path, &s(2)).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(load_json::<S>(&path, "test"), Loaded::Missing);
    }
}
