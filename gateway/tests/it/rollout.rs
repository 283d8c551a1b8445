//! Rollouts driven end to end on a test clock: a healthy candidate is promoted through every
//! step; a candidate that fails 5% of its requests, and one whose predictions drift, are rolled
//! back at once without failing a request; a restart mid-rollout resumes at the same step; the
//! A/B report's sample-ratio check flags a skewed split and passes a fair one.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{self, TestServer, eventually};
use crate::traffic::copy_dir;

/// The tests run in parallel with others on two cores, so a single slow request can make a p99
/// of a few dozen requests tens of ms; latency is not what these tests judge (a unit test of the
/// guardrails does).
const LATENCY_SLACK_MS: f64 = 1000.0;

/// A model repository with the fraud classifier and the two test-only candidates: fraud_flaky
/// (v1, but fails when amount > 50000) and fraud_alarmist (predicts fraud for every row).
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = common::repo_root();
    for m in ["fraud_flaky", "fraud_alarmist"] {
        copy_dir(&root.join("tests/fixtures/models").join(m), &dir.path().join(m));
    }
    copy_dir(&root.join("models/fraud_classifier"), &dir.path().join("fraud_classifier"));
    dir
}

fn config(repo: &std::path::Path, data: &std::path::Path, candidate: &str, extra: &str) -> sluice::config::Config {
    let routes = r#"traffic_config = { routes = [
  { served_model_name = "champion", traffic_percentage = 100 },
  { served_model_name = "candidate", traffic_percentage = 0 },
] }"#;
    config_with(repo, data, candidate, routes, extra)
}

/// The test endpoint with `routing` (traffic and shadows) and `extra` lines.
fn config_with(
    repo: &std::path::Path,
    data: &std::path::Path,
    candidate: &str,
    routing: &str,
    extra: &str,
) -> sluice::config::Config {
    let text = format!(
        r#"
[server]
data_dir = "{data}"
[runtime]
model_repository = "{repo}"

[[endpoints]]
name = "fraud"
served_entities = [
  {{ name = "champion", entity_name = "fraud_classifier", entity_version = "1", batching = {{ enabled = false }} }},
  {{ name = "candidate", entity_name = "{candidate}", entity_version = "1", batching = {{ enabled = false }} }},
]
{routing}
inference_table = {{ enabled = true, flush_interval_ms = 100 }}
{extra}
"#,
        data = data.display(),
        repo = repo.display(),
    );
    let mut c = common::config(&text);
    c.server.test_clock = true;
    c
}

async fn start(c: sluice::config::Config) -> TestServer {
    common::start_with(c).await
}

/// `/predict` body of one fixture row; with `poison`, an amount the flaky candidate fails on.
fn body(i: usize, poison: bool) -> Value {
    let (cols, rows) = common::fixture("fraud_classifier");
    let mut row = rows[i % rows.len()].clone();
    if poison {
        row[0] = 99_999.0;
    }
    json!({"dataframe_split": {"columns": cols, "data": [row]}})
}

async fn rollout(t: &TestServer) -> Value {
    t.client.get(format!("{}/rollouts/fraud", t.admin)).send().await.unwrap().json().await.unwrap()
}

