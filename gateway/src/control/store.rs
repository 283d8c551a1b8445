//! The shared config store: every config change is one numbered version, an immutable JSON
//! object `config/versions/<20-digit version>.json` under the store's prefix (a directory, or
//! `s3://bucket/prefix` through `object_store`). Writing version N+1 is a create-if-absent
//! (`If-None-Match: *` on S3, a hard link on a local disk), so of two replicas that both change
//! version N, one writes N+1 and the other is told it lost (a 409 for its caller): a
//! compare-and-swap on the current version, with no lock service. Replicas follow the store by
//! asking for the version after the one they serve.
//!
//! A version holds the whole shared config (models, endpoints, `[auth]`, the default endpoint
//! and the admin token): each replica keeps its own listeners, limits, runtime, telemetry and
//! storage settings (see [`shared`]).

use std::sync::Arc;

use futures::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::config::history::Source;
use crate::config::raw::RawConfig;

/// Largest version object read (a config is kilobytes; a bigger object is not one of ours).
pub const MAX_VERSION_BYTES: u64 = 16 << 20;

/// One version of the shared config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    pub version: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// The principal that made the change, when tokens are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub config: RawConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote this version first.
    #[error(
        "the config changed concurrently: version {version} of the config store was written by another change first; \
         read the endpoint again and retry"
    )]
    Conflict { version: u64 },
    #[error("config store {location}: {why}")]
    Unavailable { location: String, why: String },
    #[error("the config would be {bytes} bytes in the config store, more than the {MAX_VERSION_BYTES} a replica reads")]
    TooLarge { bytes: u64 },
    #[error("config store {location}: {path} is not a config version: {why}")]
    Corrupt { location: String, path: String, why: String },
}

/// A config store.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    location: String,
}

impl ConfigStore {
    pub fn open(location: &sluice_tables::Location) -> Result<ConfigStore, StoreError> {
        let (store, prefix) = location
            .object_store()
            .map_err(|e| StoreError::Unavailable { location: location.to_string(), why: e.to_string() })?;
        Ok(ConfigStore { store, prefix, location: location.to_string() })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// The object store and the prefix the store's objects are under (the leader lease's too).
    pub(crate) fn parts(&self) -> (Arc<dyn ObjectStore>, ObjectPath) {
        (self.store.clone(), self.prefix.clone())
    }

    fn dir(&self) -> ObjectPath {
        self.prefix.clone().join("config").join("versions")
    }

    fn path(&self, version: u64) -> ObjectPath {
        self.dir().join(format!("{version:020}.json"))
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable { location: self.location.clone(), why: e.to_string() }
    }

    /// Version `version`, or `None` when it does not exist (yet).
    pub async fn get(&self, version: u64) -> Result<Option<Version>, StoreError> {
        let path = self.path(version);
        let got = match self.store.get(&path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.unavailable(e)),
        };
        let corrupt =
            |why: String| StoreError::Corrupt { location: self.location.clone(), path: path.to_string(), why };
        if got.meta.size > MAX_VERSION_BYTES {
            return Err(corrupt(format!(
                "{} bytes, more than the {MAX_VERSION_BYTES} a config version may have",
                got.meta.size
            )));
        }
        let bytes = got.bytes().await.map_err(|e| self.unavailable(e))?;
        let v: Version = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if v.version != version {
            return Err(corrupt(format!("it says it is version {}", v.version)));
        }
        Ok(Some(v))
    }

    /// The numbers of every version, ascending.
    pub async fn list(&self) -> Result<Vec<u64>, StoreError> {
        let dir = self.dir();
        let metas: Vec<object_store::ObjectMeta> = match self.store.list(Some(&dir)).try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(self.unavailable(e)),
        };
        let mut out: Vec<u64> =
            metas.iter().filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok()).collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Every version, oldest first.
    pub async fn all(&self) -> Result<Vec<Version>, StoreError> {
        let mut out = Vec::new();
        for n in self.list().await? {
            // listed, then gone: only a store emptied behind our back does that
            if let Some(v) = self.get(n).await? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Writes `v` as version `v.version`, unless that version exists: then
    /// [`StoreError::Conflict`].
    /// Whether version `version` exists.
    pub async fn exists(&self, version: u64) -> Result<bool, StoreError> {
        match self.store.head(&self.path(version)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.unavailable(e)),
        }
    }

    pub async fn put(&self, v: &Version) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(v).map_err(|e| self.unavailable(e))?;
        // every replica must be able to read it back
        if body.len() as u64 > MAX_VERSION_BYTES {
            return Err(StoreError::TooLarge { bytes: body.len() as u64 });
        }
        match sluice_tables::create_if_absent(self.store.as_ref(), &self.path(v.version), body).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Conflict { version: v.version }),
            Err(e) => Err(self.unavailable(e)),
        }
    }
}

/// The config a replica runs from a stored version: its own `local` settings (listeners,
/// limits, data directory, runtime, telemetry, storage: what differs per machine or needs a
/// restart) with the store's models, endpoints, `[auth]`, default endpoint and admin token.
pub fn shared(local: &RawConfig, stored: &RawConfig) -> RawConfig {
    let mut out = local.clone();
    out.models = stored.models.clone();
    out.endpoints = stored.endpoints.clone();
    out.auth = stored.auth.clone();
    out.server.default_endpoint = stored.server.default_endpoint.clone();
    out.server.admin_token = stored.server.admin_token.clone();
    out
}

