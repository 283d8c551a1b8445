//! Where a table lives: a directory on the local disk (the default) or a prefix in an
//! S3-compatible bucket, with the settings object storage needs. `s3://` is served by
//! `object_store`'s S3 client (no AWS SDK), path-style so that S3-compatible servers work, with
//! conditional writes (`If-None-Match: *`) for Delta commits.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Once};

use deltalake_core::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
    object_store_factories,
};
use deltalake_core::{DeltaResult, DeltaTableError};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use url::Url;

use crate::TableError;

/// S3 settings from the config. Unset fields fall back to the standard `AWS_*` environment
/// variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`), as the AWS tools read them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// The server's URL (`http://127.0.0.1:8333`); unset: AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Allow plain `http://` endpoints (a server on loopback or in a private network).
    pub allow_http: bool,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// A table's location (or the root under which tables are named).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory on the local disk.
    Local(PathBuf),
    /// `s3://bucket/prefix`.
    S3 { bucket: String, prefix: String, options: S3Options },
}

impl Location {
    /// Parses `s3://bucket[/prefix]` (with `options`) or a local path. Errors name what is
    /// wrong.
    pub fn parse(s: &str, options: &S3Options) -> Result<Location, TableError> {
        let bad = |why: &str| TableError::Location { location: s.to_string(), why: why.to_string() };
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket: write s3://bucket/prefix"));
            }
            // S3 bucket names: 3-63 of lowercase letters, digits, '.', '-'
            let ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
            if !ok {
                return Err(bad("not an S3 bucket name (3-63 lowercase letters, digits, '.', '-')"));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..") {
                return Err(bad("'.' and '..' are not allowed in the prefix"));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                options: options.clone(),
            });
        }
        if s.contains("://") {
            return Err(bad("only local paths and s3:// are supported"));
        }
        if s.is_empty() {
            return Err(bad("empty path"));
        }
        Ok(Location::Local(PathBuf::from(s)))
    }

    /// The location `name` under this one.
    pub fn child(&self, name: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.join(name)),
            Location::S3 { bucket, prefix, options } => Location::S3 {
                bucket: bucket.clone(),
                prefix: if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") },
                options: options.clone(),
            },
        }
    }

    /// The location `name` beside this one (same parent).
    pub fn sibling(&self, name: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.with_file_name(name)),
            Location::S3 { bucket, prefix, options } => Location::S3 {
                bucket: bucket.clone(),
                prefix: match prefix.rsplit_once('/') {
                    Some((parent, _)) => format!("{parent}/{name}"),
                    None => name.to_string(),
                },
                options: options.clone(),
            },
        }
    }

    /// The local directory, for a local location.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::S3 { .. } => None,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Location::Local(_))
    }

    /// The URL delta-rs opens (`file:///abs/dir/` or `s3://bucket/prefix`). A local directory
    /// is created if missing (Delta needs it to exist) and made absolute.
    pub fn url(&self) -> Result<Url, TableError> {
        match self {
            Location::Local(p) => {
                std::fs::create_dir_all(p).map_err(|e| TableError::Location {
                    location: p.display().to_string(),
                    why: format!("cannot create the directory: {e}"),
                })?;
                let abs = std::fs::canonicalize(p)
                    .map_err(|e| TableError::Location { location: p.display().to_string(), why: e.to_string() })?;
                Url::from_directory_path(&abs).map_err(|()| TableError::Location {
                    location: p.display().to_string(),
                    why: "not an absolute path".into(),
                })
            }
            Location::S3 { bucket, prefix, .. } => {
                register_s3();
                Url::parse(&format!("s3://{bucket}/{prefix}"))
                    .map_err(|e| TableError::Location { location: self.to_string(), why: e.to_string() })
            }
        }
    }

    /// An `object_store` client for plain objects under this location (not a table: the config
    /// store), and the prefix its objects are under. A local directory is created if missing;
    /// creating an object there with `PutMode::Create` is atomic (a hard link), as S3's
    /// `If-None-Match: *` is.
    pub fn object_store(&self) -> Result<(ObjectStoreRef, object_store::path::Path), TableError> {
        let err = |why: String| TableError::Location { location: self.to_string(), why };
        match self {
            Location::Local(p) => {
                std::fs::create_dir_all(p).map_err(|e| err(format!("cannot create the directory: {e}")))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(p).map_err(|e| err(e.to_string()))?;
                Ok((Arc::new(fs), object_store::path::Path::default()))
            }
            Location::S3 { bucket, prefix, .. } => {
                let store = s3_store(bucket, &self.storage_options()).map_err(|e| err(e.to_string()))?;
                let prefix = object_store::path::Path::parse(prefix).map_err(|e| err(e.to_string()))?;
                Ok((store, prefix))
            }
        }
    }

    /// The storage options delta-rs passes to the object store (none for local paths).
    pub fn storage_options(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        if let Location::S3 { options, .. } = self {
            let mut put = |k: &str, v: &Option<String>| {
                if let Some(v) = v {
                    m.insert(k.to_string(), v.clone());
                }
            };
            put("aws_endpoint", &options.endpoint);
            put("aws_region", &options.region);
            put("aws_access_key_id", &options.access_key_id);
            put("aws_secret_access_key", &options.secret_access_key);
            put("aws_session_token", &options.session_token);
            if options.allow_http {
                m.insert("aws_allow_http".into(), "true".into());
            }
        }
        m
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix, .. } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Builds the bucket-rooted S3 client of a table: `AWS_*` environment first, then the table's
/// options; path-style requests and `If-None-Match` conditional puts, whatever the environment
/// says, because Delta commits depend on them.
struct S3Stores;

