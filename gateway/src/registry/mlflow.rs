//! Models from an MLflow Model Registry (`runtime.registry_uri`): every model version a config
//! names is a registered model version of the tracking server; `entity_version = "@champion"`
//! names it by alias.
//!
//! Before a config serves, [`prepare`] resolves its aliases (a served entity keeps the version
//! the config in force resolved, so a reload or an edit elsewhere does not move it; only
//! `watch_aliases` does, as a change of its own) and copies each version's `onnx` flavor into
//! the local cache (`<data_dir>/_model_cache/<name>/<version>/`) through the tracking server's
//! artifact proxy (`mlflow server`'s default): every file of the model's artifact directory (an
//! ONNX model may keep its weights in external data files beside it), each checked against the
//! size the server lists, the ONNX file against the version's `sluice.sha256` tag when it has
//! one. The directory lands under a hidden name and is renamed into place when complete, with a
//! `SHA256SUMS` of what was downloaded. When the artifacts carry no `manifest.toml`, one is
//! written from the MLflow model signature (features = the input columns in order; a classifier
//! when an integer `label` and a float `probabilities` are among the outputs; class names from
//! the version's `sluice.class_labels` tag).
//!
//! Auth as MLflow's own client: `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` (basic)
//! or `MLFLOW_TRACKING_TOKEN` (bearer). Nothing is ever written to the registry.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

use super::fetch::{DONE, FetchError, hex};
use super::manifest::{Manifest, ManifestOutputs, ProblemType};
use crate::config::Config;
use crate::config::raw::{RawConfig, RawVersion};

/// Largest JSON answer of the registry read (version, alias, listing).
const MAX_JSON_BYTES: usize = 4 << 20;
/// Largest `MLmodel` file read.
pub const MAX_MLMODEL_BYTES: usize = 1 << 20;
/// Files one model version's artifact directory may hold (all levels).
const MAX_FILES: usize = 256;
/// Directory levels below the artifact directory that are copied.
const MAX_DEPTH: usize = 4;
/// Largest artifact file when the listing gives no size.
const MAX_UNSIZED_FILE: u64 = 16 << 30;
/// One call (a whole file download included) gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(600);
/// The registry, model and version a cached directory was copied from.
const SOURCE: &str = ".source";

/// Why the registry did not give what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MlflowError {
    #[error("cannot reach the MLflow tracking server: {0}")]
    Unreachable(String),
    /// The server answered with an error (its `error_code` and `message` when it sent them).
    #[error("the MLflow tracking server answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("{0}")]
    Invalid(String),
}

type Http = HyperClient<HttpsConnector<HttpConnector>, Empty<bytes::Bytes>>;

/// A client of one tracking server's REST API.
#[derive(Clone)]
pub struct Client {
    base: String,
    auth: Option<http::HeaderValue>,
    http: Http,
}

/// A registered model version as the registry describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionInfo {
    pub status: String,
    pub run_id: String,
    pub tags: BTreeMap<String, String>,
}

/// One entry of an artifact directory listing.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    is_dir: bool,
    size: Option<u64>,
}

