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
    if common::skip_without_ort() {
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
        .header("x-sluice-served-model", "champion")
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
    if common::skip_without_ort() {
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
    if common::skip_without_ort() {
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

#[test]
fn non_loopback_admin_without_a_token_is_refused() {
    let config = format!(
        "[server]\nhttp_addr = \"127.0.0.1:PORT\"\nadmin_addr = \"0.0.0.0:0\"\n[runtime]\nmodel_repository = \"{}\"\n[[models]]\nname = \"mlp\"\nversions = [1]\n",
        models_dir()
    );
    let stderr = serve_must_fail_before_binding(&config, &[]);
    assert!(stderr.contains("server.admin_token"), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    let config = format!(
        "[server]\nhttp_addr = \"127.0.0.1:PORT\"\n[runtime]\nmodel_repository = \"{}\"\n[[models]]\nname = \"mlp\"\nversions = [1]\n",
        models_dir()
    );
    let stderr = serve_must_fail_before_binding(&config, &["--admin", "0.0.0.0:0"]);
    assert!(stderr.contains("needs a bearer token"), "{stderr}");
}

#[test]
fn validate_checks_every_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("envs.toml");
    let text = format!(
        r#"
        [runtime]
        model_repository = "{}"
        [[models]]
        name = "mlp"
        versions = [1]
        [environments.staging.server]
        http_addr = "127.0.0.1:9000"
        [[environments.prod.models]]
        name = "mlp"
        versions = [99]
        "#,
        models_dir()
    );
    std::fs::write(&file, text).unwrap();
    let out = Command::new(BIN).arg("validate").arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.contains("(environment staging): valid"), "{stdout}");
    assert!(stderr.contains("error (environment prod)") && stderr.contains("version 99"), "{stderr}");
    let out = Command::new(BIN).arg("validate").arg(&file).args(["--env", "staging"]).output().unwrap();
    assert!(out.status.success());
    let out = Command::new(BIN).arg("validate").arg(&file).args(["--env", "qa"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown environment 'qa'"));
}

/// Spawns `sluice serve --config file` (plus `extra`) on free ports; returns it and its ports.
fn serve_file(file: &Path, extra: &[&str]) -> (std::process::Child, serde_json::Value) {
    let ports = file.with_file_name("ports.json");
    let mut child = Command::new(BIN)
        .current_dir(repo_root())
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(extra)
        .arg("--config")
        .arg(file)
        .arg("--ports-file")
        .arg(&ports)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = wait_for_file(&ports, &mut child);
    (child, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file() {
    if common::skip_without_ort() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    let text = format!(
        r#"
        [server]
        watch_config = false
        [runtime]
        model_repository = "{}"
        [[models]]
        name = "fraud_classifier"
        versions = [1, 2]
        [[endpoints]]
        name = "e"
        served_entities = [{{ name = "a", entity_name = "fraud_classifier", entity_version = 1 }},
                           {{ name = "b", entity_name = "fraud_classifier", entity_version = 2 }}]
        traffic_config = {{ routes = [{{ served_model_name = "a", traffic_percentage = 100 }},
                                     {{ served_model_name = "b", traffic_percentage = 0 }}] }}
        [environments.test.server]
        default_endpoint = "e"
        "#,
        models_dir()
    );
    std::fs::write(&file, &text).unwrap();
    let (mut child, p) = serve_file(&file, &["--env", "test"]);
    let http = format!("http://127.0.0.1:{}", p["http"]);
    let client = reqwest::Client::new();
    let (cols, rows) = common::fixture("fraud_classifier");
    let body = serde_json::json!({"dataframe_split": {"columns": cols, "data": [rows[0].clone()]}});
    let served = |client: reqwest::Client, body: serde_json::Value, http: String| async move {
        let r = client.post(format!("{http}/predict")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "the environment's default endpoint serves /predict");
        r.headers()["x-sluice-served-model"].to_str().unwrap().to_string()
    };
    assert_eq!(served(client.clone(), body.clone(), http.clone()).await, "a");
    std::fs::write(
        &file,
        text.replace("traffic_percentage = 100 }", "traffic_percentage = 0 }")
            .replace("traffic_percentage = 0 }]", "traffic_percentage = 100 }]"),
    )
    .unwrap();
    let status = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    while served(client.clone(), body.clone(), http.clone()).await != "b" {
        assert!(start.elapsed() < Duration::from_secs(20), "SIGHUP did not reload the config");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
}

/// `sluice validate` plans every monitor expression against the table schema the models'
/// manifests imply, and names the metric whose SQL is wrong.
#[test]
fn validate_checks_monitor_expressions() {
    let dir = tempfile::tempdir().unwrap();
    let config = |definition: &str| {
        format!(
            r#"
            [runtime]
            model_repository = "{}"
            [[models]]
            name = "fraud_classifier"
            versions = [1]
            [[endpoints]]
            name = "fraud"
            served_entities = [{{ name = "m", entity_name = "fraud_classifier", entity_version = 1 }}]
            inference_table = {{ enabled = true }}
            [endpoints.monitor]
            [[endpoints.monitor.custom_metrics]]
            type = "aggregate"
            name = "share_big"
            definition = "{definition}"
            "#,
            models_dir()
        )
    };
    let file = dir.path().join("m.toml");
    std::fs::write(&file, config("avg(CASE WHEN amount > 1000 THEN 1.0 ELSE 0.0 END)")).unwrap();
    let out = Command::new(BIN).arg("validate").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&file, config("avg(amount_typo)")).unwrap();
    let out = Command::new(BIN).arg("validate").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("custom metric 'share_big'") && err.contains("amount_typo"), "{err}");
}

/// `sluice rollout ...` and `sluice experiment report` against a running binary, and
/// `sluice validate` naming a bad rollout field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_and_experiment_cli() {
    if common::skip_without_ort() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    let text = format!(
        r#"
        [server]
        watch_config = false
        data_dir = "{}"
        [runtime]
        model_repository = "{}"
        [[endpoints]]
        name = "e"
        served_entities = [{{ name = "a", entity_name = "fraud_classifier", entity_version = 1 }},
                           {{ name = "b", entity_name = "fraud_classifier", entity_version = 2 }}]
        traffic_config = {{ routes = [{{ served_model_name = "a", traffic_percentage = 100 }},
                                     {{ served_model_name = "b", traffic_percentage = 0 }}] }}
        inference_table = {{ enabled = true, flush_interval_ms = 100 }}
        "#,
        dir.path().join("data").display(),
        models_dir()
    );
    std::fs::write(&file, &text).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("{text}\n[endpoints.rollout]\ncandidate = \"b\"\nsteps = [50, 10]\ninterval = \"5m\"\n"),
    )
    .unwrap();
    let out = Command::new(BIN).arg("validate").arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("endpoints[0].rollout.steps"), "{err}");

    let (mut child, p) = serve_file(&file, &["--test-clock"]);
    let admin = format!("http://127.0.0.1:{}", p["admin"]);
    let cli = |args: &[&str]| {
        let out = Command::new(BIN).args(args).args(["--admin-url", &admin]).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&[
        "rollout",
        "start",
        "e",
        "--to",
        "b",
        "--steps",
        "25,50,100",
        "--interval",
        "5m",
        "--min-requests",
        "5",
        "--max-error-rate",
        "0.02",
    ]);
    assert!(ok, "{err}");
    // a person reads what it did and how to undo it
    assert!(out.starts_with("e: rollout of b from a started at step 1 of 3 (25% 50% 100%): b 25%\n"), "{out}");
    assert!(out.contains("traffic: a 100% -> 75%, b 0% -> 25%\nconfig version 1 -> 2\n"), "{out}");
    assert!(out.ends_with("undo: sluice rollout abort e\n"), "{out}");
    let (ok, out, _) = cli(&["rollout", "status", "e", "-o", "json"]);
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok);
    assert_eq!((st["phase"].as_str(), st["candidate_percent"].as_i64()), (Some("progressing"), Some(25)));
    assert_eq!(st["spec"]["guardrails"]["max_error_rate"], 0.02);
    let (ok, _, err) = cli(&["rollout", "start", "e", "--to", "b", "--steps", "50", "--interval", "5m"]);
    assert!(!ok && err.contains("409"), "{err}");
    let (_, out, _) = cli(&["rollout", "pause", "e"]);
    assert!(out.contains("paused at step 1 of 3") && out.ends_with("undo: sluice rollout resume e\n"), "{out}");
    let (_, out, _) = cli(&["rollout", "resume", "e", "-o", "json"]);
    assert!(out.contains("\"progressing\""), "{out}");
    let (ok, out, _) = cli(&["rollout", "status"]);
    assert!(ok && out.starts_with("ENDPOINT") && out.lines().nth(1).unwrap().starts_with("e "), "{out}");
    let (ok, out, _) = cli(&["rollout", "status", "e"]);
    assert!(ok && out.contains("progressing at step 1 of 3") && out.contains("started"), "{out}");
    let (ok, out, _) = cli(&["rollout", "abort", "e"]);
    assert!(ok && out.contains("aborted at step 1 of 3 (25% 50% 100%): all traffic back to a"), "{out}");
    assert!(out.contains("traffic: a 75% -> 100%, b 25% -> 0%"), "{out}");
    let undo = out.lines().find_map(|l| l.split_once("): ").filter(|(h, _)| h.starts_with("undo")).map(|(_, c)| c));
    assert_eq!(
        undo,
        Some(
            "sluice rollout start e --to b --from a --steps 25,50,100 --interval 5m --min-requests 5 --max-error-rate 0.02"
        ),
        "{out}"
    );
    let (ok, _, err) = cli(&["rollout", "start", "e", "--to", "nobody", "--steps", "50", "--interval", "5m"]);
    assert!(!ok && err.contains("400") && err.contains("nobody"), "{err}");

    let client = reqwest::Client::new();
    let (cols, rows) = common::fixture("fraud_classifier");
    for r in rows.iter().take(10) {
        let body = serde_json::json!({"dataframe_split": {"columns": cols, "data": [r]}});
        let resp = client
            .post(format!("http://127.0.0.1:{}/endpoints/e/predict", p["http"]))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let start = Instant::now();
    loop {
        let (ok, out, err) = cli(&["experiment", "report", "e", "--since", "1h"]);
        assert!(ok, "{err}");
        if out.contains("(10 requests)") {
            assert!(out.contains("SERVED MODEL") && out.contains("sample ratio"), "{out}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the report never counted 10 requests: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out, _) = cli(&["experiment", "report", "e", "-o", "json"]);
    assert!(ok && serde_json::from_str::<serde_json::Value>(&out).unwrap()["arms"].is_array(), "{out}");
    // a reload of an edited file says what changed in each endpoint and how to undo it
    std::fs::write(
        &file,
        text.replace("traffic_percentage = 100", "traffic_percentage = 60")
            .replace("traffic_percentage = 0", "traffic_percentage = 40"),
    )
    .unwrap();
    let (ok, out, err) = cli(&["config", "reload"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("reloaded the config file: 1 endpoint(s) changed\ne: a 100% -> 60%, b 0% -> 40%\n"),
        "{out}"
    );
    let undo = out.lines().find_map(|l| l.strip_prefix("undo: ")).unwrap_or_else(|| panic!("{out}"));
    let (ok, out, err) = cli(&undo.split_whitespace().skip(1).collect::<Vec<_>>());
    assert!(ok && out.starts_with("e: a 60% -> 100%, b 40% -> 0%\n"), "{out} {err}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
}

/// Holds a `/predict` request in flight (headers sent, body never) on `http`.
async fn stalled_request(http: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let host = http.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST /predict HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // Let the request reach its handler before the signal comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, start.elapsed());
        }
        assert!(start.elapsed() < limit, "sluice did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &std::process::Child, sig: &str) {
    assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

/// Shutdown is bounded by --shutdown-grace-secs even while a client holds a request open, and a
/// second SIGTERM during the drain exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_has_one_deadline_and_a_second_sigterm_exits_at_once() {
    if common::skip_without_ort() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    let demo = common::DEMO
        .replace("data_dir = \"data\"", &format!("data_dir = \"{}\"", dir.path().join("data").display()))
        .replace("model_repository = \"models\"", &format!("model_repository = \"{}\"", models_dir()))
        .replace("baseline = \"models/", &format!("baseline = \"{}/", models_dir()));
    std::fs::write(&file, demo).unwrap();
    // One SIGTERM: the stalled request is waited for until the drain's share of the deadline
    // (3 of 4 s; the last quarter is the table flush's), then cut off.
    let (mut child, p) = serve_file(&file, &["--shutdown-grace-secs", "4"]);
    let http = format!("http://127.0.0.1:{}", p["http"]);
    let _held = stalled_request(&http).await;
    signal(&child, "-TERM");
    let (status, took) = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert!(took >= Duration::from_millis(2500), "the drain did not wait for the request in flight: {took:?}");
    assert!(took < Duration::from_secs(8), "the shutdown overran its deadline: {took:?}");
    // Two SIGTERMs: the second ends a 60-second drain at once.
    std::fs::remove_file(dir.path().join("ports.json")).unwrap();
    let (mut child, p) = serve_file(&file, &["--shutdown-grace-secs", "60"]);
    let http = format!("http://127.0.0.1:{}", p["http"]);
    let _held = stalled_request(&http).await;
    signal(&child, "-TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.try_wait().unwrap().is_none(), "the first SIGTERM should drain, not exit");
    signal(&child, "-TERM");
    let (status, took) = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// A model.onnx replaced under a served version is not swapped in by a reload: the loaded
/// version keeps answering exactly as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_model_file_does_not_change_a_served_version() {
    if common::skip_without_ort() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("models");
    let src = repo_root().join("models/fraud_classifier");
    let dst = repo.join("fraud_classifier");
    for v in ["1", "2"] {
        std::fs::create_dir_all(dst.join(v)).unwrap();
        std::fs::copy(src.join(v).join("model.onnx"), dst.join(v).join("model.onnx")).unwrap();
    }
    std::fs::copy(src.join("manifest.toml"), dst.join("manifest.toml")).unwrap();
    let file = dir.path().join("sluice.toml");
    let text = format!(
        r#"
        [server]
        watch_config = false
        [runtime]
        model_repository = "{}"
        [[models]]
        name = "fraud_classifier"
        versions = [1]
        "#,
        repo.display()
    );
    std::fs::write(&file, &text).unwrap();
    let (mut child, p) = serve_file(&file, &[]);
    let http = format!("http://127.0.0.1:{}", p["http"]);
    let (_, rows) = common::fixture("fraud_classifier");
    let x: Vec<f64> = rows.iter().take(16).flatten().copied().collect();
    let body = serde_json::json!({"inputs": [{"name": "input", "shape": [16, 8], "datatype": "FP32", "data": x}]});
    let client = reqwest::Client::new();
    let answer = |client: reqwest::Client| {
        let (url, body) = (format!("{http}/v2/models/fraud_classifier/versions/1/infer"), body.clone());
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()["outputs"].clone()
        }
    };
    let before = answer(client.clone()).await;
    // v2 (a different model) copied over v1's file, then a reload.
    std::fs::copy(dst.join("2/model.onnx"), dst.join("1/model.onnx")).unwrap();
    signal(&child, "-HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(answer(client.clone()).await, before, "a served version changed under its clients");
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).0.success());
}

/// Out of file descriptors, the accept loop refuses the waiting connections and goes on: once
/// the flood closes, the next request is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_does_not_stall_the_listener() {
    if common::skip_without_ort() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    let text = format!(
        "[server]\nwatch_config = false\n[runtime]\nmodel_repository = \"{}\"\n[[models]]\nname = \"fraud_classifier\"\nversions = [1]\n",
        models_dir()
    );
    std::fs::write(&file, text).unwrap();
    let ports = dir.path().join("ports.json");
    // A hard limit of 256 descriptors: the soft one cannot be raised past it.
    let mut child = Command::new("prlimit")
        .current_dir(repo_root())
        .args(["--nofile=256:256", BIN, "serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0", "--config"])
        .arg(&file)
        .arg("--ports-file")
        .arg(&ports)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = wait_for_file(&ports, &mut child);
    let host = format!("127.0.0.1:{}", p["http"]);
    // More connections than the gateway has descriptors for, each sending a request head so
    // none is closed as silent.
    let mut flood = Vec::new();
    for _ in 0..400 {
        use tokio::io::AsyncWriteExt;
        let Ok(mut s) = tokio::net::TcpStream::connect(&host).await else { break };
        let _ = s.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n").await;
        flood.push(s);
    }
    // While the flood holds, the gateway runs out of descriptors as it accepts (on a loaded
    // machine that takes a while). Its admin listener is then out of descriptors too, so a
    // scrape now may fail: hold the flood for up to 10 s or until a scrape shows the
    // exhaustion, then let it go and read the counter (cumulative) once descriptors are back.
    let exhausted = "sluice_accept_errors_total{listener=\"http\",kind=\"fd_exhausted\"}";
    let scraper = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let metrics_url = format!("http://127.0.0.1:{}/metrics", p["admin"]);
    let scrape = || async {
        let r = scraper.get(&metrics_url).send().await.ok()?;
        r.text().await.ok()
    };
    let mut metrics = String::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) && !metrics.contains(exhausted) {
        metrics = scrape().await.unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(flood);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) && !metrics.contains(exhausted) {
        metrics = scrape().await.unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !metrics.contains(exhausted) {
        signal(&child, "-KILL");
        let _ = child.wait();
    }
    assert!(
        metrics.contains(exhausted),
        "the flood did not exhaust the descriptors: {}",
        metrics.lines().filter(|l| l.contains("accept") || l.contains("refused")).collect::<Vec<_>>().join("\n")
    );
    let client = reqwest::Client::new();
    let (_, rows) = common::fixture("fraud_classifier");
    let body = serde_json::json!({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": rows[0]}]});
    let started = Instant::now();
    loop {
        let r = client.post(format!("http://{host}/v2/models/fraud_classifier/infer")).json(&body).send().await;
        if r.as_ref().is_ok_and(|r| r.status() == 200) {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            signal(&child, "-KILL");
            let _ = child.wait();
            panic!("not served 10 s after the flood: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).0.success());
}
