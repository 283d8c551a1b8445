//! Live config editing through the admin API: traffic edits under load with zero failed
//! requests, blue-green, adding and removing a model version, bad edits, auth, history and
//! rollback, reload on file change, and the operator CLI.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::common::{self, eventually, fraud_body};
use crate::traffic::copy_dir;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn live_config(repo: &std::path::Path, extra_server: &str) -> String {
    format!(
        r#"
        [server]
        {extra_server}
        [runtime]
        model_repository = "{}"
        [[models]]
        name = "fraud_classifier"
        versions = [1, 2]
        [[endpoints]]
        name = "live"
        served_entities = [{{ name = "blue", entity_name = "fraud_classifier", entity_version = 1 }},
                           {{ name = "green", entity_name = "fraud_classifier", entity_version = 2 }}]
        traffic_config = {{ routes = [{{ served_model_name = "blue", traffic_percentage = 100 }},
                                     {{ served_model_name = "green", traffic_percentage = 0 }}] }}
        "#,
        repo.display()
    )
}

/// A gateway started from `file` (watched and reloadable), its listeners and library as
/// `sluice serve --http/--grpc/--admin/--ort-lib` set them: every reload applies them again.
async fn start_watched(file: &std::path::Path) -> common::TestServer {
    let any = Some("127.0.0.1:0".parse().unwrap());
    let overrides = sluice::config::Overrides {
        http_addr: any,
        grpc_addr: any,
        admin_addr: any,
        onnxruntime_lib: Some(std::path::absolute(common::ort_lib()).unwrap().display().to_string()),
        test_clock: false,
        config_store: None,
    };
    let cfg = sluice::config::Config::load_with(file, None, &overrides).unwrap();
    let source = sluice::control::ConfigSource { path: file.to_path_buf(), env: None, overrides };
    common::start_from(cfg, Some(source)).await
}

/// A temporary repository holding a copy of the fraud classifier (v1-v3).
fn temp_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&common::repo_root().join("models/fraud_classifier"), &dir.path().join("fraud_classifier"));
    dir
}