impl Client {
    /// A client of the tracking server at `uri` (`http(s)://host:port`), with the credentials
    /// of MLflow's environment variables.
    pub fn new(uri: &str) -> Result<Client, MlflowError> {
        let connector =
            sluice_wire::tls::https_connector(None).map_err(|e| MlflowError::Unreachable(format!("TLS: {e}")))?;
        let auth = auth_header(
            std::env::var("MLFLOW_TRACKING_USERNAME").ok(),
            std::env::var("MLFLOW_TRACKING_PASSWORD").ok(),
            std::env::var("MLFLOW_TRACKING_TOKEN").ok(),
        )?;
        Ok(Client {
            base: uri.trim_end_matches('/').to_string(),
            auth,
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn get(&self, path_and_query: &str) -> Result<hyper::Response<hyper::body::Incoming>, MlflowError> {
        let uri = format!("{}{path_and_query}", self.base);
        let mut req = hyper::Request::get(&uri)
            .header("user-agent", concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .body(Empty::new())
            .map_err(|e| MlflowError::Invalid(format!("{uri}: {e}")))?;
        if let Some(a) = &self.auth {
            req.headers_mut().insert(http::header::AUTHORIZATION, a.clone());
        }
        match tokio::time::timeout(Duration::from_secs(30), self.http.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(MlflowError::Unreachable(format!("{}: {}", self.base, error_chain(&e)))),
            Err(_) => Err(MlflowError::Unreachable(format!("{}: no answer in 30 s", self.base))),
        }
    }

    /// GETs JSON (bounded); a non-2xx answer is [`MlflowError::Refused`] with the server's message.
    async fn get_json(&self, path_and_query: &str) -> Result<serde_json::Value, MlflowError> {
        let resp = self.get(path_and_query).await?;
        let status = resp.status();
        let body = read_bounded(resp.into_body(), MAX_JSON_BYTES).await?;
        if !status.is_success() {
            return Err(refused(status.as_u16(), &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| MlflowError::Invalid(format!("{path_and_query}: the answer is not JSON: {e}")))
    }

    /// The version alias `alias` of `model` names.
    pub async fn alias(&self, model: &str, alias: &str) -> Result<u64, MlflowError> {
        let q = query(&[("name", model), ("alias", alias)]);
        let v = self.get_json(&format!("/api/2.0/mlflow/registered-models/alias?{q}")).await.map_err(|e| match e {
            MlflowError::Refused { status, message } => MlflowError::Refused {
                status,
                message: format!("alias @{alias} of registered model '{model}': {message}"),
            },
            e => e,
        })?;
        version_number(&v["model_version"]["version"])
            .ok_or_else(|| MlflowError::Invalid(format!("alias @{alias} of '{model}': the answer names no version")))
    }

    /// A model version's status, run and tags.
    pub async fn version(&self, model: &str, version: u64) -> Result<VersionInfo, MlflowError> {
        let q = query(&[("name", model), ("version", &version.to_string())]);
        let v = self.get_json(&format!("/api/2.0/mlflow/model-versions/get?{q}")).await?;
        let mv = &v["model_version"];
        let tags = mv["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| {
                        Some((t["key"].as_str()?.to_string(), t["value"].as_str().unwrap_or("").to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(VersionInfo {
            status: mv["status"].as_str().unwrap_or("").to_string(),
            run_id: mv["run_id"].as_str().unwrap_or("").to_string(),
            tags,
        })
    }

    /// Where a version's model artifacts are: a path of the server's artifact proxy.
    async fn artifact_dir(&self, model: &str, version: u64) -> Result<String, MlflowError> {
        let q = query(&[("name", model), ("version", &version.to_string())]);
        let v = self.get_json(&format!("/api/2.0/mlflow/model-versions/get-download-uri?{q}")).await?;
        let uri = v["artifact_uri"]
            .as_str()
            .ok_or_else(|| MlflowError::Invalid("get-download-uri answered no artifact_uri".into()))?;
        proxy_path(uri)
    }

    /// The entries of an artifact directory (`rel`: a proxy path).
    async fn list(&self, rel: &str) -> Result<Vec<Entry>, MlflowError> {
        let v = self.get_json(&format!("/api/2.0/mlflow-artifacts/artifacts?{}", query(&[("path", rel)]))).await?;
        listing(&v)
    }

    /// Downloads artifact `rel` into `local`; answers its SHA-256 (hex). A file longer than
    /// `size` (the listing's) is refused as soon as it is.
    async fn download(&self, rel: &str, local: &Path, size: Option<u64>) -> Result<String, MlflowError> {
        let path = format!("/api/2.0/mlflow-artifacts/artifacts/{}", encode_path(rel));
        let resp = self.get(&path).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_bounded(resp.into_body(), MAX_JSON_BYTES).await.unwrap_or_default();
            return Err(refused(status.as_u16(), &body));
        }
        let io = |e: std::io::Error| MlflowError::Invalid(format!("{}: {e}", local.display()));
        let mut out = std::io::BufWriter::new(std::fs::File::create(local).map_err(io)?);
        let mut hash = Sha256::new();
        let limit = size.unwrap_or(MAX_UNSIZED_FILE);
        let mut got = 0u64;
        let mut body = resp.into_body();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return Err(MlflowError::Unreachable(format!("{rel}: not downloaded in {TIMEOUT:?}"))),
            };
            let frame = frame.map_err(|e| MlflowError::Unreachable(format!("{rel}: {e}")))?;
            if let Ok(chunk) = frame.into_data() {
                got += chunk.len() as u64;
                if got > limit {
                    return Err(MlflowError::Invalid(format!(
                        "{rel}: longer than the {limit} bytes the artifact listing gives"
                    )));
                }
                hash.update(&chunk);
                out.write_all(&chunk).map_err(io)?;
            }
        }
        if let Some(size) = size
            && got != size
        {
            return Err(MlflowError::Invalid(format!("{rel}: {got} bytes arrived, the artifact listing gives {size}")));
        }
        out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
        Ok(hex(&hash.finalize()))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

async fn read_bounded(body: hyper::body::Incoming, max: usize) -> Result<Vec<u8>, MlflowError> {
    let limited = http_body_util::Limited::new(body, max);
    match limited.collect().await {
        Ok(b) => Ok(b.to_bytes().to_vec()),
        Err(e) => Err(MlflowError::Invalid(format!("the answer of the tracking server: {e} (at most {max} bytes)"))),
    }
}

/// The error of a non-2xx answer: MLflow's `{"error_code", "message"}` when it sent it.
fn refused(status: u16, body: &[u8]) -> MlflowError {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let message = match (v["error_code"].as_str(), v["message"].as_str()) {
        (Some(code), Some(m)) => format!("{code}: {m}"),
        (None, Some(m)) => m.to_string(),
        _ => String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_string(),
    };
    MlflowError::Refused { status, message }
}

/// `Authorization` as MLflow's client sends it: basic when a username and password are set,
/// else bearer with the token.
fn auth_header(
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
) -> Result<Option<http::HeaderValue>, MlflowError> {
    let value = match (user, password, token) {
        (Some(u), Some(p), _) => format!("Basic {}", base64(format!("{u}:{p}").as_bytes())),
        (_, _, Some(t)) if !t.is_empty() => format!("Bearer {t}"),
        _ => return Ok(None),
    };
    let mut v = http::HeaderValue::from_str(&value)
        .map_err(|_| MlflowError::Invalid("MLFLOW_TRACKING_* credentials are not a valid header value".into()))?;
    v.set_sensitive(true);
    Ok(Some(v))
}

/// Standard base64 with padding (RFC 4648).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ABC[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// Each `/`-separated segment percent-encoded.
fn encode_path(rel: &str) -> String {
    rel.split('/')
        .map(|seg| percent_encoding::utf8_percent_encode(seg, percent_encoding::NON_ALPHANUMERIC).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// A version number as MLflow writes it (a string, or a number).
fn version_number(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok()).filter(|n| *n > 0)
}

/// The artifact proxy path of `mlflow-artifacts:/<path>` (or `mlflow-artifacts://host/<path>`).
fn proxy_path(uri: &str) -> Result<String, MlflowError> {
    let Some(rest) = uri.strip_prefix("mlflow-artifacts:") else {
        return Err(MlflowError::Invalid(format!(
            "this version's artifacts are at '{uri}', which Sluice cannot read: it downloads through the tracking \
             server's artifact proxy (mlflow-artifacts:/, what `mlflow server` gives by default; \
             `--artifacts-destination` chooses where the server keeps them)"
        )));
    };
    let rest = match rest.strip_prefix("//") {
        Some(r) => r.split_once('/').map_or("", |(_, p)| p),
        None => rest,
    };
    let rel = rest.trim_matches('/');
    if rel.is_empty() || rel.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(MlflowError::Invalid(format!("'{uri}' is not an artifact directory")));
    }
    Ok(rel.to_string())
}

/// The entries of `{"files": [{"path", "is_dir", "file_size"}]}` (no `files`: empty).
fn listing(v: &serde_json::Value) -> Result<Vec<Entry>, MlflowError> {
    let Some(files) = v.get("files") else { return Ok(vec![]) };
    let files = files.as_array().ok_or_else(|| MlflowError::Invalid("artifact listing: files is not a list".into()))?;
    let mut out = Vec::new();
    for f in files {
        let path =
            f["path"].as_str().ok_or_else(|| MlflowError::Invalid("artifact listing: an entry has no path".into()))?;
        // the path of an entry may be relative to the listed directory or to the root
        let name = path.rsplit('/').next().unwrap_or(path);
        let plain = !name.is_empty() && name != "." && name != ".." && name.len() <= 255 && !name.contains('\\');
        if !plain || name.starts_with('.') {
            return Err(MlflowError::Invalid(format!("artifact listing: '{path}' is not a plain file name")));
        }
        out.push(Entry {
            name: name.to_string(),
            is_dir: f["is_dir"].as_bool().unwrap_or(false),
            size: f["file_size"].as_u64().or_else(|| f["file_size"].as_str()?.parse().ok()),
        });
    }
    Ok(out)
}

/// Each reader of a registry answer, on `input` as the JSON body (the fuzz target).
pub fn fuzz_answer(input: &[u8]) {
    let _ = refused(400, input);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(input) {
        let _ = listing(&v);
        let _ = version_number(&v["model_version"]["version"]);
        if let Some(uri) = v["artifact_uri"].as_str() {
            let _ = proxy_path(uri);
        }
    }
}

/// Resolves the unresolved aliases of `config` (kept as `current` has them where it has the
/// same entity, else asked of the registry) and copies every model version it names into the
/// cache, checked. Without a registry: the object-storage copy ([`super::fetch::fetch`]).
pub async fn prepare(config: Config, current: Option<&RawConfig>) -> Result<Config, FetchError> {
    let Some(registry) = config.runtime.registry.clone() else {
        super::fetch::fetch(&config).await?;
        return Ok(config);
    };
    let config = resolve(config, current).await?;
    let err = |path: String, why: String| FetchError { location: registry.uri.clone(), path, why };
    let client = Client::new(&registry.uri).map_err(|e| err(String::new(), e.to_string()))?;
    let cache = config.runtime.model_repository.clone();
    for (name, version) in config.versions.keys() {
        copy_version(&client, &cache, name, *version)
            .await
            .map_err(|e| err(format!("{name} version {version}"), e.to_string()))?;
    }
    Ok(config)
}

/// Resolves the unresolved aliases of `config` only (see [`prepare`]).
pub async fn resolve(config: Config, current: Option<&RawConfig>) -> Result<Config, FetchError> {
    let Some(registry) = config.runtime.registry.clone() else { return Ok(config) };
    let err = |path: String, why: String| FetchError { location: registry.uri.clone(), path, why };
    let client = Client::new(&registry.uri).map_err(|e| err(String::new(), e.to_string()))?;
    Ok(if config.unresolved.is_empty() {
        config
    } else {
        let mut raw = config.raw.clone();
        for e in &mut raw.endpoints {
            for s in &mut e.served_entities {
                let RawVersion::Str(v) = &s.entity_version else { continue };
                let Some(alias) = v.strip_prefix('@') else { continue };
                if s.resolved_version.is_some() {
                    continue;
                }
                let kept = current.and_then(|c| pinned(c, &e.name, &s.entity_name, v));
                let version = match kept {
                    Some(n) => n,
                    None => client
                        .alias(&s.entity_name, alias)
                        .await
                        .map_err(|x| err(format!("{}@{alias}", s.entity_name), x.to_string()))?,
                };
                s.resolved_version = Some(version);
            }
        }
        let mut resolved = Config::from_raw(raw, "config with its MLflow aliases resolved", &config.base)
            .map_err(|e| err(String::new(), e.to_string()))?;
        resolved.server = config.server.clone();
        resolved
    })
}

/// The version a config has an alias entity of `endpoint` resolved to.
fn pinned(raw: &RawConfig, endpoint: &str, model: &str, version: &str) -> Option<u64> {
    let e = raw.endpoints.iter().find(|e| e.name == endpoint)?;
    e.served_entities
        .iter()
        .find(|s| s.entity_name == model && matches!(&s.entity_version, RawVersion::Str(v) if v == version))
        .and_then(|s| s.resolved_version)
}

/// Copies `<model>` version `version` into `<cache>/<model>/<version>/` unless it is there.
async fn copy_version(client: &Client, cache: &Path, model: &str, version: u64) -> Result<(), MlflowError> {
    let local = cache.join(model).join(version.to_string());
    // what the cached copy came from: another source (a registry elsewhere, object storage)
    // may have left a different model under the same name and version
    let source = format!("{}\n{model}\n{version}\n", client.base);
    if local.join(DONE).is_file() && std::fs::read_to_string(local.join(SOURCE)).is_ok_and(|s| s == source) {
        return Ok(());
    }
    let info = client.version(model, version).await?;
    if info.status != "READY" {
        return Err(MlflowError::Invalid(format!(
            "the version is {} in the registry, not READY",
            if info.status.is_empty() { "of no status" } else { &info.status }
        )));
    }
    let root = client.artifact_dir(model, version).await?;
    let parent = cache.join(model);
    std::fs::create_dir_all(&parent).map_err(|e| MlflowError::Invalid(format!("{}: {e}", parent.display())))?;
    let part = parent.join(format!(".{version}.part-{}-{:016x}", std::process::id(), rand::random::<u64>()));
    let _ = std::fs::remove_dir_all(&part);
    let result = download_into(client, &root, &part, model, version, &info).await.and_then(|()| {
        std::fs::write(part.join(SOURCE), &source).map_err(|e| MlflowError::Invalid(format!("{}: {e}", part.display())))
    });
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&part);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(&local);
    std::fs::rename(&part, &local).map_err(|e| MlflowError::Invalid(format!("{}: {e}", local.display())))?;
    tracing::info!(model, version, to = %local.display(), "model version copied from the MLflow registry and checked");
    Ok(())
}

/// Downloads the artifact directory `root` into `dir`, checks it and writes the manifest,
/// `SHA256SUMS` and the done mark.
async fn download_into(
    client: &Client,
    root: &str,
    dir: &Path,
    model: &str,
    version: u64,
    info: &VersionInfo,
) -> Result<(), MlflowError> {
    let io = |p: &Path, e: std::io::Error| MlflowError::Invalid(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut sums: Vec<(String, String)> = Vec::new();
    let mut pending: Vec<(String, PathBuf, usize)> = vec![(String::new(), dir.to_path_buf(), 0)];
    while let Some((sub, local, depth)) = pending.pop() {
        let remote = if sub.is_empty() { root.to_string() } else { format!("{root}/{sub}") };
        for entry in client.list(&remote).await? {
            let rel = if sub.is_empty() { entry.name.clone() } else { format!("{sub}/{}", entry.name) };
            let target = local.join(&entry.name);
            if entry.is_dir {
                if depth + 1 > MAX_DEPTH {
                    return Err(MlflowError::Invalid(format!("{rel}: more than {MAX_DEPTH} directory levels")));
                }
                std::fs::create_dir_all(&target).map_err(|e| io(&target, e))?;
                pending.push((rel, target, depth + 1));
                continue;
            }
            if sums.len() == MAX_FILES {
                return Err(MlflowError::Invalid(format!("the model's artifacts hold more than {MAX_FILES} files")));
            }
            let digest = client.download(&format!("{root}/{rel}"), &target, entry.size).await?;
            sums.push((digest, rel));
        }
    }
    if sums.is_empty() {
        return Err(MlflowError::Invalid(format!("no files under the version's artifact directory '{root}'")));
    }
    let mlmodel_path = dir.join("MLmodel");
    let text = read_limited(&mlmodel_path, MAX_MLMODEL_BYTES)
        .map_err(|why| MlflowError::Invalid(format!("MLmodel: {why} (is this an MLflow model?)")))?;
    let mlmodel = parse_mlmodel(&text).map_err(|why| MlflowError::Invalid(format!("MLmodel: {why}")))?;
    // the ONNX file is served as model.onnx; external data files stay beside it by name
    let onnx = dir.join(&mlmodel.onnx_data);
    let digest = sums.iter().find(|(_, rel)| *rel == mlmodel.onnx_data).map(|(d, _)| d.clone()).ok_or_else(|| {
        MlflowError::Invalid(format!("the onnx flavor's file '{}' is not among the artifacts", mlmodel.onnx_data))
    })?;
    if let Some(want) = info.tags.get("sluice.sha256")
        && !want.eq_ignore_ascii_case(digest.as_str())
    {
        return Err(MlflowError::Invalid(format!(
            "SHA-256 of {} is {digest}, the version's sluice.sha256 tag says {want}: not loaded",
            mlmodel.onnx_data
        )));
    }
    if mlmodel.onnx_data != "model.onnx" {
        if dir.join("model.onnx").exists() {
            return Err(MlflowError::Invalid(format!(
                "the onnx flavor's file is '{}' and another file is called model.onnx",
                mlmodel.onnx_data
            )));
        }
        std::fs::rename(&onnx, dir.join("model.onnx")).map_err(|e| io(&onnx, e))?;
    }
    if !dir.join("manifest.toml").is_file() {
        let class_labels = match info.tags.get("sluice.class_labels") {
            None => None,
            Some(t) => Some(serde_json::from_str::<Vec<String>>(t).map_err(|e| {
                MlflowError::Invalid(format!("tag sluice.class_labels is not a JSON list of strings: {e}"))
            })?),
        };
        let mut manifest = manifest_of(&mlmodel, class_labels);
        manifest.description = Some(format!(
            "{model} version {version} from the MLflow registry{}",
            if info.run_id.is_empty() { String::new() } else { format!(" (run {})", info.run_id) }
        ));
        let text = toml::to_string(&manifest).map_err(|e| MlflowError::Invalid(format!("manifest: {e}")))?;
        std::fs::write(dir.join("manifest.toml"), text).map_err(|e| io(dir, e))?;
    }
    let list: String = sums.iter().map(|(d, rel)| format!("{d}  {rel}\n")).collect();
    std::fs::write(dir.join("SHA256SUMS"), list).map_err(|e| io(dir, e))?;
    std::fs::write(dir.join(DONE), b"").map_err(|e| io(dir, e))?;
    Ok(())
}

fn read_limited(path: &Path, max: usize) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > max as u64 {
        return Err(format!("{} bytes; at most {max}", meta.len()));
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

/// What Sluice reads of an `MLmodel` file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MlModel {
    /// `flavors.onnx.data`: the ONNX file, relative to the model directory.
    pub onnx_data: String,
    /// `signature.inputs` / `signature.outputs` (JSON lists), when the model has a signature.
    pub inputs: Vec<ColumnSpec>,
    pub outputs: Vec<ColumnSpec>,
}

/// One input or output of an MLflow signature: a named column (`{"type": "double", "name"}`)
/// or a tensor (`{"type": "tensor", "tensor-spec": {"dtype", "shape"}}`).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    pub name: Option<String>,
    /// The column type, or the tensor's dtype.
    pub dtype: String,
    pub tensor: bool,
    pub shape: Option<Vec<i64>>,
}

/// Parses an `MLmodel` file (YAML, as MLflow writes it): the `onnx` flavor and the signature.
pub fn parse_mlmodel(text: &str) -> Result<MlModel, String> {
    if text.len() > MAX_MLMODEL_BYTES {
        return Err(format!("{} bytes; at most {MAX_MLMODEL_BYTES}", text.len()));
    }
    let yaml = yaml_scalars(text, &["flavors.onnx.data", "signature.inputs", "signature.outputs"])?;
    let map = &yaml.scalars;
    let onnx_data = match map.get("flavors.onnx.data") {
        Some(d) => d.clone(),
        None if yaml.flavors.iter().any(|f| f == "onnx") => "model.onnx".to_string(),
        None => {
            return Err(format!(
                "the model has no onnx flavor (flavors: {:?}); log it with mlflow.onnx.log_model",
                yaml.flavors
            ));
        }
    };
    if onnx_data.is_empty() || onnx_data.len() > 255 || onnx_data.starts_with('.') || onnx_data.contains(['/', '\\']) {
        return Err(format!("flavors.onnx.data '{onnx_data}' is not a plain file name"));
    }
    let specs = |key: &str| -> Result<Vec<ColumnSpec>, String> {
        match map.get(key).map(String::as_str) {
            None | Some("null" | "~" | "") => Ok(vec![]),
            Some(json) => parse_specs(json).map_err(|e| format!("{key}: {e}")),
        }
    };
    Ok(MlModel { onnx_data, inputs: specs("signature.inputs")?, outputs: specs("signature.outputs")? })
}

fn parse_specs(json: &str) -> Result<Vec<ColumnSpec>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let list = v.as_array().ok_or("not a JSON list")?;
    let mut out = Vec::with_capacity(list.len().min(4096));
    for item in list {
        let ty = item["type"].as_str().ok_or("an entry has no type")?;
        let name = item["name"].as_str().map(str::to_string);
        if ty == "tensor" {
            let spec = &item["tensor-spec"];
            let dtype = spec["dtype"].as_str().ok_or("a tensor has no tensor-spec.dtype")?;
            let shape = spec["shape"].as_array().map(|s| s.iter().filter_map(serde_json::Value::as_i64).collect());
            out.push(ColumnSpec { name, dtype: dtype.to_string(), tensor: true, shape });
        } else {
            out.push(ColumnSpec { name, dtype: ty.to_string(), tensor: false, shape: None });
        }
    }
    Ok(out)
}

/// The manifest an MLflow signature implies: input columns are the features (in order);
/// an integer or string output with a float `[N, classes]` tensor make a classifier (either
/// alone too), a single float output a regressor; anything else serves raw tensors.
pub fn manifest_of(m: &MlModel, class_labels: Option<Vec<String>>) -> Manifest {
    let columns = !m.inputs.is_empty() && m.inputs.iter().all(|c| !c.tensor && c.name.is_some());
    let features = columns.then(|| m.inputs.iter().filter_map(|c| c.name.clone()).collect::<Vec<_>>());
    let integer = |t: &str| {
        matches!(t, "long" | "integer" | "string" | "int64" | "int32" | "int16" | "int8" | "uint8" | "str" | "object")
    };
    let float = |t: &str| matches!(t, "double" | "float" | "float32" | "float64" | "float16");
    let named = |c: &ColumnSpec| c.name.clone();
    let label = m.outputs.iter().filter(|c| integer(&c.dtype)).find_map(named);
    let probabilities = m
        .outputs
        .iter()
        .filter(|c| c.tensor && float(&c.dtype) && c.shape.as_ref().is_some_and(|s| s.len() == 2 && s[1] != 1))
        .find_map(named);
    let (problem_type, outputs) = if label.is_some() || probabilities.is_some() {
        (ProblemType::Classification, ManifestOutputs { label, probabilities, value: None })
    } else {
        match m.outputs.as_slice() {
            [one] if float(&one.dtype) && one.name.is_some() => {
                (ProblemType::Regression, ManifestOutputs { value: one.name.clone(), ..Default::default() })
            }
            _ => (ProblemType::Tensor, ManifestOutputs::default()),
        }
    };
    let class_labels = class_labels.filter(|_| problem_type == ProblemType::Classification);
    Manifest { description: None, problem_type, features, class_labels, outputs }
}

/// What [`yaml_scalars`] keeps of a YAML document.
#[derive(Debug, Default)]
pub struct Yaml {
    /// The scalars at the paths asked for (dotted).
    pub scalars: BTreeMap<String, String>,
    /// The keys directly under the top-level `flavors` mapping (at most 64).
    pub flavors: Vec<String>,
}

/// The scalars at the `wanted` dotted paths of a YAML document as MLflow's PyYAML writes it
/// (block mappings; plain, single- and double-quoted scalars, folded over lines). Sequence
/// items are skipped: nothing Sluice reads is in one. Linear in the input; keeps only what was
/// asked for, so what it holds is bounded by the input's size.
pub fn yaml_scalars(text: &str, wanted: &[&str]) -> Result<Yaml, String> {
    let mut out = Yaml::default();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut seq: Option<usize> = None;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let line = line.trim_end();
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
            continue;
        }
        if let Some(d) = seq {
            if indent > d || (indent == d && trimmed.starts_with('-')) {
                continue;
            }
            seq = None;
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            seq = Some(indent);
            continue;
        }
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        let (key, rest) = split_key(trimmed).ok_or_else(|| format!("line {}: not 'key: value'", n + 1))?;
        if stack.len() >= 32 {
            return Err(format!("line {}: nested more than 32 levels", n + 1));
        }
        if stack.len() == 1 && stack[0].1 == "flavors" && out.flavors.len() < 64 && key.len() <= 255 {
            out.flavors.push(key.clone());
        }
        let path_len = stack.iter().map(|(_, k)| k.len() + 1).sum::<usize>() + key.len();
        let keep = wanted.iter().find(|w| {
            w.len() == path_len && {
                let mut parts = w.split('.');
                stack.iter().all(|(_, k)| parts.next() == Some(k.as_str())) && parts.next() == Some(key.as_str())
            }
        });
        if rest.is_empty() {
            stack.push((indent, key));
            continue;
        }
        // the scalar, with its continuation lines (more indented than the key)
        let quote = rest.chars().next().filter(|c| matches!(c, '\'' | '"'));
        let mut parts = vec![rest.to_string()];
        let mut open = match quote {
            Some(q) => !closes(q, &rest[1..], &mut false),
            None => false,
        };
        let mut escaped_break = false;
        while let Some((_, next)) = lines.peek() {
            let next = next.trim_end();
            let next_trim = next.trim_start();
            let next_indent = next.len() - next_trim.len();
            let continues = match quote {
                Some(_) => open,
                None => !next_trim.is_empty() && next_indent > indent,
            };
            if !continues {
                break;
            }
            if let Some(q) = quote {
                open = !closes(q, next_trim, &mut escaped_break);
            }
            if keep.is_some() {
                parts.push(next_trim.to_string());
            }
            lines.next();
        }
        if let Some(path) = keep {
            let value = scalar(&parts).map_err(|e| format!("{path}: {e}"))?;
            out.scalars.insert(path.to_string(), value);
        }
    }
    Ok(out)
}

/// `key: rest` (`rest` empty for a mapping that follows); the key may be quoted.
fn split_key(s: &str) -> Option<(String, &str)> {
    if let Some(q @ ('\'' | '"')) = s.chars().next() {
        let end = s[1..].find(q)? + 1;
        let rest = s[end + 1..].strip_prefix(':')?;
        return Some((s[1..end].to_string(), rest.trim()));
    }
    if let Some((k, rest)) = s.split_once(": ") {
        return Some((k.to_string(), rest.trim()));
    }
    s.strip_suffix(':').map(|k| (k.to_string(), ""))
}

/// Whether `segment` (one line of a scalar quoted with `q`, after the opening quote on its
/// first line) holds the closing quote. `pending`: a double-quoted line that ended in `\`.
fn closes(q: char, segment: &str, pending: &mut bool) -> bool {
    let mut chars = segment.chars().peekable();
    *pending = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' if q == '"' && chars.next().is_none() => *pending = true,
            '\'' if q == '\'' && chars.peek() == Some(&'\'') => {
                chars.next();
            }
            c if c == q => return true,
            _ => {}
        }
    }
    false
}

/// The value of a scalar given as its lines (the first one starting at the value).
fn scalar(parts: &[String]) -> Result<String, String> {
    let first = parts[0].as_str();
    let q = match first.chars().next() {
        Some(c @ ('\'' | '"')) => c,
        _ => {
            // plain: lines folded with a space; a trailing comment dropped
            let joined = parts.join(" ");
            let v = joined.split(" #").next().unwrap_or("").trim();
            return Ok(v.to_string());
        }
    };
    // fold: one line break is a space, each empty line a newline
    let mut folded = String::new();
    let mut empty_lines = 0;
    for (n, p) in parts.iter().enumerate() {
        if n == 0 {
            folded.push_str(p);
            continue;
        }
        if p.is_empty() {
            empty_lines += 1;
            continue;
        }
        let escaped_break = q == '"' && folded.ends_with('\\') && !folded.ends_with("\\\\");
        if escaped_break {
            folded.pop();
        } else if empty_lines > 0 {
            folded.extend(std::iter::repeat_n('\n', empty_lines));
        } else {
            folded.push(' ');
        }
        empty_lines = 0;
        folded.push_str(p);
    }
    let body: Vec<char> = folded.chars().skip(1).collect();
    let mut out = String::new();
    let mut k = 0;
    while k < body.len() {
        let c = body[k];
        if c == q {
            if q == '\'' && body.get(k + 1) == Some(&'\'') {
                out.push('\'');
                k += 2;
                continue;
            }
            return Ok(out);
        }
        if q == '"' && c == '\\' {
            let e = *body.get(k + 1).ok_or("an escape at the end")?;
            k += 2;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                '"' | '\\' | '/' | ' ' => out.push(e),
                'x' | 'u' | 'U' => {
                    let n = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let digits: String = body.get(k..k + n).ok_or("a short escape")?.iter().collect();
                    let code = u32::from_str_radix(&digits, 16).map_err(|_| "a bad escape")?;
                    out.push(char::from_u32(code).ok_or("an escape that is not a character")?);
                    k += n;
                }
                _ => return Err(format!("unknown escape \\{e}")),
            }
            continue;
        }
        out.push(c);
        k += 1;
    }
    Err("no closing quote".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MLmodel as MLflow 3.17 writes it for `mlflow.onnx.log_model` with a DataFrame
    /// signature (PyYAML folds the long JSON strings over lines).
    const MLMODEL: &str = r#"artifact_path: model
flavors:
  onnx:
    code: null
    data: model.onnx
    onnx_version: 1.17.0
    providers:
    - CUDAExecutionProvider
    - CPUExecutionProvider
  python_function:
    data: model.onnx
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.onnx
    python_version: 3.11.2
is_signature_from_type_hint: false
mlflow_version: 3.17.2
model_id: m-0123
signature:
  inputs: '[{"type": "double", "name": "amount", "required": true}, {"type": "double",
    "name": "account_age_days", "required": true}, {"type": "string", "name": "it''s",
    "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}, "name":
    "label"}, {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2]},
    "name": "probabilities"}]'
  params: null
