//! The built `sluice-loadtest` binary: exit codes 0 (SLOs held), 2 (an SLO failed), 1 (usage or
//! connection error), and the JSON report it writes.

use std::process::Output;

use crate::fake::{self, Behaviour};

async fn loadtest(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice-loadtest")).args(args).output().await.unwrap()
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_follow_the_slos() {
    let f = fake::http(Behaviour { fail_every: Some(10), ..Behaviour::default() }).await;
    let url = f.url();
    let base = ["--url", url.as_str(), "--endpoint", "fraud", "-c", "2", "--duration", "700ms", "--warmup", "200ms"];
    let with = |extra: &[&'static str]| base.iter().copied().chain(extra.iter().copied()).collect::<Vec<_>>();

    let o = loadtest(&with(&["--max-error-rate", "0.5", "--min-rps", "1"])).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("PASS  max_error_rate") && out.contains("all SLOs held"), "{out}");
    assert!(out.contains("http_503") && out.contains("latency ms  p50"), "{out}");

    let o = loadtest(&with(&["--max-error-rate", "0.01"])).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL  max_error_rate"), "{}", text(&o));

    let o = loadtest(&with(&["--max-p99-ms", "0.0001"])).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL  max_p99_ms"));

    let o = loadtest(&with(&["--min-rps", "1000000"])).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL  min_rps"));

    let o = loadtest(&with(&["--expect-split", "champion=50,challenger=50", "--max-split-deviation", "5"])).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL  max_split_deviation"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_connection_errors_exit_1() {
    let f = fake::http(Behaviour::default()).await;
    let url = f.url();
    let cases: Vec<Vec<&str>> = vec![
        vec!["--bogus"],
        vec!["--url", &url, "--endpoint", "e", "--rate", "0"],
        vec!["--url", &url, "--endpoint", "e", "-c", "2", "--rate", "5"],
        vec!["--url", &url, "--endpoint", "e", "--duration", "1s", "--warmup", "2s"],
        vec!["--url", &url, "--endpoint", "e", "--max-split-deviation", "3"],
        vec!["--url", &url, "--target", "v2-json"],
        vec!["--url", &url, "--target", "v2-json", "--model", "missing", "--duration", "1s"],
        vec!["--url", &url, "--endpoint", "e", "--expect-split", "a=90,b", "--duration", "1s"],
        vec!["--url", &url, "--scenario", "/nonexistent/scenario.toml"],
    ];
    for args in cases {
        let o = loadtest(&args).await;
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(!o.stderr.is_empty(), "{args:?} says why");
    }
    let port = fake::closed_port();
    let dead = format!("http://127.0.0.1:{port}");
    let o = loadtest(&["--url", &dead, "--endpoint", "e", "--duration", "1s"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = loadtest(&["--url", &dead, "--target", "grpc", "--model", "m", "--duration", "1s"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = loadtest(&["--help"]).await;
    assert_eq!(o.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_file_and_stdout() {
    let f = fake::http(Behaviour { fail_every: Some(4), ..Behaviour::default() }).await;
    let url = f.url();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let o = loadtest(&[
        "--url",
        &url,
        "--endpoint",
        "fraud",
        "-c",
        "1",
        "--duration",
        "600ms",
        "--warmup",
        "100ms",
        "--json",
        path.to_str().unwrap(),
        "--output",
        "json",
        "--expect-split",
        "champion=90,challenger=10",
        "--max-p99-ms",
        "10000",
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(stdout, file);
    let r = &file;
    assert_eq!(r["tool"]["name"], "sluice-loadtest");
    assert_eq!(r["run"]["target"], "predict");
    assert_eq!(r["run"]["url"], format!("{url}/endpoints/fraud/predict"));
    let total = r["overall"]["requests"]["total"].as_u64().unwrap();
    let ok = r["overall"]["requests"]["ok"].as_u64().unwrap();
    assert!(total > 0);
    assert_eq!(ok + r["overall"]["errors"]["http_503"]["count"].as_u64().unwrap(), total);
    for k in ["p50", "p90", "p99", "p99_9", "max", "mean"] {
        assert!(r["overall"]["latency_ms"][k].is_f64(), "{k}");
    }
    assert!(r["overall"]["throughput"]["requests_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(r["phases"].as_array().unwrap().len(), 1);
    assert_eq!(r["phases"][0]["mode"], serde_json::json!({"kind": "closed", "concurrency": 1}));
    assert_eq!(r["split"]["models"][0]["name"], "champion");
    assert!(r["split"]["chi_squared"]["p_value"].is_f64());
    assert_eq!(r["slo"]["passed"], true);
    assert_eq!(r["slo"]["checks"][0]["name"], "max_p99_ms");
}
