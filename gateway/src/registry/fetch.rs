//! Models from object storage (`runtime.model_repository = "s3://bucket/prefix"`): before a
//! config's models load, every version it names is copied into the local cache
//! (`<data_dir>/_model_cache/<name>/<version>/`) and checked, then loaded from there as from a
//! local repository.
//!
//! A directory is copied as its `SHA256SUMS` lists it (`<hex digest>  <file name>`, as
//! `sha256sum * > SHA256SUMS` writes it): the model's directory (its `manifest.toml`) and each
//! version's (its `model.onnx`, and a baseline if there is one). Every file is downloaded under
//! a hidden name, its digest compared, and only then renamed into place; a directory is marked
//! done (`.verified`) once all its files are. A version in the store is immutable, as in a local
//! repository: publish changes as a new version.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Largest `SHA256SUMS` read.
const MAX_SUMS_BYTES: u64 = 1 << 20;
/// Files one `SHA256SUMS` may list.
const MAX_FILES: usize = 64;
/// The mark of a cache directory whose files were all copied and checked (here and by
/// [`super::mlflow`]).
pub(super) const DONE: &str = ".verified";

/// Why a model could not be copied from the store.
#[derive(Debug, thiserror::Error)]
#[error("model repository {location}: {path}: {why}")]
pub struct FetchError {
    pub location: String,
    pub path: String,
    pub why: String,
}

/// Copies and checks every model version `config` names that the cache lacks (nothing to do
/// for a local repository).
pub async fn fetch(config: &Config) -> Result<(), FetchError> {
    let Some(location) = &config.runtime.model_store else { return Ok(()) };
    let (store, prefix) = location.object_store().map_err(|e| FetchError {
        location: location.to_string(),
        path: String::new(),
        why: e.to_string(),
    })?;
    let f = Fetcher { store, prefix, cache: config.runtime.model_repository.clone(), location: location.to_string() };
    let mut names: Vec<&String> = config.versions.keys().map(|(n, _)| n).collect();
    names.dedup();
    for name in names {
        f.dir(&[name.as_str()]).await?;
    }
    for (name, version) in config.versions.keys() {
        f.dir(&[name.as_str(), &version.to_string()]).await?;
    }
    Ok(())
}

struct Fetcher {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    cache: PathBuf,
    location: String,
}

impl Fetcher {
    fn err(&self, path: &str, why: impl std::fmt::Display) -> FetchError {
        FetchError { location: self.location.clone(), path: path.to_string(), why: why.to_string() }
    }