utc_time_created: '2026-12-07 05:01:02.123456'
"#;

    #[test]
    fn an_mlmodel_gives_its_onnx_file_and_signature() {
        let m = parse_mlmodel(MLMODEL).unwrap();
        assert_eq!(m.onnx_data, "model.onnx");
        let names: Vec<_> = m.inputs.iter().map(|c| c.name.clone().unwrap()).collect();
        assert_eq!(names, ["amount", "account_age_days", "it's"]);
        assert_eq!(m.outputs.len(), 2);
        assert_eq!(m.outputs[1].shape, Some(vec![-1, 2]));
        let manifest = manifest_of(&m, Some(vec!["legit".into(), "fraud".into()]));
        assert_eq!(manifest.problem_type, ProblemType::Classification);
        assert_eq!(manifest.outputs.label.as_deref(), Some("label"));
        assert_eq!(manifest.outputs.probabilities.as_deref(), Some("probabilities"));
        assert_eq!(manifest.features.as_ref().unwrap().len(), 3);
        // written and read back as the repository's manifests are
        let text = toml::to_string(&manifest).unwrap();
        assert_eq!(toml::from_str::<Manifest>(&text).unwrap(), manifest);
    }

    #[test]
    fn signatures_make_regressors_and_raw_tensor_models() {
        let m = parse_mlmodel(
            "flavors:\n  onnx:\n    data: m.onnx\nsignature:\n  inputs: '[{\"type\": \"tensor\", \"tensor-spec\": {\"dtype\": \"float32\", \"shape\": [-1, 6]}}]'\n  outputs: '[{\"type\": \"double\", \"name\": \"eta\"}]'\n",
        )
        .unwrap();
        assert_eq!(m.onnx_data, "m.onnx");
        let manifest = manifest_of(&m, Some(vec!["x".into()]));
        assert_eq!(manifest.problem_type, ProblemType::Regression);
        assert_eq!(manifest.outputs.value.as_deref(), Some("eta"));
        assert_eq!(manifest.features, None, "tensor inputs have no feature names");
        assert_eq!(manifest.class_labels, None);
        let bare = parse_mlmodel("flavors:\n  onnx:\n    onnx_version: 1.17.0\n").unwrap();
        assert_eq!(bare.onnx_data, "model.onnx");
        assert_eq!(manifest_of(&bare, None).problem_type, ProblemType::Tensor);
    }

    #[test]
    fn hostile_mlmodels_are_refused_by_name() {
        for (text, want) in [
            ("flavors:\n  sklearn:\n    pickled_model: model.pkl\n", "no onnx flavor"),
            ("flavors:\n  onnx:\n    data: ../../etc/passwd\n", "not a plain file name"),
            ("flavors:\n  onnx:\n    data: .hidden\n", "not a plain file name"),
            ("flavors:\n  onnx:\n    data: model.onnx\nsignature:\n  inputs: '[{\"name\": 1}]'\n", "no type"),
            ("flavors:\n  onnx:\n    data: model.onnx\nsignature:\n  inputs: '{\"a\": 1}'\n", "not a JSON list"),
            ("flavors:\n  onnx:\n    data: model.onnx\nsignature:\n  inputs: '[unclosed\n", "no closing quote"),
            ("flavors:\n  onnx:\n    data: \"\\q\"\n", "unknown escape"),
            ("just text\n", "not 'key: value'"),
        ] {
            let e = parse_mlmodel(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let deep: String = (0..40).map(|d| format!("{}k{d}:\n", " ".repeat(d))).collect();
        assert!(parse_mlmodel(&deep).unwrap_err().contains("nested"));
        assert!(parse_mlmodel(&"a".repeat(MAX_MLMODEL_BYTES + 1)).is_err());
    }

    #[test]
    fn yaml_scalars_fold_and_unescape_as_pyyaml_writes_them() {
        let y = yaml_scalars(
            "a: 'one\n  two\n\n  three'\nb: \"x\\ty\\\n  z\\u00e9\"\nc: plain\n  folded # note\nd:\n  - 1\n  - e: 2\nf: 'it''s'\ng: 'x: y'\n",
            &["a", "b", "c", "d.e", "f", "missing"],
        )
        .unwrap();
        let m = &y.scalars;
        assert!(!m.contains_key("g"), "only what is asked for is kept");
        assert_eq!(m["a"], "one two\nthree");
        assert_eq!(m["b"], "x\tyzé");
        assert_eq!(m["c"], "plain folded");
        assert_eq!(m["f"], "it's");
        assert!(!m.contains_key("d.e"), "sequence items are skipped: {m:?}");
    }

    #[test]
    fn registry_answers_are_read_as_mlflow_writes_them() {
        assert_eq!(version_number(&serde_json::json!("12")), Some(12));
        assert_eq!(version_number(&serde_json::json!(3)), Some(3));
        assert_eq!(version_number(&serde_json::json!("0")), None);
        assert_eq!(version_number(&serde_json::json!("x")), None);
        assert_eq!(proxy_path("mlflow-artifacts:/1/models/m-abc/artifacts").unwrap(), "1/models/m-abc/artifacts");
        assert_eq!(proxy_path("mlflow-artifacts://host:5000/1/a/").unwrap(), "1/a");
        for bad in ["s3://bucket/x", "file:///tmp/x", "mlflow-artifacts:/", "mlflow-artifacts:/a/../b"] {
            assert!(proxy_path(bad).is_err(), "{bad}");
        }
        let l = listing(&serde_json::json!({"files": [
            {"path": "MLmodel", "is_dir": false, "file_size": 10},
            {"path": "1/models/x/artifacts/model.onnx", "is_dir": false, "file_size": "99"},
            {"path": "sub", "is_dir": true}
        ]}))
        .unwrap();
        assert_eq!(l[1], Entry { name: "model.onnx".into(), is_dir: false, size: Some(99) });
        assert!(l[2].is_dir);
        assert_eq!(listing(&serde_json::json!({})).unwrap(), vec![]);
        for bad in [
            serde_json::json!({"files": [{"path": ".."}]}),
            serde_json::json!({"files": [{"path": "a/.hidden"}]}),
            serde_json::json!({"files": [{}]}),
            serde_json::json!({"files": 3}),
        ] {
            assert!(listing(&bad).is_err(), "{bad}");
        }
        assert_eq!(encode_path("a b/c%d"), "a%20b/c%25d");
        let e = refused(400, br#"{"error_code": "INVALID_PARAMETER_VALUE", "message": "no alias"}"#);
        assert_eq!(e, MlflowError::Refused { status: 400, message: "INVALID_PARAMETER_VALUE: no alias".into() });
    }

    #[test]
    fn credentials_are_sent_as_mlflow_sends_them() {
        let basic = auth_header(Some("u".into()), Some("p".into()), Some("t".into())).unwrap().unwrap();
        assert_eq!(basic.to_str().unwrap(), "Basic dTpw");
        assert!(basic.is_sensitive());
        let bearer = auth_header(None, None, Some("tok".into())).unwrap().unwrap();
        assert_eq!(bearer.to_str().unwrap(), "Bearer tok");
        assert_eq!(auth_header(Some("u".into()), None, None).unwrap(), None);
        assert!(auth_header(None, None, Some("a\nb".into())).is_err());
        for (plain, coded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg==")] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }
}