/// The objects under `dir` that parse as `T` (JSON), but `except` and any over `max_bytes`:
/// each replica's own report objects (fleet reports, readiness), read by the others. Objects
/// that cannot be read or parsed are skipped.
pub(crate) async fn read_all<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    dir: &ObjectPath,
    except: &ObjectPath,
    max_bytes: u64,
) -> Result<Vec<(ObjectPath, T)>, object_store::Error> {
    let metas: Vec<object_store::ObjectMeta> = match store.list(Some(dir)).try_collect().await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for m in metas {
        if &m.location == except || m.size > max_bytes {
            continue;
        }
        let Ok(got) = store.get(&m.location).await else { continue };
        let Ok(bytes) = got.bytes().await else { continue };
        if let Ok(v) = serde_json::from_slice::<T>(&bytes) {
            out.push((m.location, v));
        }
    }
    Ok(out)
}

/// At start with a config store: the config to serve (the store's latest version, with this
/// replica's own settings from `local`), the store, and every version (for the history). An
/// empty store gets `local`'s config as its version 1 (of replicas starting together, one
/// writes it and the others read it).
pub async fn open_at_start(
    location: &sluice_tables::Location,
    local: Config,
) -> Result<(Config, ConfigStore, Vec<Version>), String> {
    let store = ConfigStore::open(location).map_err(|e| e.to_string())?;
    let mut versions = store.all().await.map_err(|e| e.to_string())?;
    if versions.is_empty() {
        let first = Version {
            version: 1,
            time: super::now_rfc3339(),
            by: None,
            source: Source::Startup,
            reason: Some("the first gateway started with this store".into()),
            config: local.raw.clone(),
        };
        match store.put(&first).await {
            Ok(()) => versions.push(first),
            Err(StoreError::Conflict { .. }) => versions = store.all().await.map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        }
    }
    let Some(last) = versions.last() else {
        return Err(format!("config store {}: no version to start from", store.location()));
    };
    let origin = format!("config store {} version {}", store.location(), last.version);
    let mut config = Config::from_raw(shared(&local.raw, &last.config), &origin, &local.base)
        .map_err(|e| format!("{e} (fix it with `sluice config import`)"))?;
    config.server = super::ServerKeep::keep(&local, &config);
    Ok((config, store, versions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(n: u64, by: &str) -> Version {
        Version {
            version: n,
            time: "2026-12-06T00:00:00Z".into(),
            by: Some(by.into()),
            source: Source::Api,
            reason: None,
            config: RawConfig::default(),
        }
    }

    #[tokio::test]
    async fn the_next_version_is_written_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::open(&sluice_tables::Location::Local(dir.path().join("store"))).unwrap();
        assert_eq!(store.list().await.unwrap(), Vec::<u64>::new());
        assert!(store.get(1).await.unwrap().is_none());
        store.put(&version(1, "a")).await.unwrap();
        // two writers of version 2: one wins, the other is told so and changes nothing
        let (va, vb) = (version(2, "a"), version(2, "b"));
        let (a, b) = tokio::join!(store.put(&va), store.put(&vb));
        assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
        let loser = if a.is_err() { a } else { b };
        assert!(matches!(loser, Err(StoreError::Conflict { version: 2 })), "{loser:?}");
        let winner = store.get(2).await.unwrap().unwrap().by.unwrap();
        assert!(winner == "a" || winner == "b");
        assert_eq!(store.list().await.unwrap(), vec![1, 2]);
        assert_eq!(store.all().await.unwrap().len(), 2);
        // a second handle (another process) sees the same
        let other = ConfigStore::open(&sluice_tables::Location::Local(dir.path().join("store"))).unwrap();
        assert_eq!(other.get(2).await.unwrap().unwrap().by.unwrap(), winner);
    }

    #[tokio::test]
    async fn objects_that_are_not_versions_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = ConfigStore::open(&sluice_tables::Location::Local(root.clone())).unwrap();
        let versions = root.join("config/versions");
        std::fs::create_dir_all(&versions).unwrap();
        std::fs::write(versions.join(format!("{:020}.json", 1)), b"{not json").unwrap();
        let e = store.get(1).await.unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }) && e.to_string().contains("00000000000000000001"), "{e}");
        // a version stored under another number
        std::fs::write(versions.join(format!("{:020}.json", 2)), serde_json::to_vec(&version(7, "a")).unwrap())
            .unwrap();
        assert!(store.get(2).await.unwrap_err().to_string().contains("version 7"));
        // too big to be a config
        let big = std::fs::File::create(versions.join(format!("{:020}.json", 3))).unwrap();
        big.set_len(MAX_VERSION_BYTES + 1).unwrap();
        assert!(store.get(3).await.unwrap_err().to_string().contains("bytes"));
        // stray objects are not versions
        std::fs::write(versions.join("notes.txt"), b"x").unwrap();
        assert_eq!(store.list().await.unwrap(), vec![1, 2, 3]);
    }
}
