//! Test harness: starts the real gateway in-process on 127.0.0.1:0 with real ONNX Runtime.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice::config::Config;
use sluice::server::RunningServer;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Opt-out of the tests that need ONNX Runtime, for a machine without the library:
/// `SLUICE_SKIP_ORT_TESTS=1`. `scripts/test.sh` (what `.ci/run` runs) refuses to start with it set.
pub const SKIP_ORT_ENV: &str = "SLUICE_SKIP_ORT_TESTS";

/// The ONNX Runtime library the tests use, in-process and in the binaries they spawn:
/// `ORT_DYLIB_PATH`, else the repository's `.ort/lib/libonnxruntime.so`.
pub fn ort_lib() -> PathBuf {
    match std::env::var_os(sluice::runtime::library::ENV_VAR).filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(sluice::runtime::library::DEFAULT_RELATIVE_PATH),
    }
}

/// Whether a test that needs ONNX Runtime skips: only when the explicit opt-out
/// `SLUICE_SKIP_ORT_TESTS=1` is set. Otherwise the library must load, and the test fails here,
/// saying what to do, when it does not: a missing runtime is a failure, never a silent pass.
pub fn skip_without_ort() -> bool {
    if std::env::var(SKIP_ORT_ENV).as_deref() == Ok("1") {
        eprintln!("skipping: {SKIP_ORT_ENV}=1 skips the tests that need ONNX Runtime");
        return true;
    }
    if let Err(e) = sluice::runtime::library::environment(Some(&ort_lib())) {
        panic!(
            "this test needs ONNX Runtime: {e}\n(run scripts/fetch-onnxruntime.sh or set ORT_DYLIB_PATH; on a machine \
             without it, {SKIP_ORT_ENV}=1 skips these tests, which scripts/test.sh and CI refuse)"
        );
    }
    false
}

/// The demo config's models and endpoints with test listeners.
pub const DEMO: &str = include_str!("../../../sluice.toml");

pub struct TestServer {
    pub server: Option<RunningServer>,
    /// The inference tables of the demo config go here (not into the repository).
    pub data: Option<tempfile::TempDir>,
    pub http: String,
    pub grpc: String,
    pub admin: String,
    pub client: reqwest::Client,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(5)).await;
        }
    }

    pub fn gateway(&self) -> &sluice::core::Gateway {
        &self.server.as_ref().expect("running").gateway
    }

    pub fn control(&self) -> &sluice::control::Control {
        &self.server.as_ref().expect("running").control
    }

    /// Sends `/predict` to `path` and returns (status, served model header).
    pub async fn served(&self, path: &str, body: &serde_json::Value, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.client.post(self.url(path)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let served =
            r.headers().get("x-sluice-served-model").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        (r.status().as_u16(), served)
    }
}

/// Parses `toml` (relative paths from the repo root), binds every listener on 127.0.0.1:0.
pub fn config(toml: &str) -> Config {
    let mut c = Config::from_toml(toml, "test.toml", &repo_root()).expect("test config is valid");
    let any = "127.0.0.1:0".parse().expect("addr");
    c.server.http_addr = any;
    c.server.grpc_addr = any;
    c.server.admin_addr = any;
    c.runtime.onnxruntime_lib = Some(ort_lib());
    c
}

pub async fn start_with(config: Config) -> TestServer {
    start_from(config, None).await
}

/// Starts with a config file as source (watched and reloadable).
pub async fn start_from(config: Config, source: Option<sluice::control::ConfigSource>) -> TestServer {
    let server = sluice::server::start(config, source).await.expect("server starts");
    TestServer {
        http: format!("http://{}", server.http_addr),
        grpc: format!("http://{}", server.grpc_addr),
        admin: format!("http://{}", server.admin_addr),
        server: Some(server),
        data: None,
        client: reqwest::Client::new(),
    }
}

pub async fn start(toml: &str) -> TestServer {
    start_tweaked(toml, |_| {}).await
}

/// As [`start`], with `tweak` applied to the parsed config (settings a file cannot set).
pub async fn start_tweaked(toml: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let data = tempfile::tempdir().unwrap();
    let toml = toml.replace("data_dir = \"data\"", &format!("data_dir = \"{}\"", data.path().display()));
    let mut c = config(&toml);
    tweak(&mut c);
    let mut t = start_with(c).await;
    t.data = Some(data);
    t
}

/// The committed fixture rows of a tabular model: (columns, rows).
pub fn fixture(model: &str) -> (Vec<String>, Vec<Vec<f64>>) {
    let path = repo_root().join(format!("tests/fixtures/inputs/{model}.json"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    let cols = v["columns"].as_array().expect("columns").iter().map(|c| c.as_str().expect("str").to_string()).collect();
    let rows = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r.as_array().expect("row").iter().map(|x| x.as_f64().expect("num")).collect())
        .collect();
    (cols, rows)
}

pub async fn post_json(t: &TestServer, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = t.client.post(t.url(path)).json(body).send().await.expect("request");
    let status = r.status().as_u16();
    let v = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, v)
}

/// The value of one Prometheus sample on the admin port, 0 when absent. `labels` is the exact
/// label text, e.g. `endpoint="e",served_model="s"`.
pub async fn metric(t: &TestServer, name: &str, labels: &str) -> f64 {
    let text = t.client.get(format!("{}/metrics", t.admin)).send().await.unwrap().text().await.unwrap();
    let prefix = format!("{name}{{{labels}}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().parse().unwrap()).unwrap_or(0.0)
}

/// Polls `f` until it returns true or 20 s pass (for work that finishes in the background).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One fraud row as a `/predict` body with `n` rows.
pub fn fraud_body(n: usize) -> serde_json::Value {
    let (cols, rows) = fixture("fraud_classifier");
    serde_json::json!({"dataframe_split": {"columns": cols, "data": rows.iter().cycle().take(n).collect::<Vec<_>>()}})
}

/// A webhook receiver on 127.0.0.1:0 that records every JSON body it gets.
pub async fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    let got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

/// The data files of the Delta table in `dir` at its latest version, read from the JSON commits
/// of `_delta_log` by this function alone (not delta-rs): every `add` path not later removed.
/// Sluice never cleans up commit files that a reader would need, so no checkpoint is read.
pub fn delta_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir.join("_delta_log")) else { return Vec::new() };
    let mut commits: Vec<(u64, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let v = name.strip_suffix(".json")?.parse::<u64>().ok()?;
            Some((v, e.path()))
        })
        .collect();
    commits.sort();
    for (i, (v, _)) in commits.iter().enumerate() {
        assert_eq!(*v, i as u64, "a gap in the log of {}", dir.display());
    }
    let mut live = std::collections::BTreeSet::new();
    for (_, path) in commits {
        for line in std::fs::read_to_string(&path).unwrap().lines().filter(|l| !l.trim().is_empty()) {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(p) = action.pointer("/add/path").and_then(|p| p.as_str()) {
                live.insert(percent_decode(p));
            }
            if let Some(p) = action.pointer("/remove/path").and_then(|p| p.as_str()) {
                live.remove(&percent_decode(p));
            }
        }
    }
    live.into_iter().map(|p| dir.join(p)).collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