async fn admin(t: &common::TestServer, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    // every state-changing admin call declares JSON, body or not
    let mut req = t.client.request(method, format!("{}{path}", t.admin)).header("content-type", "application/json");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn routes(pairs: &[(&str, u32)]) -> Value {
    json!({"routes": pairs.iter().map(|(n, p)| json!({"served_model_name": n, "traffic_percentage": p})).collect::<Vec<_>>()})
}

/// Counts answers by served model over `n` requests.
async fn observe(t: &common::TestServer, n: usize) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    let body = fraud_body(1);
    for _ in 0..n {
        let (s, served) = t.served("/endpoints/live/predict", &body, &[]).await;
        assert_eq!(s, 200);
        *counts.entry(served).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_edits_and_model_changes_under_load_fail_no_request() {
    if common::skip_without_ort() {
        return;
    }
    let repo = temp_repo();
    let t = common::start(&live_config(repo.path(), "")).await;
    // background load: 4 clients until told to stop; every non-200 is a failure
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, url, stop, sent, failed) =
            (t.client.clone(), t.url("/endpoints/live/predict"), stop.clone(), sent.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let body = fraud_body(2);
            while !stop.load(Ordering::Relaxed) {
                let ok = client.post(&url).json(&body).send().await.map(|r| r.status() == 200).unwrap_or(false);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // 20 traffic changes; blue-green switches among them; the observed split follows each
    let plan: [(u32, u32); 20] = [
        (0, 100),
        (100, 0),
        (50, 50),
        (0, 100),
        (90, 10),
        (100, 0),
        (0, 100),
        (30, 70),
        (100, 0),
        (0, 100),
        (75, 25),
        (100, 0),
        (0, 100),
        (60, 40),
        (100, 0),
        (0, 100),
        (20, 80),
        (100, 0),
        (0, 100),
        (100, 0),
    ];
    for (blue, green) in plan {
        let (s, v) = admin(
            &t,
            reqwest::Method::PATCH,
            "/admin/endpoints/live/traffic",
            Some(routes(&[("blue", blue), ("green", green)])),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let counts = observe(&t, 100).await;
        let g = counts.get("green").copied().unwrap_or(0) as i64;
        match green {
            0 | 100 => assert_eq!(g, i64::from(green), "after {blue}/{green}: {counts:?}"),
            p => assert!((g - i64::from(p)).abs() <= 20, "after {blue}/{green}: {counts:?}"),
        }
    }
    // a new model version (v3, not loaded before) joins without a restart, then leaves
    let mut with_v3: Value = admin(&t, reqwest::Method::GET, "/admin/endpoints/live", None).await.1["config"].clone();
    with_v3["served_entities"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "v3", "entity_name": "fraud_classifier", "entity_version": "3"}));
    with_v3["traffic_config"] = routes(&[("blue", 0), ("green", 0), ("v3", 100)]);
    let (s, v) = admin(&t, reqwest::Method::PUT, "/admin/endpoints/live", Some(with_v3)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(observe(&t, 50).await.get("v3"), Some(&50));
    let without: Value = json!({
        "served_entities": [{"name": "blue", "entity_name": "fraud_classifier", "entity_version": "1"},
                            {"name": "green", "entity_name": "fraud_classifier", "entity_version": "2"}],
        "traffic_config": routes(&[("blue", 100), ("green", 0)])});
    let (s, v) = admin(&t, reqwest::Method::PUT, "/admin/endpoints/live", Some(without)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(observe(&t, 50).await.get("blue"), Some(&50));
    assert!(t.gateway().snapshot().registry.get_version("fraud_classifier", 3).is_none(), "v3 was dropped");
    stop.store(true, Ordering::Relaxed);
    for h in load {
        h.await.unwrap();
    }
    assert!(sent.load(Ordering::Relaxed) > 100, "the background load ran");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests during live edits");
    let (_, h) = admin(&t, reqwest::Method::GET, "/admin/endpoints/live/history", None).await;
    let h = h["history"].as_array().unwrap();
    assert_eq!(h.len(), 23, "startup + 20 traffic edits + 2 config edits");
    assert_eq!(h[0]["source"], "startup");
    assert_eq!(h[22]["version"], 23);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_edits_are_refused_and_serving_goes_on() {
    if common::skip_without_ort() {
        return;
    }
    let repo = temp_repo();
    // a corrupt model file for version 7
    std::fs::create_dir_all(repo.path().join("fraud_classifier/7")).unwrap();
    std::fs::write(repo.path().join("fraud_classifier/7/model.onnx"), b"this is not an onnx file").unwrap();
    let t = common::start(&live_config(repo.path(), "")).await;
    let before = admin(&t, reqwest::Method::GET, "/admin/endpoints/live", None).await.1;
    let entity = |name: &str, model: &str, v: &str| json!({"name": name, "entity_name": model, "entity_version": v});
    let cases: Vec<(reqwest::Method, &str, Value, u16, &str)> = vec![
        (
            reqwest::Method::PATCH,
            "/admin/endpoints/live/traffic",
            routes(&[("blue", 90), ("green", 9)]),
            400,
            "sum to 99",
        ),
        (
            reqwest::Method::PATCH,
            "/admin/endpoints/live/traffic",
            routes(&[("blue", 90), ("purple", 10)]),
            400,
            "'purple' is not a served entity",
        ),
        (
            reqwest::Method::PATCH,
            "/admin/endpoints/nope/traffic",
            routes(&[("blue", 100)]),
            404,
            "unknown endpoint 'nope'",
        ),
        (
            reqwest::Method::PUT,
            "/admin/endpoints/live",
            json!({"served_entities": [entity("blue", "no_such_model", "1")], "traffic_config": routes(&[("blue", 100)])}),
            400,
            "has no model file",
        ),
        (
            reqwest::Method::PUT,
            "/admin/endpoints/live",
            json!({"served_entities": [entity("blue", "fraud_classifier", "1"), entity("bad", "fraud_classifier", "7")],
                   "traffic_config": routes(&[("blue", 100), ("bad", 0)])}),
            400,
            "fraud_classifier version 7",
        ),
        (
            reqwest::Method::PUT,
            "/admin/endpoints/live",
            json!({"served_entities": [entity("blue", "fraud_classifier", "1")], "traffic_config": routes(&[("blue", 100)]),
                   "shadow": [{"served_model_name": "blue", "mirror_percent": 10}]}),
            400,
            "also a traffic route",
        ),
        (reqwest::Method::PUT, "/admin/endpoints/live", json!({"served_entities": 5}), 400, "invalid endpoint config"),
        (reqwest::Method::POST, "/admin/endpoints/live/rollback", json!({"version": 99}), 404, "no config version 99"),
    ];
    for (method, path, body, status, needle) in cases {
        let (s, v) = admin(&t, method, path, Some(body)).await;
        let msg = v["error"].as_str().unwrap_or_default().to_string();
        assert_eq!(s, status, "{path}: {v}");
        assert!(msg.contains(needle), "{path}: expected '{needle}' in '{msg}'");
        assert_eq!(observe(&t, 5).await.get("blue"), Some(&5), "still serving the old config");
    }
    let after = admin(&t, reqwest::Method::GET, "/admin/endpoints/live", None).await.1;
    assert_eq!(before, after, "nothing changed");
    // an endpoint whose served models take different inputs does not fit
    let mlp = json!({"served_entities": [entity("blue", "fraud_classifier", "1"), entity("m", "mlp", "1")],
                     "traffic_config": routes(&[("blue", 100), ("m", 0)])});
    copy_dir(&common::repo_root().join("models/mlp"), &repo.path().join("mlp"));
    let (s, v) = admin(&t, reqwest::Method::PUT, "/admin/endpoints/live", Some(mlp)).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("must take the same inputs"), "{v}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_required_when_configured() {
    if common::skip_without_ort() {
        return;
    }
    let repo = temp_repo();
    let t = common::start(&live_config(repo.path(), "admin_token = \"s3cret-token-0123456789\"")).await;
    let url = format!("{}/admin/endpoints", t.admin);
    let r = t.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("Bearer"));
    let r = t.client.get(&url).bearer_auth("wrong-token-0123456789").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = t
        .client
        .patch(format!("{url}/live/traffic"))
        .bearer_auth("wrong")
        .json(&routes(&[("green", 100), ("blue", 0)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(observe(&t, 5).await.get("blue"), Some(&5), "a refused edit changes nothing");
    let r = t.client.get(&url).bearer_auth("s3cret-token-0123456789").send().await.unwrap();
    assert_eq!(r.status(), 200);
    // metrics stay open for scrapers
    assert_eq!(t.client.get(format!("{}/metrics", t.admin)).send().await.unwrap().status(), 200);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_rollback_file_reload_and_cli() {
    if common::skip_without_ort() {
        return;
    }
    let repo = temp_repo();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    let text = live_config(repo.path(), "watch_interval_ms = 20");
    std::fs::write(&file, &text).unwrap();
    let t = start_watched(&file).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(BIN).args(args).args(["--admin-url", &t.admin]).output().unwrap();
        assert!(out.status.success(), "sluice {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // CLI: list, set traffic, history, rollback
    let listed: Value = serde_json::from_str(&cli(&["endpoints", "list", "--output", "json"])).unwrap();
    let live = &listed["endpoints"][0];
    assert_eq!(live["name"], "live");
    assert_eq!(
        live["served_models"][0],
        json!({"name": "blue", "model": "fraud_classifier", "version": "1", "traffic_percentage": 100})
    );
    assert!(cli(&["endpoints", "list"]).contains("blue=fraud_classifier:v1 100%"));
    // a change prints what changed and the command that undoes it
    let out = cli(&["traffic", "set", "live", "blue=0", "green=100"]);
    assert_eq!(
        out,
        "live: blue 100% -> 0%, green 0% -> 100%\nconfig version 1 -> 2\nundo: sluice config rollback live 1\n",
    );
    assert_eq!(observe(&t, 10).await.get("green"), Some(&10));
    let history: Value = serde_json::from_str(&cli(&["config", "history", "live", "-o", "json"])).unwrap();
    assert_eq!(history["history"][1]["version"], 2);
    assert_eq!(history["history"][1]["source"], "api");
    let table = cli(&["config", "history", "live"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines.len() == 3 && lines[0].starts_with("VERSION"), "{table}");
    assert!(lines[1].trim_start().starts_with("1 ") && lines[1].ends_with("blue=100% green=0%"), "{table}");
    assert!(lines[2].trim_start().starts_with("2 ") && lines[2].ends_with("blue=0% green=100%"), "{table}");
    let out = cli(&["config", "rollback", "live", "1"]);
    assert!(out.starts_with("live: blue 0% -> 100%, green 100% -> 0%\nconfig version 2 -> 3\n"), "{out}");
    assert!(out.ends_with("undo: sluice config rollback live 2\n"), "{out}");
    assert_eq!(observe(&t, 10).await.get("blue"), Some(&10));
    let got = cli(&["endpoints", "get", "live"]);
    let rows: Vec<Vec<&str>> = got.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["endpoint", "live,", "config", "version", "3"], "{got}");
    assert_eq!(rows[2], ["blue", "fraud_classifier", "1", "100%"], "{got}");
    assert_eq!(rows[3], ["green", "fraud_classifier", "2", "0%"], "{got}");
    let got: Value = serde_json::from_str(&cli(&["endpoints", "get", "live", "-o", "json"])).unwrap();
    assert_eq!(got["config_version"], 3);
    let history = t.control().history("live").await.unwrap();
    assert_eq!(history.last().map(|h| (h.version, h.source)), Some((3, sluice::control::Source::Rollback)));
    // editing the file reloads it (the watcher polls every 20 ms)
    std::fs::write(
        &file,
        text.replace("traffic_percentage = 100 }", "traffic_percentage = 0 }")
            .replace("traffic_percentage = 0 }]", "traffic_percentage = 100 }]"),
    )
    .unwrap();
    eventually("the file edit to be applied", || async { observe(&t, 1).await.contains_key("green") }).await;
    assert_eq!(observe(&t, 10).await.get("green"), Some(&10));
    assert_eq!(
        t.control().history("live").await.unwrap().last().map(|h| h.source),
        Some(sluice::control::Source::File)
    );
    // a reload of an unchanged file says so (the watcher already applied the edit)
    assert_eq!(cli(&["config", "reload"]), "reloaded the config file: no endpoint changed\n");
    let answer: Value = serde_json::from_str(&cli(&["config", "reload", "-o", "json"])).unwrap();
    assert_eq!(answer, json!({"reloaded": true, "changed_endpoints": []}));
    let reloaded = t.control().config().await;
    assert_eq!(reloaded.raw.server.http_addr.as_deref(), Some("127.0.0.1:0"), "the reload applied --http again");
    assert!(reloaded.runtime.onnxruntime_lib.is_some_and(|p| p.is_absolute()), "and --ort-lib");
    // a broken file is not applied; the previous config keeps serving
    std::fs::write(&file, "this is [not toml").unwrap();
    let (s, v) = admin(&t, reqwest::Method::POST, "/admin/reload", None).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not valid"), "{v}");
    assert_eq!(observe(&t, 10).await.get("green"), Some(&10));
    // CLI errors are clear and non-zero
    let out = std::process::Command::new(BIN)
        .args(["traffic", "set", "live", "blue=50", "--admin-url", &t.admin])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sum to 50"), "{}", String::from_utf8_lossy(&out.stderr));
    t.stop().await;
}

/// A browser page from elsewhere cannot use a token-less loopback admin API: state-changing
/// calls need `Content-Type: application/json` and no cross-site marks (Origin,
/// Sec-Fetch-Site), and every route refuses a Host that is not a loopback name (DNS
/// rebinding). Refusals are counted; traffic does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_and_rebound_admin_requests_are_refused() {
    if common::skip_without_ort() {
        return;
    }
    let repo = temp_repo();
    let t = common::start(&live_config(repo.path(), "")).await;
    let url = format!("{}/admin/endpoints/live/traffic", t.admin);
    let port = t.admin.rsplit(':').next().unwrap().to_string();
    let edit = routes(&[("blue", 0), ("green", 100)]);
    let body = serde_json::to_vec(&edit).unwrap();
    let patch = |headers: &[(&str, String)]| {
        let mut r = t.client.patch(&url).body(body.clone());
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let json_type = ("content-type", "application/json".to_string());
    // what a cross-site form or no-CORS fetch can send: no type, text/plain, a form
    for headers in [
        vec![],
        vec![("content-type", "text/plain".to_string())],
        vec![("content-type", "application/x-www-form-urlencoded".to_string())],
    ] {
        let (s, v) = patch(&headers).await;
        assert_eq!(s, 415, "{headers:?}: {v}");
        assert!(v["error"].as_str().unwrap().contains("application/json"), "{v}");
    }
    // a body-less call needs the type too
    let (s, _) = {
        let r = t.client.post(format!("{}/admin/reload", t.admin)).send().await.unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(s, 415);
    // cross-site marks
    for mark in [
        ("origin", "http://evil.example".to_string()),
        ("origin", format!("http://127.0.0.1:{}", port.parse::<u16>().unwrap() + 1)),
        ("origin", "null".to_string()),
        ("sec-fetch-site", "cross-site".to_string()),
        ("sec-fetch-site", "same-site".to_string()),
    ] {
        let (s, v) = patch(&[json_type.clone(), mark.clone()]).await;
        assert_eq!(s, 403, "{mark:?}: {v}");
        assert!(v["error"].as_str().unwrap().contains("cross-origin"), "{v}");
    }
    // DNS rebinding: every route, reads and open ones included
    for path in ["/admin/endpoints", "/metrics", "/dashboard", "/monitors/live"] {
        let r = t.client.get(format!("{}{path}", t.admin)).header("host", format!("evil.example:{port}")).send().await;
        let r = r.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("loopback name"), "{v}");
    }
    let (s, v) = patch(&[json_type.clone(), ("host", "rebound.example".to_string())]).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(observe(&t, 5).await.get("blue"), Some(&5), "no refused call changed the traffic");
    assert!(
        common::metric(&t, "sluice_rejected_requests_total", "protocol=\"admin\",reason=\"forbidden\"").await >= 8.0
    );
    assert!(
        common::metric(&t, "sluice_rejected_requests_total", "protocol=\"admin\",reason=\"unsupported_media_type\"")
            .await
            >= 4.0
    );
    // the dashboard's own calls: same origin, JSON, by a loopback name
    let (s, v) = patch(&[
        json_type.clone(),
        ("origin", format!("http://localhost:{port}")),
        ("host", format!("localhost:{port}")),
        ("sec-fetch-site", "same-origin".to_string()),
    ])
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(observe(&t, 5).await.get("green"), Some(&5));
    // the dashboard cannot be framed by another page
    let r = t.client.get(format!("{}/dashboard", t.admin)).send().await.unwrap();
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    t.stop().await;
}

/// The admin token is the config file's in force: editing it rotates it without a restart. With
/// a token, the token (not the Host) is what lets a caller in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_rotates_on_reload() {
    if common::skip_without_ort() {
        return;
    }
    let repo = temp_repo();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    let (old, new) = ("old-token-0123456789abcdef", "new-token-0123456789abcdef");
    let text = live_config(repo.path(), &format!("watch_interval_ms = 20\nadmin_token = \"{old}\""));
    std::fs::write(&file, &text).unwrap();
    let t = start_watched(&file).await;
    let url = format!("{}/admin/endpoints", t.admin);
    let status = |token: &'static str| {
        let r = t.client.get(&url).bearer_auth(token).header("host", "gateway.internal:8002").send();
        async move { r.await.unwrap().status().as_u16() }
    };
    assert_eq!((status(old).await, status(new).await), (200, 401));
    std::fs::write(&file, text.replace(old, new)).unwrap();
    eventually("the new token to be in force", || async { status(new).await == 200 }).await;
    assert_eq!(status(old).await, 401, "the old token stops working at once");
    t.stop().await;
}
