//! `/predict` in all four MLflow formats, the Databricks alias, and response headers.

use serde_json::{Value, json};

use crate::common::{self, DEMO, fixture, post_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_formats_give_the_same_answer() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(DEMO).await;
    let (cols, rows) = fixture("fraud_classifier");
    let records: Vec<Value> =
        rows.iter().map(|r| Value::Object(cols.iter().cloned().zip(r.iter().map(|x| json!(x))).collect())).collect();
    let columnar: serde_json::Map<String, Value> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| (c.clone(), json!(rows.iter().map(|r| r[i]).collect::<Vec<_>>())))
        .collect();
    let bodies = [
        json!({"dataframe_split": {"columns": cols, "data": rows}}),
        json!({"dataframe_records": records}),
        json!({"instances": records}),
        json!({"instances": rows}),
        json!({"inputs": columnar}),
        json!({"inputs": rows}),
        // columns in another order map by name
        json!({"dataframe_split": {"columns": cols.iter().rev().collect::<Vec<_>>(),
               "data": rows.iter().map(|r| r.iter().rev().collect::<Vec<_>>()).collect::<Vec<_>>()}}),
    ];
    let mut answers = Vec::new();
    for body in &bodies {
        for path in ["/predict", "/endpoints/fraud/predict", "/serving-endpoints/fraud/invocations"] {
            // the demo endpoint splits champion/challenger; pin the champion to compare like with like
            let r =
                t.client.post(t.url(path)).json(body).header("x-sluice-served-model", "champion").send().await.unwrap();
            assert_eq!(r.status(), 200, "{path} {body}");
            assert_eq!(r.headers()["x-sluice-model-version"], "1");
            answers.push(r.json::<Value>().await.unwrap());
        }
    }
    let first = &answers[0];
    let preds = first["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), rows.len());
    for p in preds {
        let label = p["label"].as_str().unwrap();
        assert!(label == "legit" || label == "fraud", "{p}");
        let probs = p["probabilities"].as_object().unwrap();
        let sum: f64 = probs.values().map(|x| x.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{p}");
        let argmax = if probs["fraud"].as_f64() > probs["legit"].as_f64() { "fraud" } else { "legit" };
        assert_eq!(label, argmax);
    }
    for a in &answers {
        assert_eq!(a, first);
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_name_the_served_model_and_echo_the_request_id() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(DEMO).await;
    let body = json!({"instances": [[3.0, 2, 10, 19, 0, 0.4]]});
    let r = t
        .client
        .post(t.url("/endpoints/delivery/predict"))
        .json(&body)
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sluice-served-model"], "delivery-v1");
    assert_eq!(r.headers()["x-sluice-model-version"], "1");
    assert_eq!(r.headers()["x-request-id"], "req-42");
    let v: Value = r.json().await.unwrap();
    let x = v["predictions"][0].as_f64().unwrap();
    assert!(x > 0.0 && x < 200.0, "{v}");
    // a generated id when none is sent, on errors too
    let r = t.client.post(t.url("/endpoints/nope/predict")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"].len(), 32);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tensor_model_takes_inputs_and_instances() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(DEMO).await;
    let row: Vec<f32> = (0..64).map(|i| (i as f32 / 64.0) - 0.5).collect();
    let rows = vec![row.clone(), row.iter().map(|x| -x).collect::<Vec<_>>()];
    let (s1, a) = post_json(&t, "/endpoints/mlp/predict", &json!({"instances": rows})).await;
    let (s2, b) = post_json(&t, "/endpoints/mlp/predict", &json!({"inputs": rows})).await;
    let (s3, c) = post_json(&t, "/endpoints/mlp/predict", &json!({"inputs": {"input": rows}})).await;
    let (s4, d) =
        post_json(&t, "/endpoints/mlp/predict", &json!({"instances": [{"input": rows[0]}, {"input": rows[1]}]})).await;
    assert_eq!((s1, s2, s3, s4), (200, 200, 200, 200), "{a} {b} {c} {d}");
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a, d);
    let p = &a["predictions"][0];
    assert!(p["label"].as_str().unwrap().starts_with('c'));
    assert_eq!(p["probabilities"].as_object().unwrap().len(), 10);
    // dataframe formats need named features
    let (s, e) = post_json(&t, "/endpoints/mlp/predict", &json!({"dataframe_records": [{"a": 1}]})).await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("no named features"), "{e}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_routes_split_traffic() {
    if common::skip_without_ort() {
        return;
    }
    let toml = r#"
        [[models]]
        name = "fraud_classifier"
        versions = [1, 2]
        [[endpoints]]
        name = "ab"
        served_entities = [{ name = "a", entity_name = "fraud_classifier", entity_version = "1" },
                           { name = "b", entity_name = "fraud_classifier", entity_version = "2" }]
        traffic_config = { routes = [{ served_model_name = "a", traffic_percentage = 50 },
                                     { served_model_name = "b", traffic_percentage = 50 }] }
    "#;
    let t = common::start(toml).await;
    let (cols, rows) = fixture("fraud_classifier");
    let body = json!({"dataframe_split": {"columns": cols, "data": [rows[0].clone()]}});
    let mut seen = std::collections::HashMap::new();
    for _ in 0..200 {
        let r = t.client.post(t.url("/predict")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let served = r.headers()["x-sluice-served-model"].to_str().unwrap().to_string();
        let version = r.headers()["x-sluice-model-version"].to_str().unwrap().to_string();
        assert_eq!(version, if served == "a" { "1" } else { "2" });
        *seen.entry(served).or_insert(0u32) += 1;
    }
    // 200 fair coin flips: P(either side < 60) is about 1e-8
    assert!(seen.get("a").copied().unwrap_or(0) >= 60, "{seen:?}");
    assert!(seen.get("b").copied().unwrap_or(0) >= 60, "{seen:?}");
    t.stop().await;
}
