//! Routing: split accuracy, sticky assignment, pinning, the direct route, shadow mirroring.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::common::{self, eventually, fraud_body, metric};

fn ab_config(name: &str, routes: &str, extra: &str) -> String {
    format!(
        r#"
        [[models]]
        name = "fraud_classifier"
        versions = [1, 2, 3]
        [[endpoints]]
        name = "{name}"
        served_entities = [{{ name = "champion", entity_name = "fraud_classifier", entity_version = 1 }},
                           {{ name = "challenger", entity_name = "fraud_classifier", entity_version = 2 }},
                           {{ name = "shadow", entity_name = "fraud_classifier", entity_version = 3 }}]
        traffic_config = {{ routes = [{routes}] }}
        {extra}
        "#
    )
}

const NINETY_TEN: &str = r#"{ served_model_name = "champion", traffic_percentage = 90 },
                            { served_model_name = "challenger", traffic_percentage = 10 },
                            { served_model_name = "shadow", traffic_percentage = 0 }"#;

/// Sends `n` requests from `workers` concurrent clients; counts answers by served model.
async fn split(t: &common::TestServer, path: &str, n: usize, workers: usize) -> HashMap<String, usize> {
    let body = Arc::new(fraud_body(1));
    let mut handles = Vec::new();
    for w in 0..workers {
        let client = t.client.clone();
        let url = t.url(path);
        let body = body.clone();
        handles.push(tokio::spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in (w..n).step_by(workers) {
                let r = client.post(&url).json(&*body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let s = r.headers()["x-sluice-served-model"].to_str().unwrap().to_string();
                *counts.entry(s).or_default() += 1;
            }
            counts
        }));
    }
    let mut total = HashMap::new();
    for h in handles {
        for (k, v) in h.await.unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_of_20000_requests_matches_90_10() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(&ab_config("split", NINETY_TEN, "routing_seed = 20261126")).await;
    let counts = split(&t, "/endpoints/split/predict", 20_000, 8).await;
    let share = counts.get("challenger").copied().unwrap_or(0) as f64 / 20_000.0 * 100.0;
    assert!((share - 10.0).abs() <= 1.5, "challenger got {share:.2}% ({counts:?})");
    assert_eq!(counts.get("shadow"), None, "a 0% route gets nothing");
    assert_eq!(counts.values().sum::<usize>(), 20_000);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keys_keep_their_model_and_a_growing_canary_only_gains_keys() {
    if common::skip_without_ort() {
        return;
    }
    let routes = |canary: u32| {
        format!(
            r#"{{ served_model_name = "champion", traffic_percentage = {} }},
               {{ served_model_name = "challenger", traffic_percentage = {canary} }},
               {{ served_model_name = "shadow", traffic_percentage = 0 }}"#,
            100 - canary
        )
    };
    let t = common::start(&ab_config("sticky", &routes(5), "sticky_key = { header = \"x-user-id\" }")).await;
    let body = Arc::new(fraud_body(1));
    let assign = |round: usize| {
        let mut handles = Vec::new();
        for w in 0..8usize {
            let client = t.client.clone();
            let url = t.url("/endpoints/sticky/predict");
            let body = body.clone();
            handles.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for k in (w..10_000).step_by(8) {
                    let r =
                        client.post(&url).json(&*body).header("x-user-id", format!("user-{k}")).send().await.unwrap();
                    assert_eq!(r.status(), 200, "round {round}");
                    out.push((k, r.headers()["x-sluice-served-model"].to_str().unwrap() == "challenger"));
                }
                out
            }));
        }
        async move {
            let mut canary = vec![false; 10_000];
            for h in handles {
                for (k, c) in h.await.unwrap() {
                    canary[k] = c;
                }
            }
            canary
        }
    };
    let first = assign(0).await;
    let again = assign(1).await;
    assert_eq!(first, again, "every key keeps its served model");
    let before = first.iter().filter(|c| **c).count() as f64 / 100.0;
    assert!((before - 5.0).abs() < 1.0, "canary share {before}%");

    let traffic: sluice::config::raw::RawTrafficConfig = toml::from_str(&format!("routes = [{}]", routes(25))).unwrap();
    t.control().set_traffic("sticky", traffic, None).await.unwrap();
    let after = assign(2).await;
    let left = first.iter().zip(&after).filter(|(b, a)| **b && !**a).count();
    let joined = first.iter().zip(&after).filter(|(b, a)| !**b && **a).count() as f64 / 100.0;
    assert_eq!(left, 0, "no key moves out of the canary");
    assert!((joined - 20.0).abs() < 1.5, "{joined}% of keys moved into the canary, expected about 20%");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinning_needs_permission_and_the_direct_route_bypasses_the_split() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(&ab_config("pin", NINETY_TEN, "")).await;
    let body = fraud_body(2);
    let (s, _) = t.served("/endpoints/pin/predict", &body, &[("x-sluice-served-model", "challenger")]).await;
    assert_eq!(s, 403, "pinning is off by default");
    for _ in 0..20 {
        let (s, served) = t.served("/endpoints/pin/served-models/challenger/predict", &body, &[]).await;
        assert_eq!((s, served.as_str()), (200, "challenger"));
    }
    let (s, _) = t.served("/endpoints/pin/served-models/nobody/predict", &body, &[]).await;
    assert_eq!(s, 404);
    t.stop().await;

    let t = common::start(&ab_config("pin2", NINETY_TEN, "allow_served_model_override = true")).await;
    for _ in 0..20 {
        let (s, served) = t.served("/endpoints/pin2/predict", &body, &[("x-sluice-served-model", "challenger")]).await;
        assert_eq!((s, served.as_str()), (200, "challenger"));
    }
    let r = t
        .client
        .post(t.url("/endpoints/pin2/predict"))
        .json(&body)
        .header("x-sluice-served-model", "shadow")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-sluice-model-version"], "3", "any served model can be pinned, shadows too");
    // V2 through the endpoint name, pinned: the model version that answered is in the parameters
    let x: Vec<f32> = common::fixture("fraud_classifier").1[0].iter().map(|&v| v as f32).collect();
    let v2 = serde_json::json!({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": x}]});
    let r = t
        .client
        .post(t.url("/v2/models/pin2/infer"))
        .json(&v2)
        .header("x-sluice-served-model", "challenger")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["parameters"]["sluice_served_model"], "challenger");
    assert_eq!(v["model_version"], "2");
    t.stop().await;
}

