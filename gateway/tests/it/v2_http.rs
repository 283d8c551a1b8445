//! KServe V2 REST: health, metadata, config, statistics, JSON and binary tensor inference.

use serde_json::{Value, json};

use crate::common::{self, DEMO, fixture, post_json};

fn fraud_rows() -> Vec<f32> {
    let (_, rows) = fixture("fraud_classifier");
    rows.iter().flatten().map(|&x| x as f32).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metadata_config_and_stats() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(DEMO).await;
    let get = |p: &str| t.client.get(t.url(p)).send();
    assert_eq!(get("/v2/health/live").await.unwrap().status(), 200);
    assert_eq!(get("/v2/health/ready").await.unwrap().status(), 200);
    let server: Value = get("/v2").await.unwrap().json().await.unwrap();
    assert_eq!(server["name"], "sluice");
    assert_eq!(server["extensions"], json!(["binary_tensor_data", "model_configuration", "statistics"]));

    let meta: Value = get("/v2/models/fraud_classifier").await.unwrap().json().await.unwrap();
    assert_eq!(meta["versions"], json!(["1", "2", "3"]));
    assert_eq!(meta["platform"], "onnxruntime_onnx");
    assert_eq!(meta["inputs"], json!([{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]));
    assert_eq!(
        meta["outputs"],
        json!([{"name": "label", "datatype": "INT64", "shape": [-1]},
               {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}])
    );
    let meta_v: Value = get("/v2/models/fraud_classifier/versions/2").await.unwrap().json().await.unwrap();
    assert_eq!(meta_v["inputs"], meta["inputs"]);
    assert_eq!(get("/v2/models/fraud_classifier/ready").await.unwrap().status(), 200);
    assert_eq!(get("/v2/models/fraud_classifier/versions/1/ready").await.unwrap().status(), 200);
    assert_eq!(get("/v2/models/fraud_classifier/versions/7/ready").await.unwrap().status(), 404);

    let cfg: Value = get("/v2/models/delivery_time/config").await.unwrap().json().await.unwrap();
    assert_eq!(cfg["name"], "delivery_time");
    assert_eq!(cfg["max_batch_size"], 64);
    assert_eq!(cfg["input"], json!([{"name": "input", "data_type": "TYPE_FP32", "dims": [6]}]));
    assert_eq!(cfg["output"], json!([{"name": "variable", "data_type": "TYPE_FP32", "dims": [1]}]));
    let cfg_v: Value = get("/v2/models/mlp/versions/1/config").await.unwrap().json().await.unwrap();
    assert_eq!(cfg_v["dynamic_batching"]["max_queue_delay_microseconds"], 0);

    // statistics: real counters that move with traffic
    let before: Value = get("/v2/models/fraud_classifier/versions/1/stats").await.unwrap().json().await.unwrap();
    assert_eq!(before["model_stats"][0]["inference_count"], 0);
    let x = fraud_rows();
    let body = json!({"inputs": [{"name": "input", "shape": [16, 8], "datatype": "FP32", "data": x}]});
    let (s, _) = post_json(&t, "/v2/models/fraud_classifier/versions/1/infer", &body).await;
    assert_eq!(s, 200);
    let after: Value = get("/v2/models/fraud_classifier/versions/1/stats").await.unwrap().json().await.unwrap();
    let m = &after["model_stats"][0];
    assert_eq!(m["version"], "1");
    assert_eq!(m["inference_count"], 16);
    assert_eq!(m["execution_count"], 1);
    let st = &m["inference_stats"];
    assert_eq!(st["success"]["count"], 1);
    for phase in ["queue", "compute_input", "compute_infer", "compute_output"] {
        assert_eq!(st[phase]["count"], 1, "{phase}");
    }
    assert!(st["compute_infer"]["ns"].as_u64().unwrap() > 0);
    assert_eq!(m["batch_stats"][0]["batch_size"], 16);
    let all: Value = get("/v2/models/stats").await.unwrap().json().await.unwrap();
    assert_eq!(all["model_stats"].as_array().unwrap().len(), 6, "fraud_classifier v1-3, delivery_time, mlp, mlp_fp16");
    let per_model: Value = get("/v2/models/fraud_classifier/stats").await.unwrap().json().await.unwrap();
    assert_eq!(per_model["model_stats"].as_array().unwrap().len(), 3);

    // an endpoint name answers for the endpoint (perf_analyzer -m fraud works)
    let ep: Value = get("/v2/models/fraud").await.unwrap().json().await.unwrap();
    assert_eq!(ep["name"], "fraud");
    assert_eq!(ep["versions"], json!(["1", "2"]), "the models its routes serve");
    assert_eq!(ep["inputs"], meta["inputs"]);
    let ep_cfg: Value = get("/v2/models/fraud/config").await.unwrap().json().await.unwrap();
    assert_eq!(ep_cfg["name"], "fraud");
    assert_eq!(get("/v2/models/fraud/ready").await.unwrap().status(), 200);
    assert_eq!(get("/v2/models/fraud/versions/1").await.unwrap().status(), 404);
    let ep_stats: Value = get("/v2/models/fraud/stats").await.unwrap().json().await.unwrap();
    let versions: Vec<&str> =
        ep_stats["model_stats"].as_array().unwrap().iter().map(|s| s["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["1", "2"]);
    assert!(ep_stats["model_stats"].as_array().unwrap().iter().all(|s| s["name"] == "fraud"));

    // metrics on both ports
    for base in [&t.http, &t.admin] {
        let text = t.client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(text.contains("sluice_model_requests_total"), "{text}");
        assert!(text.contains("sluice_model_inference_rows_total"), "{text}");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_infer_with_id_versions_and_output_selection() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(DEMO).await;
    let x = fraud_rows();
    let body = |outputs: Value| {
        let mut b =
            json!({"id": "req-7", "inputs": [{"name": "input", "shape": [16, 8], "datatype": "FP32", "data": x}]});
        if !outputs.is_null() {
            b["outputs"] = outputs;
        }
        b
    };
    let (s, v1) = post_json(&t, "/v2/models/fraud_classifier/versions/1/infer", &body(Value::Null)).await;
    assert_eq!(s, 200, "{v1}");
    assert_eq!(v1["id"], "req-7");
    assert_eq!(v1["model_name"], "fraud_classifier");
    assert_eq!(v1["model_version"], "1");
    assert_eq!(v1["outputs"][0]["name"], "label");
    assert_eq!(v1["outputs"][0]["datatype"], "INT64");
    assert_eq!(v1["outputs"][0]["shape"], json!([16]));
    assert_eq!(v1["outputs"][1]["shape"], json!([16, 2]));
    // no version: the highest (3)
    let (_, latest) = post_json(&t, "/v2/models/fraud_classifier/infer", &body(Value::Null)).await;
    assert_eq!(latest["model_version"], "3");
    assert_ne!(latest["outputs"][1]["data"], v1["outputs"][1]["data"]);
    // the fixture's first rows are ones where v1 and v2 disagree
    let (_, v2) = post_json(&t, "/v2/models/fraud_classifier/versions/2/infer", &body(Value::Null)).await;
    assert_eq!(v2["model_version"], "2");
    assert_ne!(v2["outputs"][0]["data"], v1["outputs"][0]["data"]);
    // output selection, in the order asked
    let (_, sel) =
        post_json(&t, "/v2/models/fraud_classifier/versions/1/infer", &body(json!([{"name": "probabilities"}]))).await;
    assert_eq!(sel["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(sel["outputs"][0]["data"], v1["outputs"][1]["data"]);
    // nested data is accepted as well as flat
    let nested: Vec<Vec<f32>> = x.chunks(8).map(<[f32]>::to_vec).collect();
    let (_, n) = post_json(
        &t,
        "/v2/models/fraud_classifier/versions/1/infer",
        &json!({"inputs": [{"name": "input", "shape": [16, 8], "datatype": "FP32", "data": nested}]}),
    )
    .await;
    assert_eq!(n["outputs"], v1["outputs"]);
    assert!(n.get("id").is_none());
    t.stop().await;
}

/// Builds a binary-extension request body: JSON header + raw little-endian f32s.
fn binary_request(x: &[f32], rows: usize, outputs: Value) -> (Vec<u8>, usize) {
    let mut header = json!({"inputs": [{"name": "input", "shape": [rows, 8], "datatype": "FP32",
                                        "parameters": {"binary_data_size": x.len() * 4}}]});
    if outputs.is_null() {
        header["parameters"] = json!({"binary_data_output": true});
    } else {
        header["outputs"] = outputs;
    }
    let mut body = serde_json::to_vec(&header).unwrap();
    let n = body.len();
    for v in x {
        body.extend_from_slice(&v.to_le_bytes());
    }
    (body, n)
}

fn split_binary(headers: &reqwest::header::HeaderMap, body: &[u8]) -> (Value, Vec<u8>) {
    let n: usize = headers["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    (serde_json::from_slice(&body[..n]).unwrap(), body[n..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_tensor_extension_round_trips() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(DEMO).await;
    let x = fraud_rows();
    let (_, reference) = post_json(
        &t,
        "/v2/models/fraud_classifier/versions/1/infer",
        &json!({"inputs": [{"name": "input", "shape": [16, 8], "datatype": "FP32", "data": x}]}),
    )
    .await;
    let probs: Vec<f32> =
        reference["outputs"][1]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let labels: Vec<i64> =
        reference["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();

    // every output binary (binary_data_output), with and without Content-Type
    for content_type in [None, Some("application/octet-stream")] {
        let (body, n) = binary_request(&x, 16, Value::Null);
        let mut req = t
            .client
            .post(t.url("/v2/models/fraud_classifier/versions/1/infer"))
            .header("Inference-Header-Content-Length", n)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        let headers = r.headers().clone();
        let (json, bin) = split_binary(&headers, &r.bytes().await.unwrap());
        assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 16 * 8);
        assert_eq!(json["outputs"][1]["parameters"]["binary_data_size"], 16 * 2 * 4);
        assert!(json["outputs"][0].get("data").is_none());
        let got_labels: Vec<i64> = bin[..128].chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        let got_probs: Vec<f32> = bin[128..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(got_labels, labels);
        assert_eq!(got_probs, probs);
    }
    // mixed: label as JSON, probabilities binary
    let (body, n) = binary_request(
        &x,
        16,
        json!([{"name": "label", "parameters": {"binary_data": false}}, {"name": "probabilities", "parameters": {"binary_data": true}}]),
    );
    let r = t
        .client
        .post(t.url("/v2/models/fraud_classifier/versions/1/infer"))
        .header("Inference-Header-Content-Length", n)
        .body(body)
        .send()
        .await
        .unwrap();
    let headers = r.headers().clone();
    let (json, bin) = split_binary(&headers, &r.bytes().await.unwrap());
    assert_eq!(json["outputs"][0]["data"], reference["outputs"][0]["data"]);
    assert_eq!(bin.len(), 16 * 2 * 4);
    // JSON tensors with the header length equal to the whole body (perf_analyzer's JSON mode)
    let body =
        serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [16, 8], "datatype": "FP32", "data": x}]}))
            .unwrap();
    let r = t
        .client
        .post(t.url("/v2/models/fraud_classifier/versions/1/infer"))
        .header("Inference-Header-Content-Length", body.len())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["outputs"], reference["outputs"]);
    t.stop().await;
}

/// Dynamic batching: a lone request goes straight to the idle worker (a batch of one), and
/// requests that arrive while the worker is busy are stacked into larger executions; every row
/// is answered once either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_stacks_concurrent_requests() {
    if crate::common::skip_without_ort() {
        return;
    }
    let t = crate::common::start(
        r#"
        [[models]]
        name = "mlp"
        versions = [1]
        instances = 1
        batching = { enabled = true, max_batch_size = 64, max_queue_delay_us = 2000 }
        "#,
    )
    .await;
    let row: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
    let body = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]});
    let (s, _) = post_json(&t, "/v2/models/mlp/infer", &body).await;
    assert_eq!(s, 200);
    let stats = |t: &crate::common::TestServer| {
        let url = t.url("/v2/models/mlp/versions/1/stats");
        let c = t.client.clone();
        async move { c.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let m = stats(&t).await;
    assert_eq!(m["model_stats"][0]["batch_stats"][0]["batch_size"], 1, "{m}");
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (c, url, body) = (t.client.clone(), t.url("/v2/models/mlp/infer"), body.clone());
        tasks.push(tokio::spawn(async move { c.post(url).json(&body).send().await.unwrap().status().as_u16() }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let m = stats(&t).await;
    let m = &m["model_stats"][0];
    assert_eq!(m["inference_count"], 201);
    let batches = m["batch_stats"].as_array().unwrap();
    let rows: u64 =
        batches.iter().map(|b| b["batch_size"].as_u64().unwrap() * b["compute_infer"]["count"].as_u64().unwrap()).sum();
    assert_eq!(rows, 201, "{batches:?}");
    assert!(batches.iter().any(|b| b["batch_size"].as_u64().unwrap() > 1), "no stacked batch: {batches:?}");
    assert!(m["execution_count"].as_u64().unwrap() < 201, "{m}");
    t.stop().await;
}