impl ObjectStoreFactory for S3Stores {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, object_store::path::Path)> {
        let bucket = url.host_str().ok_or_else(|| DeltaTableError::InvalidTableLocation(url.to_string()))?;
        let store = s3_store(bucket, &config.raw).map_err(|e| DeltaTableError::GenericError { source: Box::new(e) })?;
        let path = object_store::path::Path::parse(url.path().trim_start_matches('/'))
            .map_err(|e| DeltaTableError::GenericError { source: Box::new(e) })?;
        Ok((store, path))
    }
}

/// The bucket-rooted S3 client: `AWS_*` environment first, then `options` (storage option
/// keys, as [`Location::storage_options`] gives them); path-style requests and `If-None-Match`
/// conditional puts, whatever the environment says.
fn s3_store(bucket: &str, options: &HashMap<String, String>) -> Result<ObjectStoreRef, object_store::Error> {
    let mut b = AmazonS3Builder::from_env();
    // AWS_ENDPOINT_URL is the AWS tools' name for the endpoint; object_store reads AWS_ENDPOINT
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        b = b.with_endpoint(endpoint);
    }
    for (k, v) in options {
        if let Ok(key) = AmazonS3ConfigKey::from_str(&k.to_ascii_lowercase()) {
            b = b.with_config(key, v.clone());
        }
    }
    // object_store retries a failed request itself for up to 3 minutes by default; Sluice's
    // writers retry whole appends with their own backoff and a bound at shutdown, so one
    // attempt gives up after 15 s of the store's retries (and 30 s for one request)
    let retry = object_store::RetryConfig {
        retry_timeout: std::time::Duration::from_secs(15),
        ..object_store::RetryConfig::default()
    };
    let b = b
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(false)
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_retry(retry);
    Ok(Arc::new(b.build()?))
}

/// `s3://` tables use delta-rs' default log store: each commit is a conditional create of the
/// next `_delta_log/<version>.json`, so concurrent writers need no lock service.
struct S3Logs;

impl LogStoreFactory for S3Logs {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed_store, root_store, location, options))
    }
}

/// Registers the `s3://` scheme with delta-rs (once per process).
pub fn register_s3() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(url) = Url::parse("s3://") {
            object_store_factories().insert(url.clone(), Arc::new(S3Stores));
            logstore_factories().insert(url, Arc::new(S3Logs));
        }
    });
}

/// Every regular file under the local directory `dir`, recursively, in no particular order
/// (entries that cannot be read are passed over).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Writes `body` at `path` only if nothing is there (`If-None-Match: *` on S3, a hard link on a
/// local disk): `Ok(true)` when written, `Ok(false)` when the object existed (another writer
/// won). The one compare-and-swap the config store, the leader lease and rollout states use.
pub async fn create_if_absent(
    store: &dyn object_store::ObjectStore,
    path: &object_store::path::Path,
    body: Vec<u8>,
) -> Result<bool, object_store::Error> {
    let opts = object_store::PutOptions { mode: object_store::PutMode::Create, ..object_store::PutOptions::default() };
    match store.put_opts(path, object_store::PutPayload::from(body), opts).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_and_s3() {
        let o = S3Options::default();
        assert_eq!(Location::parse("data", &o).unwrap(), Location::Local("data".into()));
        let s3 = Location::parse("s3://my-bucket/tables/x/", &o).unwrap();
        assert_eq!(s3.to_string(), "s3://my-bucket/tables/x");
        assert_eq!(s3.child("fraud").to_string(), "s3://my-bucket/tables/x/fraud");
        assert_eq!(Location::parse("s3://b-1", &o).unwrap().child("t").to_string(), "s3://b-1/t");
    }

    #[test]
    fn refuses_bad_locations() {
        let o = S3Options::default();
        for bad in ["", "s3://", "s3:///x", "s3://UPPER/x", "s3://ab/x", "s3://b-1/../x", "gs://b/x", "http://h/x"] {
            let e = Location::parse(bad, &o).unwrap_err().to_string();
            assert!(e.contains(if bad.is_empty() { "empty" } else { bad }), "{bad}: {e}");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let o = S3Options {
            secret_access_key: Some("s3cr3t".into()),
            session_token: Some("t0k3n".into()),
            ..Default::default()
        };
        let d = format!("{o:?}");
        assert!(!d.contains("s3cr3t") && !d.contains("t0k3n"), "{d}");
    }

    #[test]
    fn storage_options_name_object_store_keys() {
        let o = S3Options {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("us-east-1".into()),
            allow_http: true,
            ..Default::default()
        };
        let m = Location::parse("s3://bkt/p", &o).unwrap().storage_options();
        for k in m.keys() {
            assert!(AmazonS3ConfigKey::from_str(k).is_ok(), "{k}");
        }
        assert_eq!(m.get("aws_allow_http").map(String::as_str), Some("true"));
        assert!(Location::Local("x".into()).storage_options().is_empty());
    }
}