pub fn shadow_config(name: &str, shadow_model: &str, capacity: usize) -> String {
    format!(
        r#"
        [[endpoints]]
        name = "{name}"
        served_entities = [{{ name = "primary", entity_name = "fraud_classifier", entity_version = 1 }},
                           {{ name = "shadow", entity_name = "{shadow_model}", entity_version = 1 }}]
        traffic_config = {{ routes = [{{ served_model_name = "primary", traffic_percentage = 100 }}] }}
        shadow = [{{ served_model_name = "shadow", mirror_percent = 100 }}]
        shadow_queue_capacity = {capacity}
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_answers_before_a_held_shadow_finishes() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(&shadow_config("mirror", "fraud_classifier", 16)).await;
    let gate = Arc::new(Semaphore::new(0));
    t.gateway().snapshot().endpoints["mirror"].set_shadow_gate(Some(gate.clone()));
    let labels = r#"endpoint="mirror",served_model="shadow""#;
    let (s, served) = t.served("/endpoints/mirror/predict", &fraud_body(3), &[]).await;
    assert_eq!((s, served.as_str()), (200, "primary"));
    // the primary answer is back; the shadow copy is queued but cannot have run yet
    assert_eq!(metric(&t, "sluice_shadow_mirrored_total", labels).await, 1.0);
    assert_eq!(metric(&t, "sluice_shadow_completed_total", labels).await, 0.0);
    gate.add_permits(1);
    eventually("the shadow to finish", || async { metric(&t, "sluice_shadow_completed_total", labels).await == 1.0 })
        .await;
    // the shadow ran the same rows on its own model version
    let shadow_rows =
        t.gateway().snapshot().registry.get_version("fraud_classifier", 1).unwrap().runner.stats().inference_count();
    assert_eq!(shadow_rows, 6, "primary 3 rows + shadow (same model here) 3 rows");
    t.stop().await;
}

/// A temporary model repository with the fraud classifier and the test-only broken model.
fn repo_with_broken_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = common::repo_root();
    for (from, to) in
        [("models/fraud_classifier", "fraud_classifier"), ("tests/fixtures/models/fraud_broken", "fraud_broken")]
    {
        copy_dir(&root.join(from), &dir.path().join(to));
    }
    dir
}

pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_failures_never_reach_the_client() {
    if common::skip_without_ort() {
        return;
    }
    let repo = repo_with_broken_model();
    let text = format!(
        "[runtime]\nmodel_repository = \"{}\"\n{}",
        repo.path().display(),
        shadow_config("failing", "fraud_broken", 16)
    );
    let t = common::start(&text).await;
    let labels = r#"endpoint="failing",served_model="shadow""#;
    for _ in 0..5 {
        let (s, served) = t.served("/endpoints/failing/predict", &fraud_body(2), &[]).await;
        assert_eq!((s, served.as_str()), (200, "primary"));
    }
    eventually("5 shadow failures", || async { metric(&t, "sluice_shadow_failed_total", labels).await == 5.0 }).await;
    assert_eq!(metric(&t, "sluice_shadow_completed_total", labels).await, 0.0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_shadow_queue_drops_and_counts() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(&shadow_config("overflow", "fraud_classifier", 2)).await;
    let gate = Arc::new(Semaphore::new(0));
    t.gateway().snapshot().endpoints["overflow"].set_shadow_gate(Some(gate.clone()));
    for _ in 0..10 {
        let (s, _) = t.served("/endpoints/overflow/predict", &fraud_body(1), &[]).await;
        assert_eq!(s, 200);
    }
    let labels = r#"endpoint="overflow",served_model="shadow""#;
    let mirrored = metric(&t, "sluice_shadow_mirrored_total", labels).await;
    let dropped = metric(&t, "sluice_shadow_dropped_total", &format!("{labels},reason=\"queue_full\"")).await;
    assert_eq!(mirrored + dropped, 10.0);
    assert!(dropped >= 7.0, "queue of 2 plus one held copy: at least 7 of 10 dropped, got {dropped}");
    gate.add_permits(100);
    eventually("the queued shadows to finish", || async {
        metric(&t, "sluice_shadow_completed_total", labels).await == mirrored
    })
    .await;
    t.stop().await;
}