    /// Copies the directory `parts` (of the store, into the cache) as its `SHA256SUMS` lists it.
    async fn dir(&self, parts: &[&str]) -> Result<(), FetchError> {
        let local = parts.iter().fold(self.cache.clone(), |p, part| p.join(part));
        if local.join(DONE).is_file() {
            return Ok(());
        }
        let remote = parts.iter().fold(self.prefix.clone(), |p, part| p.join(*part));
        let sums_path = remote.clone().join("SHA256SUMS");
        let shown = sums_path.to_string();
        let got = self.store.get(&sums_path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => self.err(
                &shown,
                "missing: each model and version directory in object storage lists its files with their SHA-256 \
                 (`sha256sum * > SHA256SUMS`)",
            ),
            e => self.err(&shown, e),
        })?;
        if got.meta.size > MAX_SUMS_BYTES {
            return Err(self.err(&shown, format!("{} bytes is not a checksum list", got.meta.size)));
        }
        let text = got.bytes().await.map_err(|e| self.err(&shown, e))?;
        let sums = parse_sums(&String::from_utf8_lossy(&text)).map_err(|why| self.err(&shown, why))?;
        std::fs::create_dir_all(&local).map_err(|e| self.err(&local.display().to_string(), e))?;
        for (digest, file) in &sums {
            self.file(&remote.clone().join(file.as_str()), &local.join(file), digest).await?;
        }
        std::fs::write(local.join(DONE), b"").map_err(|e| self.err(&local.display().to_string(), e))?;
        tracing::info!(from = %remote, to = %local.display(), files = sums.len(), "model files copied and checked");
        Ok(())
    }

    /// Downloads `remote` to `local` through a hidden file, checking its SHA-256.
    async fn file(&self, remote: &ObjectPath, local: &Path, digest: &str) -> Result<(), FetchError> {
        let shown = remote.to_string();
        let tmp = local
            .with_file_name(format!(".{}.part", local.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
        let io = |e: std::io::Error| self.err(&tmp.display().to_string(), e);
        let mut stream = self.store.get(remote).await.map_err(|e| self.err(&shown, e))?.into_stream();
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        let mut hash = Sha256::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.err(&shown, e))?;
            hash.update(&chunk);
            out.write_all(&chunk).map_err(io)?;
        }
        out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
        let got = hex(&hash.finalize());
        if got != digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.err(&shown, format!("SHA-256 is {got}, SHA256SUMS says {digest}: not loaded")));
        }
        std::fs::rename(&tmp, local).map_err(io)
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `<64 hex>  <name>` lines (a `*` before the name, binary mode, is allowed); names are plain
/// file names (no directories, nothing hidden).
pub fn parse_sums(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (digest, name) =
            line.split_once(char::is_whitespace).ok_or_else(|| format!("line {}: not '<sha256>  <file>'", i + 1))?;
        let name = name.trim().trim_start_matches('*');
        let digest = digest.to_ascii_lowercase();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("line {}: '{digest}' is not a SHA-256 in hex", i + 1));
        }
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name.len() <= 255
            && !name.contains(['/', '\\'])
            && name != DONE;
        if !plain {
            return Err(format!("line {}: '{name}' is not a plain file name", i + 1));
        }
        if out.len() == MAX_FILES {
            return Err(format!("more than {MAX_FILES} files"));
        }
        out.push((digest, name.to_string()));
    }
    if out.is_empty() {
        return Err("lists no file".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_lists_name_plain_files_only() {
        let d = "a".repeat(64);
        assert_eq!(parse_sums(&format!("{d}  model.onnx\n{d} *baseline.parquet\n")).unwrap().len(), 2);
        for bad in [
            String::new(),
            d.clone(),
            format!("{}  model.onnx", "z".repeat(64)),
            format!("{}  model.onnx", "a".repeat(63)),
            format!("{d}  ../model.onnx"),
            format!("{d}  sub/model.onnx"),
            format!("{d}  .hidden"),
            format!("{d}  .verified"),
            (0..=MAX_FILES).map(|i| format!("{d}  f{i}\n")).collect(),
        ] {
            assert!(parse_sums(&bad).is_err(), "{bad:.80}");
        }
    }

    #[tokio::test]
    async fn a_version_is_copied_checked_and_a_bad_digest_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        let v1 = store_dir.join("m/1");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("model.onnx"), b"onnx bytes").unwrap();
        let sum = hex(&Sha256::digest(b"onnx bytes"));
        std::fs::write(v1.join("SHA256SUMS"), format!("{sum}  model.onnx\n")).unwrap();
        let (store, prefix) = sluice_tables::Location::Local(store_dir.clone()).object_store().unwrap();
        let f = Fetcher { store, prefix, cache: dir.path().join("cache"), location: "test".into() };
        f.dir(&["m", "1"]).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("cache/m/1/model.onnx")).unwrap(), b"onnx bytes");
        assert!(dir.path().join("cache/m/1").join(DONE).is_file());
        // a file that is not what its list says is refused, and nothing is left in its place
        let v2 = store_dir.join("m/2");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("model.onnx"), b"tampered").unwrap();
        std::fs::write(v2.join("SHA256SUMS"), format!("{sum}  model.onnx\n")).unwrap();
        let e = f.dir(&["m", "2"]).await.unwrap_err();
        assert!(e.to_string().contains("SHA-256 is"), "{e}");
        assert!(!dir.path().join("cache/m/2/model.onnx").exists());
        assert!(!dir.path().join("cache/m/2").join(DONE).exists());
        // no list: refused by name
        std::fs::create_dir_all(store_dir.join("m/3")).unwrap();
        let e = f.dir(&["m", "3"]).await.unwrap_err();
        assert!(e.to_string().contains("SHA256SUMS") && e.to_string().contains("missing"), "{e}");
    }
}
