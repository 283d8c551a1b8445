//! Black-box tests: spawn the `sluice` binary; prove bad configs fail before any port is bound.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, repo_root};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn wait_for_file(path: &Path, child: &mut std::process::Child) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Some(v) = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()) {
            return v;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("sluice exited early: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "sluice did not start within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_the_demo_and_stops_on_sigterm() {
    if !common::ort_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = dir.path().join("ports.json");
    let mut child = Command::new(BIN)
        .current_dir(repo_root())
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--ports-file"])
        .arg(&ports)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = wait_for_file(&ports, &mut child);
    let http = format!("http://127.0.0.1:{}", p["http"]);
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{http}/v2/health/ready")).send().await.unwrap().status(), 200);
    let (cols, rows) = common::fixture("fraud_classifier");
    let r = client
        .post(format!("{http}/predict"))
        .json(&serde_json::json!({"dataframe_split": {"columns": cols, "data": rows}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let admin = format!("http://127.0.0.1:{}/metrics", p["admin"]);
    let metrics = client.get(admin).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("sluice_requests_total{endpoint=\"fraud\",served_model=\"champion\",outcome=\"success\"} 1"),
        "{metrics}"
    );
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "sluice did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
}

/// Runs `sluice serve` on `config` while this test holds `port`: if sluice got as far as binding,
/// its error would be "cannot bind"; a config error must come first.
fn serve_must_fail_before_binding(config: &str, extra: &[&str]) -> String {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, config.replace("PORT", &port.to_string())).unwrap();
    let out = Command::new(BIN)
        .current_dir(repo_root())
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .args(extra)
        .output()
        .unwrap();
    assert!(!out.status.success(), "sluice accepted a bad config");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("cannot bind"), "sluice tried to bind before failing: {stderr}");
    drop(held);
    stderr
}

fn models_dir() -> String {
    repo_root().join("models").display().to_string()
}

#[test]
fn invalid_config_exits_before_binding_and_names_the_field() {
    let config = format!(
        r#"
        [server]
        http_addr = "127.0.0.1:PORT"
        grpc_addr = "127.0.0.1:PORT"
        admin_addr = "127.0.0.1:PORT"
        [runtime]
        model_repository = "{}"
        [[models]]
        name = "fraud_classifier"
        versions = [1]
        batching = {{ max_batch_size = 0 }}
        "#,
        models_dir()
    );
    let stderr = serve_must_fail_before_binding(&config, &[]);
    assert!(stderr.contains("models[0].batching.max_batch_size"), "{stderr}");
    assert!(stderr.contains("use 1..="), "{stderr}");
    // `validate` reports the same without serving
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, config.replace("PORT", "1")).unwrap();
    let out = Command::new(BIN).arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("models[0].batching.max_batch_size"));
    let out = Command::new(BIN).current_dir(repo_root()).args(["validate", "sluice.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn model_that_does_not_fit_its_manifest_fails_before_binding() {
    if !common::ort_available() {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    let m = repo.path().join("broken/1");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(repo_root().join("models/delivery_time/1/model.onnx"), m.join("model.onnx")).unwrap();
    std::fs::write(
        repo.path().join("broken/manifest.toml"),
        "problem_type = \"regression\"\nfeatures = [\"a\", \"b\"]\n",
    )
    .unwrap();
    let config = format!(
        r#"
        [server]
        http_addr = "127.0.0.1:PORT"
        [runtime]
        model_repository = "{}"
        [[models]]
        name = "broken"
        versions = [1]
        "#,
        repo.path().display()
    );
    let stderr = serve_must_fail_before_binding(&config, &[]);
    assert!(stderr.contains("model broken version 1"), "{stderr}");
    assert!(stderr.contains("manifest lists 2 features"), "{stderr}");
}

#[test]
fn missing_onnxruntime_is_one_clear_line() {
    let config = format!(
        "[server]\nhttp_addr = \"127.0.0.1:PORT\"\n[runtime]\nmodel_repository = \"{}\"\n[[models]]\nname = \"mlp\"\nversions = [1]\n",
        models_dir()
    );
    let stderr = serve_must_fail_before_binding(&config, &["--ort-lib", "/nonexistent/libonnxruntime.so"]);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("ONNX Runtime library not found at /nonexistent/libonnxruntime.so"), "{stderr}");
    assert!(lines[0].contains("scripts/fetch-onnxruntime.sh"), "{stderr}");
}

#[test]
fn cuda_where_unavailable_is_a_startup_error() {
    if !common::ort_available() {
        return;
    }
    let config = format!(
        "[server]\nhttp_addr = \"127.0.0.1:PORT\"\n[runtime]\nmodel_repository = \"{}\"\n[[models]]\nname = \"mlp\"\nversions = [1]\nprovider = \"cuda\"\n",
        models_dir()
    );
    let stderr = serve_must_fail_before_binding(&config, &[]);
    assert!(stderr.contains("execution provider cuda (device 0) is not available"), "{stderr}");
    assert!(stderr.contains("provider = \"cpu\""), "{stderr}");
}