async fn admin_post(t: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = t.client.post(format!("{}{path}", t.admin)).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Candidate share of the endpoint's traffic as configured now.
async fn candidate_percent(t: &TestServer) -> i64 {
    let v: Value =
        t.client.get(format!("{}/admin/endpoints/fraud", t.admin)).send().await.unwrap().json().await.unwrap();
    v["served_models"].as_array().unwrap().iter().find(|m| m["name"] == "candidate").unwrap()["traffic_percentage"]
        .as_i64()
        .unwrap()
}

/// The requests a test sends: fixture rows in turn, every `poison_every`-th poisoned.
#[derive(Debug, Clone)]
struct Mix {
    rows: Vec<usize>,
    poison_every: Option<usize>,
}

impl Mix {
    /// Every fixture row.
    fn all() -> Mix {
        Mix { rows: (0..common::fixture("fraud_classifier").1.len()).collect(), poison_every: None }
    }

    /// Every fixture row, one request in `k` poisoned.
    fn poisoned(k: usize) -> Mix {
        Mix { poison_every: Some(k), ..Mix::all() }
    }

    /// The fixture rows the champion calls legit (asked while it takes all traffic). A
    /// candidate that answers like the champion then predicts exactly as it does, so the
    /// drift guardrail's decision does not depend on which rows chance routed where.
    async fn calm(t: &TestServer) -> Mix {
        let (cols, rows) = common::fixture("fraud_classifier");
        let (s, v) = common::post_json(
            t,
            "/endpoints/fraud/predict",
            &json!({"dataframe_split": {"columns": cols, "data": rows}}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let rows: Vec<usize> = v["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, p)| p["label"] == "legit")
            .map(|(i, _)| i)
            .collect();
        assert!(rows.len() >= 4, "{v}");
        Mix { rows, poison_every: None }
    }
}

/// Sends `n` requests of `mix`. Returns the statuses.
async fn send(t: &TestServer, n: usize, mix: &Mix) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let poison = mix.poison_every.is_some_and(|k| i % k == k - 1);
        let (s, _) = t.served("/endpoints/fraud/predict", &body(mix.rows[i % mix.rows.len()], poison), &[]).await;
        out.push(s);
    }
    out
}

/// One round of the driver: traffic, then the step's interval passes on the test clock, then
/// wait until the rollout has been looked at on the new time.
async fn round(t: &TestServer, n: usize, mix: &Mix) -> Value {
    send(t, n, mix).await;
    let before = rollout(t).await;
    let (s, _) = admin_post(t, "/debug/clock", json!({"advance": "5m"})).await;
    assert_eq!(s, 200);
    let start = std::time::Instant::now();
    loop {
        let now = rollout(t).await;
        let held = now["waiting"].as_str().is_some_and(|w| w.contains("is held until"));
        let moved = now["events"] != before["events"] || now["waiting"] != before["waiting"];
        if !held && (moved || now["phase"] != "progressing") {
            return now;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the rollout was not judged on the advanced clock: {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Drives rounds until the rollout ends (bounded).
async fn drive(t: &TestServer, mix: &Mix) -> Value {
    for _ in 0..40 {
        let st = round(t, 100, mix).await;
        if st["phase"] != "progressing" {
            return st;
        }
    }
    panic!("the rollout did not finish: {}", rollout(t).await);
}

fn events(st: &Value) -> Vec<(String, i64)> {
    st["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event"].as_str().unwrap().to_string(), e["candidate_percent"].as_i64().unwrap()))
        .collect()
}

fn start_body(hook: &str) -> Value {
    json!({
        "candidate": "candidate",
        "steps": [5, 25, 50, 100],
        "interval": "5m",
        "min_requests": 50,
        "guardrails": {"max_p99_latency_ratio": 20.0, "p99_latency_slack_ms": LATENCY_SLACK_MS},
        "webhook_url": hook,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_candidate_is_promoted_through_every_step() {
    if common::skip_without_ort() {
        return;
    }
    let (repo, data) = (repo(), tempfile::tempdir().unwrap());
    let t = start(config(repo.path(), data.path(), "fraud_flaky", "")).await;
    let mix = Mix::calm(&t).await;
    let (hook, got) = common::receiver().await;
    let (s, st) = admin_post(&t, "/rollouts/fraud", start_body(&hook)).await;
    assert_eq!(s, 201, "{st}");
    assert_eq!(st["incumbent"], "champion");
    assert_eq!(candidate_percent(&t).await, 5);
    // the rollout owns the traffic now
    let r = t
        .client
        .patch(format!("{}/admin/endpoints/fraud/traffic", t.admin))
        .json(&json!({"routes": [{"served_model_name": "champion", "traffic_percentage": 100},
                                  {"served_model_name": "candidate", "traffic_percentage": 0}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    // the interval holds a step even with enough requests
    send(&t, 200, &mix).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rollout(&t).await["step"], 0, "a step is held until its interval has passed");

    let st = drive(&t, &mix).await;
    assert_eq!(st["phase"], "promoted", "{st}");
    assert_eq!(
        events(&st),
        vec![("started".into(), 5), ("step".into(), 25), ("step".into(), 50), ("promoted".into(), 100)]
    );
    assert!(st["last_checks"].as_array().unwrap().iter().all(|c| c["passed"] == true), "{st}");
    assert_eq!(candidate_percent(&t).await, 100);
    // every traffic change is a history entry made by the rollout
    let h: Value =
        t.client.get(format!("{}/admin/endpoints/fraud/history", t.admin)).send().await.unwrap().json().await.unwrap();
    let by_rollout: Vec<&Value> =
        h["history"].as_array().unwrap().iter().filter(|e| e["source"] == "rollout").collect();
    assert_eq!(by_rollout.len(), 4, "{h}");
    assert!(by_rollout[3]["reason"].as_str().unwrap().contains("every step passed"));
    // the webhook heard every event, and the traffic is free again
    eventually("4 webhook deliveries", || async { got.lock().unwrap().len() == 4 }).await;
    assert_eq!(got.lock().unwrap()[3]["event"]["event"], "promoted");
    let (s, _) = admin_post(&t, "/rollouts/fraud/abort", json!({})).await;
    assert_eq!(s, 409, "a finished rollout cannot be aborted");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_candidate_is_rolled_back() {
    if common::skip_without_ort() {
        return;
    }
    let (repo, data) = (repo(), tempfile::tempdir().unwrap());
    let t = start(config(repo.path(), data.path(), "fraud_flaky", "")).await;
    let (hook, got) = common::receiver().await;
    let mut b = start_body(&hook);
    b["min_requests"] = json!(60);
    let (s, st) = admin_post(&t, "/rollouts/fraud", b).await;
    assert_eq!(s, 201, "{st}");
    // one request in 20 (5%) carries an amount the candidate fails on; the champion answers it
    let st = drive(&t, &Mix::poisoned(20)).await;
    assert_eq!(st["phase"], "rolled_back", "{st}");
    let failed: Vec<&Value> = st["last_checks"].as_array().unwrap().iter().filter(|c| c["passed"] == false).collect();
    assert!(failed.iter().any(|c| c["name"] == "error_rate"), "{st}");
    let rate = failed.iter().find(|c| c["name"] == "error_rate").unwrap()["value"].as_f64().unwrap();
    assert!((0.01..0.2).contains(&rate), "candidate error rate {rate}");
    assert_eq!(candidate_percent(&t).await, 0);
    // with the candidate out, the same traffic (poisoned rows included) all succeeds
    assert!(send(&t, 100, &Mix::poisoned(20)).await.iter().all(|s| *s == 200));
    eventually("the rollback webhook", || async {
        got.lock().unwrap().iter().any(|v| v["event"]["event"] == "rolled_back")
    })
    .await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drifting_candidate_is_rolled_back_without_failing_a_request() {
    if common::skip_without_ort() {
        return;
    }
    let (repo, data) = (repo(), tempfile::tempdir().unwrap());
    let t = start(config(repo.path(), data.path(), "fraud_alarmist", "")).await;
    let (s, st) = admin_post(&t, "/rollouts/fraud", start_body("http://127.0.0.1:9/none")).await;
    assert_eq!(s, 201, "{st}");
    // clients keep sending through the whole rollout and the rollback
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for k in 0..2 {
        let (client, url, stop) = (t.client.clone(), t.url("/endpoints/fraud/predict"), stop.clone());
        load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut i = k;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client.post(&url).json(&body(i, false)).send().await.unwrap();
                statuses.push(r.status().as_u16());
                i += 2;
            }
            statuses
        }));
    }
    let st = drive(&t, &Mix::all()).await;
    // a little more traffic after the rollback
    send(&t, 20, &Mix::all()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses = Vec::new();
    for l in load {
        statuses.extend(l.await.unwrap());
    }
    assert_eq!(st["phase"], "rolled_back", "{st}");
    let drift = st["last_checks"].as_array().unwrap().iter().find(|c| c["name"] == "prediction_drift").unwrap().clone();
    assert_eq!(drift["passed"], false, "{st}");
    assert!(drift["value"].as_f64().unwrap() > 0.2);
    assert!(!statuses.is_empty() && statuses.iter().all(|s| *s == 200), "a request failed: {statuses:?}");
    assert_eq!(candidate_percent(&t).await, 0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_at_the_same_step() {
    if common::skip_without_ort() {
        return;
    }
    let (repo, data) = (repo(), tempfile::tempdir().unwrap());
    let t = start(config(repo.path(), data.path(), "fraud_flaky", "")).await;
    let mix = Mix::calm(&t).await;
    let (s, _) = admin_post(&t, "/rollouts/fraud", start_body("http://127.0.0.1:9/none")).await;
    assert_eq!(s, 201);
    let mut st = rollout(&t).await;
    while st["step"] == 0 {
        st = round(&t, 60, &mix).await;
    }
    assert_eq!((st["step"].as_i64(), st["candidate_percent"].as_i64()), (Some(1), Some(25)), "{st}");
    let started = st["step_started_us"].clone();
    t.stop().await;

    let t = start(config(repo.path(), data.path(), "fraud_flaky", "")).await;
    let st = rollout(&t).await;
    assert_eq!(st["phase"], "progressing", "{st}");
    assert_eq!((st["step"].as_i64(), st["candidate_percent"].as_i64()), (Some(1), Some(25)));
    assert_eq!(st["step_started_us"], started, "the step's timer goes on");
    assert_eq!(candidate_percent(&t).await, 25, "the step's traffic is back");
    let h: Value =
        t.client.get(format!("{}/admin/endpoints/fraud/history", t.admin)).send().await.unwrap().json().await.unwrap();
    assert!(
        h["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"].as_str().is_some_and(|r| r.contains("resumed after a restart")))
    );
    // pause holds the step through an interval; resume goes on to promotion
    let (s, _) = admin_post(&t, "/rollouts/fraud/pause", json!({})).await;
    assert_eq!(s, 200);
    send(&t, 60, &mix).await;
    admin_post(&t, "/debug/clock", json!({"advance": "10m"})).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(rollout(&t).await["step"], 1);
    assert_eq!(admin_post(&t, "/rollouts/fraud/resume", json!({})).await.0, 200);
    let st = drive(&t, &mix).await;
    assert_eq!(st["phase"], "promoted", "{st}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rollouts_and_clock_moves_are_refused() {
    if common::skip_without_ort() {
        return;
    }
    let (repo, data) = (repo(), tempfile::tempdir().unwrap());
    let mut c = config(repo.path(), data.path(), "fraud_flaky", "");
    c.server.test_clock = false;
    let t = start(c).await;
    for (body, want) in [
        (json!({"candidate": "nobody", "steps": [5], "interval": "5m"}), "not a served model"),
        (json!({"candidate": "candidate", "steps": [50, 5], "interval": "5m"}), "strictly ascending"),
        (json!({"candidate": "candidate", "steps": [5], "interval": "soon"}), "not a duration"),
        (json!({"candidate": "candidate", "steps": [5], "interval": "5m", "surprise": 1}), "unknown field"),
    ] {
        let (s, v) = admin_post(&t, "/rollouts/fraud", body).await;
        assert_eq!(s, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{v}");
    }
    assert_eq!(admin_post(&t, "/rollouts/nowhere", start_body("http://x/")).await.0, 404);
    assert_eq!(admin_post(&t, "/rollouts/fraud/pause", json!({})).await.0, 404);
    let (s, v) = admin_post(&t, "/debug/clock", json!({"advance": "5m"})).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(admin_post(&t, "/rollouts/fraud", start_body("http://127.0.0.1:9/")).await.0, 201);
    assert_eq!(admin_post(&t, "/rollouts/fraud", start_body("http://127.0.0.1:9/")).await.0, 409);
    t.stop().await;
}

/// The A/B report since `since`, once it counts `requests` requests (the table flushes behind).
async fn report_with(t: &TestServer, since: &str, requests: u64) -> Value {
    let url = format!("{}/experiments/fraud?since={}", t.admin, sluice::cli::client::url_encode(since));
    let start = std::time::Instant::now();
    loop {
        let r: Value = t.client.get(&url).send().await.unwrap().json().await.unwrap();
        if r["requests"] == requests {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the report never counted {requests}: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One arm of the report.
fn arm(r: &Value, name: &str) -> Value {
    r["arms"].as_array().unwrap().iter().find(|a| a["served_model"] == name).unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_ratio_mismatch_is_flagged_only_for_a_skewed_split() {
    if common::skip_without_ort() {
        return;
    }
    let (repo, data) = (repo(), tempfile::tempdir().unwrap());
    let mut c = config(repo.path(), data.path(), "fraud_flaky", "allow_served_model_override = true\nrouting_seed = 7");
    c.server.test_clock = false;
    let t = start(c).await;
    let split = json!({"routes": [{"served_model_name": "champion", "traffic_percentage": 50},
                                  {"served_model_name": "candidate", "traffic_percentage": 50}]});
    let r = t.client.patch(format!("{}/admin/endpoints/fraud/traffic", t.admin)).json(&split).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let since = sluice::experiment::report::rfc3339(sluice::inference_log::now_us());
    send(&t, 400, &Mix::all()).await;
    let fair = report_with(&t, &since, 400).await;
    assert_eq!(fair["srm"]["flagged"], false, "{fair}");
    assert!(fair["srm"]["p_value"].as_f64().unwrap() > 0.001);
    assert_eq!(arm(&fair, "champion")["expected_share"], 0.5);
    // pin 150 extra requests to the champion: the split no longer follows the weights
    for i in 0..150 {
        let (s, served) =
            t.served("/endpoints/fraud/predict", &body(i, false), &[("x-sluice-served-model", "champion")]).await;
        assert_eq!((s, served.as_str()), (200, "champion"));
    }
    let skewed = report_with(&t, &since, 550).await;
    assert_eq!(skewed["srm"]["flagged"], true, "{skewed}");
    assert!(skewed["srm"]["p_value"].as_f64().unwrap() < 0.001);
    assert!(
        skewed["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("sample ratio mismatch"))
    );
    // bad parameters are refused
    let r = t.client.get(format!("{}/experiments/fraud?since=yesterday-ish", t.admin)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = t.client.get(format!("{}/experiments/nowhere", t.admin)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_candidate_is_gated_on_agreement() {
    if common::skip_without_ort() {
        return;
    }
    let routing = r#"traffic_config = { routes = [{ served_model_name = "champion", traffic_percentage = 100 }] }
shadow = [{ served_model_name = "candidate", mirror_percent = 100 }]"#;
    let gated = json!({
        "candidate": "candidate", "steps": [5, 50], "interval": "5m", "min_requests": 40,
        "guardrails": {"min_shadow_agreement": 0.98, "max_p99_latency_ratio": 20.0, "p99_latency_slack_ms": LATENCY_SLACK_MS},
    });
    // fraud_flaky answers like the champion: the shadow step passes and traffic starts moving
    let (repo, data) = (repo(), tempfile::tempdir().unwrap());
    let t = start(config_with(repo.path(), data.path(), "fraud_flaky", routing, "")).await;
    let (s, st) = admin_post(&t, "/rollouts/fraud", gated.clone()).await;
    assert_eq!(s, 201, "{st}");
    assert_eq!(st["steps"], json!([0, 5, 50, 100]), "a shadow step first");
    let mut st = st;
    while st["step"] == 0 && st["phase"] == "progressing" {
        st = round(&t, 60, &Mix::all()).await;
    }
    assert_eq!((st["phase"].as_str(), st["candidate_percent"].as_i64()), (Some("progressing"), Some(5)), "{st}");
    let agreement = st["events"][1]["checks"][0].clone();
    assert_eq!((agreement["name"].as_str(), agreement["value"].as_f64()), (Some("shadow_agreement"), Some(1.0)));
    let ep: Value =
        t.client.get(format!("{}/admin/endpoints/fraud", t.admin)).send().await.unwrap().json().await.unwrap();
    assert!(ep["config"]["shadow"].is_null(), "the candidate left the shadow list: {ep}");
    t.stop().await;

    // fraud_alarmist disagrees on most rows: rolled back before it gets any traffic
    let (repo, data) = (self::repo(), tempfile::tempdir().unwrap());
    let t = start(config_with(repo.path(), data.path(), "fraud_alarmist", routing, "")).await;
    assert_eq!(admin_post(&t, "/rollouts/fraud", gated).await.0, 201);
    let st = drive(&t, &Mix::all()).await;
    assert_eq!(st["phase"], "rolled_back", "{st}");
    assert_eq!(st["last_checks"][0]["name"], "shadow_agreement");
    assert!(st["last_checks"][0]["value"].as_f64().unwrap() < 0.98);
    assert_eq!(candidate_percent(&t).await, 0);
    // the A/B report shows the same agreement, with the confusion matrix
    let r: Value = t.client.get(format!("{}/experiments/fraud", t.admin)).send().await.unwrap().json().await.unwrap();
    let sh = &r["shadows"][0];
    assert_eq!((sh["shadow"].as_str(), sh["primary"].as_str()), (Some("candidate"), Some("champion")), "{r}");
    let rows = sh["overall"]["rows"].as_u64().unwrap();
    let to_fraud: u64 =
        sh["overall"]["confusion"].as_object().unwrap().values().map(|m| m["fraud"].as_u64().unwrap_or(0)).sum();
    assert_eq!(to_fraud, rows, "the alarmist says fraud for every row: {sh}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_written_in_the_config_starts_with_the_gateway() {
    if common::skip_without_ort() {
        return;
    }
    let (repo, data) = (repo(), tempfile::tempdir().unwrap());
    let rollout = r#"[endpoints.rollout]
candidate = "candidate"
steps = [10, 100]
interval = "5m"
min_requests = 30
guardrails = { max_p99_latency_ratio = 20.0, p99_latency_slack_ms = 1000.0 }"#;
    // The calm rows are asked of a gateway without the rollout: asked of this one, the
    // question (every fixture row, fraud included) could land inside the rollout's first
    // window and give the incumbent predictions the candidate never sees (a false drift).
    let mix = {
        let scratch = tempfile::tempdir().unwrap();
        let t = start(config(repo.path(), scratch.path(), "fraud_flaky", "")).await;
        let mix = Mix::calm(&t).await;
        t.stop().await;
        mix
    };
    let t = start(config(repo.path(), data.path(), "fraud_flaky", rollout)).await;
    let mut st = Value::Null;
    let began = std::time::Instant::now();
    while st["phase"] != "progressing" {
        st = t.client.get(format!("{}/rollouts/fraud", t.admin)).send().await.unwrap().json().await.unwrap();
        assert!(began.elapsed() < Duration::from_secs(20), "the configured rollout did not start: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((st["origin"].as_str(), st["candidate_percent"].as_i64()), (Some("config"), Some(10)));
    let st = drive(&t, &mix).await;
    assert_eq!(st["phase"], "promoted", "{st}");
    t.stop().await;
    // a restart does not start the finished rollout again
    let t = start(config(repo.path(), data.path(), "fraud_flaky", rollout)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rollout_events(&t).await, 2, "started and promoted, once");
    t.stop().await;
}

async fn rollout_events(t: &TestServer) -> usize {
    rollout(t).await["events"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_whose_realized_quality_drops_is_rolled_back() {
    if common::skip_without_ort() {
        return;
    }
    let (repo, data) = (repo(), tempfile::tempdir().unwrap());
    let t = start(config(repo.path(), data.path(), "fraud_flaky", "")).await;
    let mix = Mix::calm(&t).await;
    let body = json!({
        "candidate": "candidate", "steps": [50], "interval": "5m", "min_requests": 30,
        "guardrails": {"max_p99_latency_ratio": 20.0, "p99_latency_slack_ms": LATENCY_SLACK_MS, "min_labels": 20, "max_quality_drop": 0.05},
    });
    assert_eq!(admin_post(&t, "/rollouts/fraud", body).await.0, 201);
    // Ground truth arrives for every answer: it agrees with the champion's answers and
    // contradicts the candidate's (same predictions, so no drift; no errors).
    let mut st = rollout(&t).await;
    for _ in 0..20 {
        let mut labels = Vec::new();
        for i in 0..80 {
            let r = t.client.post(t.url("/endpoints/fraud/predict")).json(&body_of(&mix, i)).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
            let served = r.headers()["x-sluice-served-model"].to_str().unwrap().to_string();
            let v: Value = r.json().await.unwrap();
            let said = v["predictions"][0]["label"].as_str().unwrap().to_string();
            let truth = if served == "champion" {
                said
            } else if said == "fraud" {
                "legit".into()
            } else {
                "fraud".into()
            };
            labels.push(json!({"request_id": id, "label": truth}));
        }
        let r = t.client.post(t.url("/endpoints/fraud/labels")).json(&labels).send().await.unwrap();
        assert_eq!(r.status(), 200);
        st = round(&t, 0, &mix).await;
        if st["phase"] != "progressing" {
            break;
        }
    }
    assert_eq!(st["phase"], "rolled_back", "{st}");
    let q = st["last_checks"].as_array().unwrap().iter().find(|c| c["name"] == "quality_accuracy").unwrap().clone();
    assert_eq!((q["passed"].as_bool(), q["value"].as_f64()), (Some(false), Some(1.0)), "accuracy 0 against 1: {q}");
    assert!(st["last_checks"].as_array().unwrap().iter().filter(|c| c["passed"] == false).count() == 1, "{st}");
    t.stop().await;
}

fn body_of(mix: &Mix, i: usize) -> Value {
    body(mix.rows[i % mix.rows.len()], false)
}

/// A judgement reads the table without holding the rollouts' lock: while one is held at its
/// read (as a slow scan of a large table would be), the rollout API, an abort and `/predict`
/// answer; the judgement that finishes after the abort does not undo it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_judgement_blocks_neither_the_rollout_api_nor_serving() {
    if common::skip_without_ort() {
        return;
    }
    let (repo, data) = (repo(), tempfile::tempdir().unwrap());
    let t = start(config(repo.path(), data.path(), "fraud_flaky", "")).await;
    let (hook, _got) = common::receiver().await;
    let (s, st) = admin_post(&t, "/rollouts/fraud", start_body(&hook)).await;
    assert_eq!(s, 201, "{st}");
    let mix = Mix::all();
    send(&t, 20, &mix).await;
    let rollouts = t.server.as_ref().unwrap().rollouts.clone();
    let hold = rollouts.hold_judgements().await;
    let started = rollouts.read_started();
    tokio::pin!(started);
    started.as_mut().enable();
    let (s, _) = admin_post(&t, "/debug/clock", json!({"advance": "5m"})).await;
    assert_eq!(s, 200);
    tokio::time::timeout(Duration::from_secs(20), started).await.expect("the step's judgement began its read");

    let prompt = Duration::from_secs(5);
    let st = tokio::time::timeout(prompt, rollout(&t)).await.expect("GET /rollouts/fraud answers during a judgement");
    assert_eq!(st["phase"], "progressing", "{st}");
    let statuses = tokio::time::timeout(prompt, send(&t, 10, &mix)).await.expect("/predict answers during a judgement");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let (s, st) = tokio::time::timeout(prompt, admin_post(&t, "/rollouts/fraud/abort", json!({})))
        .await
        .expect("POST /rollouts/fraud/abort answers during a judgement");
    assert_eq!(s, 200, "{st}");
    assert_eq!(st["phase"], "aborted");
    assert_eq!(candidate_percent(&t).await, 0);

    // the judgement goes on after the abort and sees the rollout changed: it applies nothing
    let judged = rollouts.judged();
    tokio::pin!(judged);
    judged.as_mut().enable();
    drop(hold);
    tokio::time::timeout(Duration::from_secs(20), judged).await.expect("the held judgement ended");
    let st = rollout(&t).await;
    assert_eq!(st["phase"], "aborted", "{st}");
    assert_eq!(events(&st), vec![("started".into(), 5), ("aborted".into(), 0)], "{st}");
    assert_eq!(candidate_percent(&t).await, 0);
    // judgements and the A/B report read on the analysis threads
    let r = t.client.get(format!("{}/experiments/fraud", t.admin)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for read in ["rollout_judgement", "experiment_report"] {
        let labels = format!(r#"read="{read}",result="done""#);
        assert!(common::metric(&t, "sluice_analysis_reads_total", &labels).await >= 1.0, "{read}");
    }
    t.stop().await;
}

/// Two replicas sharing a config store: a rollout started through the replica that does not
/// lead is stepped by the leader only; when the leader stops mid-rollout, the other replica
/// takes the lease over and finishes the rollout from the same step with the same timer, with
/// no step repeated or skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_rollout_is_stepped_by_one_leader_and_survives_it() {
    if common::skip_without_ort() {
        return;
    }
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let replica_config = |name: &str| {
        let extra = format!("[storage]\nconfig_store = \"{}\"\n", store.display());
        let mut c = config(repo.path(), &dir.path().join(name), "fraud_flaky", &extra);
        c.server.watch_interval = Duration::from_millis(200);
        c.server.leader_lease = Duration::from_secs(1);
        c
    };
    let a = start(replica_config("a")).await;
    let b = start(replica_config("b")).await;
    let leads = |t: &TestServer| {
        let (c, url) = (t.client.clone(), format!("{}/admin/replica", t.admin));
        async move { c.get(url).send().await.unwrap().json::<Value>().await.unwrap()["leader"] == true }
    };
    eventually("one leader", || async { leads(&a).await != leads(&b).await }).await;
    let (leader, follower) = if leads(&a).await { (a, b) } else { (b, a) };

    // started through the follower: its state and traffic reach the leader through the store
    let mix = Mix::calm(&leader).await;
    let (s, st) = admin_post(&follower, "/rollouts/fraud", start_body("http://127.0.0.1:9/none")).await;
    assert_eq!(s, 201, "{st}");
    eventually("the leader serves step 1", || async { candidate_percent(&leader).await == 5 }).await;
    eventually("the leader holds the rollout", || async { rollout(&leader).await["phase"] == "progressing" }).await;
    // the follower never judges it (no state written, no step), though its clock is past the
    // interval and its own table has requests
    eventually("the leader looked at the step", || async {
        rollout(&leader).await["waiting"].as_str().is_some_and(|w| w.contains("held until"))
    })
    .await;
    let seq = rollout(&leader).await["seq"].clone();
    send(&follower, 200, &mix).await;
    admin_post(&follower, "/debug/clock", json!({"advance": "1h"})).await;
    send(&leader, 100, &mix).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = rollout(&leader).await;
    assert_eq!((st["step"].as_i64(), st["seq"].clone()), (Some(0), seq), "{st}");
    // the leader steps it; the follower sees the new state and serves the new traffic
    let mut st = rollout(&leader).await;
    let mut advanced = 0;
    while st["step"] == 0 {
        st = round(&leader, 100, &mix).await;
        advanced += 5;
        assert_eq!(st["phase"], "progressing", "{st}");
    }
    assert_eq!(st["candidate_percent"], 25, "{st}");
    eventually("the follower sees step 2", || async { rollout(&follower).await["step"] == 1 }).await;
    eventually("the follower serves 25%", || async { candidate_percent(&follower).await == 25 }).await;
    let timer = st["step_started_us"].clone();

    // the leader goes away mid-rollout: the other replica takes over at the same step and timer
    leader.stop().await;
    eventually("the follower leads", || async { leads(&follower).await }).await;
    let st = rollout(&follower).await;
    assert_eq!((st["step"].as_i64(), st["step_started_us"].clone()), (Some(1), timer), "{st}");
    // its rollout clock catches up with the one the old leader's test clock was moved to
    admin_post(&follower, "/debug/clock", json!({"advance": format!("{advanced}m")})).await;
    let st = drive(&follower, &mix).await;
    assert_eq!(st["phase"], "promoted", "{st}");
    assert_eq!(
        events(&st),
        vec![("started".into(), 5), ("step".into(), 25), ("step".into(), 50), ("promoted".into(), 100)],
        "no step repeated or skipped"
    );
    let h: Value = follower
        .client
        .get(format!("{}/admin/endpoints/fraud/history", follower.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_rollout = h["history"].as_array().unwrap().iter().filter(|e| e["source"] == "rollout").count();
    assert_eq!(by_rollout, 4, "one traffic change per step: {h}");
    follower.stop().await;
}

/// A gateway that ran alone kept its rollout under `<data_dir>/_rollouts`; restarted with a
/// config store, it moves the rollout into the store (once) and goes on from the same step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_of_a_gateway_that_ran_alone_moves_into_the_config_store() {
    if common::skip_without_ort() {
        return;
    }
    let repo = repo();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("solo");
    let alone = start(config(repo.path(), &data, "fraud_flaky", "")).await;
    let mix = Mix::calm(&alone).await;
    let (s, st) = admin_post(&alone, "/rollouts/fraud", start_body("http://127.0.0.1:9/none")).await;
    assert_eq!(s, 201, "{st}");
    let mut st = rollout(&alone).await;
    let mut advanced = 0;
    while st["step"] == 0 {
        st = round(&alone, 100, &mix).await;
        advanced += 5;
        assert_eq!(st["phase"], "progressing", "{st}");
    }
    let (step, timer, events_before) = (st["step"].clone(), st["step_started_us"].clone(), events(&st));
    assert_eq!(candidate_percent(&alone).await, 25);
    alone.stop().await;
    assert!(data.join("_rollouts").is_dir());

    let store = dir.path().join("store");
    let extra = format!("[storage]\nconfig_store = \"{}\"\n", store.display());
    let mut c = config(repo.path(), &data, "fraud_flaky", &extra);
    c.server.leader_lease = Duration::from_secs(1);
    let fleet = start(c).await;
    let st = rollout(&fleet).await;
    assert_eq!((st["step"].clone(), st["step_started_us"].clone()), (step.clone(), timer.clone()), "{st}");
    assert_eq!(events(&st), events_before);
    assert_eq!(candidate_percent(&fleet).await, 25, "the traffic of the step is put back");
    assert!(!data.join("_rollouts").exists() && data.join("_rollouts.moved").is_dir(), "moved once");
    // the store's first state of the endpoint is the moved one (the leader may have noted
    // since what it waits for, as later states)
    let first = store.join("rollouts").join("fraud").join(format!("{:020}.json", 1));
    let moved: Value = serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
    assert_eq!(
        (moved["step"].clone(), moved["step_started_us"].clone(), moved["seq"].as_u64()),
        (step, timer, Some(1))
    );
    assert_eq!(events(&moved), events_before);
    // its rollout clock catches up with the one the lone gateway's test clock was moved to
    admin_post(&fleet, "/debug/clock", json!({"advance": format!("{advanced}m")})).await;
    let st = drive(&fleet, &mix).await;
    assert_eq!(st["phase"], "promoted", "{st}");
    fleet.stop().await;
}
