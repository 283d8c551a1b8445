//! Every error case answers `{"error": ...}` with the right status, and the server keeps serving.

use serde_json::{Value, json};
use sluice::core::{CoreError, Inputs, NamedTensor, Request, RequestMeta, SelectedTensors, Target};
use sluice::tensor::{Tensor, TensorData};

use crate::common::{self, DEMO, fixture};

async fn send(t: &common::TestServer, path: &str, body: Vec<u8>, content_type: Option<&str>) -> (u16, Value) {
    let mut req = t.client.post(t.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/json", "{path}");
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    if common::skip_without_ort() {
        return;
    }
    let toml = DEMO.replace("max_body_bytes = 16777216", "max_body_bytes = 4096");
    let t = common::start(&toml).await;
    let (cols, rows) = fixture("fraud_classifier");
    let good = json!({"dataframe_split": {"columns": cols, "data": [rows[0].clone()]}});
    let mut renamed = cols.clone();
    renamed[0] = "amout".into();
    let v2 = |shape: Value, datatype: &str, data: Value| {
        json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]})
            .to_string()
            .into_bytes()
    };
    let ok8 = json!([1, 2, 3, 4, 5, 6, 7, 8]);
    let cases: Vec<(&str, Vec<u8>, Option<&str>, u16, &str)> = vec![
        ("/predict", b"{not json".to_vec(), Some("application/json"), 400, "not valid JSON"),
        ("/predict", b"[1,2]".to_vec(), None, 400, "JSON object"),
        ("/predict", json!({"instances": [], "inputs": []}).to_string().into_bytes(), None, 400, "exactly one"),
        ("/predict", json!({}).to_string().into_bytes(), None, 400, "none of"),
        ("/predict", json!({"rows": []}).to_string().into_bytes(), None, 400, "unknown field 'rows'"),
        ("/predict", json!({"dataframe_split": {"columns": renamed, "data": [rows[0].clone()]}}).to_string().into_bytes(), None, 400, "unknown feature 'amout'"),
        ("/predict", json!({"dataframe_split": {"columns": &cols[1..], "data": [&rows[0][1..]]}}).to_string().into_bytes(), None, 400, "missing feature 'amount'"),
        ("/predict", json!({"dataframe_records": [{"amount": 1.0}]}).to_string().into_bytes(), None, 400, "missing feature"),
        ("/predict", json!({"instances": [[1, 2, 3]]}).to_string().into_bytes(), None, 400, "has 3 values"),
        ("/predict", json!({"inputs": {"amount": ["x"]}}).to_string().into_bytes(), None, 400, "missing feature"),
        ("/predict", json!({"dataframe_split": {"columns": cols, "data": [[1, 2, 3, 4, 5, 6, 7, "x"]]}}).to_string().into_bytes(), None, 400, "expected a number"),
        ("/predict", json!({"dataframe_split": {"columns": [&cols[0], &cols[0]], "data": [[1, 2]]}}).to_string().into_bytes(), None, 400, "appears twice"),
        ("/predict", json!({"instances": [[1e39, 2, 3, 4, 5, 6, 7, 8]]}).to_string().into_bytes(), None, 400, "out of range for FP32"),
        ("/predict", good.to_string().into_bytes(), Some("text/plain"), 415, "not supported"),
        ("/predict", vec![b' '; 5000], Some("application/json"), 413, "larger than the limit"),
        ("/endpoints/nope/predict", good.to_string().into_bytes(), None, 404, "unknown endpoint 'nope'"),
        ("/serving-endpoints/nope/invocations", good.to_string().into_bytes(), None, 404, "unknown endpoint"),
        ("/v2/models/nope/infer", v2(json!([1, 8]), "FP32", ok8.clone()), None, 404, "unknown model 'nope'"),
        ("/v2/models/fraud_classifier/versions/9/infer", v2(json!([1, 8]), "FP32", ok8.clone()), None, 404, "no version '9'"),
        ("/v2/models/fraud_classifier/infer", b"{".to_vec(), None, 400, "invalid inference request JSON"),
        ("/v2/models/fraud_classifier/infer", v2(json!([1, 7]), "FP32", json!([1, 2, 3, 4, 5, 6, 7])), None, 400, "shape [1, 7]"),
        ("/v2/models/fraud_classifier/infer", v2(json!([1, 8]), "FP64", ok8.clone()), None, 400, "datatype FP64"),
        ("/v2/models/fraud_classifier/infer", v2(json!([1, 8]), "FP16", ok8.clone()), None, 400, "datatype FP16"),
        ("/v2/models/fraud_classifier/infer", v2(json!([1, 8]), "FP8", ok8.clone()), None, 400, "unsupported datatype"),
        ("/v2/models/fraud_classifier/infer", v2(json!([2, 8]), "FP32", ok8.clone()), None, 400, "8 elements"),
        ("/v2/models/fraud_classifier/infer", v2(json!([1, 8]), "FP32", json!(["a", 2, 3, 4, 5, 6, 7, 8])), None, 400, "expected a number"),
        ("/v2/models/fraud_classifier/infer", json!({"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": ok8}]}).to_string().into_bytes(), None, 400, "unknown input 'x'"),
        ("/v2/models/fraud_classifier/infer", json!({"inputs": []}).to_string().into_bytes(), None, 400, "missing input 'input'"),
        ("/v2/models/fraud_classifier/infer", json!({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": ok8}], "outputs": [{"name": "nope"}]}).to_string().into_bytes(), None, 400, "unknown output 'nope'"),
        ("/v2/models/fraud_classifier/infer", json!({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "parameters": {"binary_data_size": 32}}]}).to_string().into_bytes(), None, 400, "only 0 remain"),
        ("/v2/models/fraud_classifier/infer", v2(json!([1, 8]), "FP32", ok8.clone()), Some("text/csv"), 415, "not supported"),
        ("/v2/models/fraud_classifier/infer", vec![b' '; 5000], None, 413, "larger than the limit"),
        ("/v2/nothing", b"{}".to_vec(), None, 404, "no route"),
    ];
    for (path, body, ct, status, needle) in cases {
        let (got, v) = send(&t, path, body, ct).await;
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("{path}: no error member in {v}"));
        assert_eq!(got, status, "{path} expected {status} ({needle}), got {got}: {msg}");
        assert!(msg.contains(needle), "{path}: expected '{needle}' in '{msg}'");
        // still serving
        let (s, _) = common::post_json(&t, "/predict", &good).await;
        assert_eq!(s, 200, "server stopped serving after {path}");
    }
    // binary header longer than the body
    let r = t
        .client
        .post(t.url("/v2/models/fraud_classifier/infer"))
        .header("Inference-Header-Content-Length", "999")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // GET on a POST route
    let r = t.client.get(t.url("/predict")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("not allowed"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_is_503() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(DEMO).await;
    t.gateway().set_ready(false);
    let r = t.client.get(t.url("/v2/health/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let (cols, rows) = fixture("fraud_classifier");
    let (s, v) =
        common::post_json(&t, "/predict", &json!({"dataframe_split": {"columns": cols, "data": [rows[0].clone()]}}))
            .await;
    assert_eq!(s, 503, "{v}");
    assert!(v["error"].as_str().is_some());
    assert_eq!(t.client.get(t.url("/v2/health/live")).send().await.unwrap().status(), 200);
    t.gateway().set_ready(true);
    assert_eq!(t.client.get(t.url("/v2/health/ready")).send().await.unwrap().status(), 200);
    // draining (the drain delay after SIGTERM): health checks say not ready, inference goes on
    t.gateway().set_draining();
    assert_eq!(t.client.get(t.url("/v2/health/ready")).send().await.unwrap().status(), 503);
    let (s, v) =
        common::post_json(&t, "/predict", &json!({"dataframe_split": {"columns": cols, "data": [rows[0].clone()]}}))
            .await;
    assert_eq!(s, 200, "{v}");
    t.stop().await;
}

fn big_mlp_request(rows: usize) -> Request {
    let input = NamedTensor {
        name: "input".into(),
        tensor: Tensor::new(vec![rows as i64, 64], TensorData::F32(vec![0.5; rows * 64])),
    };
    let target = Target::Model { name: "mlp".into(), version: None };
    Request::new(target, Inputs::Tensors(vec![input]), RequestMeta::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_overloaded_and_slow_is_timeout() {
    if common::skip_without_ort() {
        return;
    }
    let toml = r#"
        [server]
        request_timeout_ms = 60000
        [[models]]
        name = "mlp"
        versions = [1]
        queue_capacity = 1
        batching = { enabled = false }
    "#;
    let t = common::start(toml).await;
    let gw = t.gateway();
    // the first request holds the only queue slot until it is answered
    let mut first = Box::pin(gw.handle(big_mlp_request(4096), SelectedTensors));
    assert!(futures::poll!(&mut first).is_pending());
    let second = gw.handle(big_mlp_request(1), SelectedTensors).await;
    assert!(matches!(second, Err(CoreError::Overloaded(_))), "{second:?}");
    let first = first.await;
    assert!(first.is_ok(), "{first:?}");
    assert!(gw.handle(big_mlp_request(1), SelectedTensors).await.is_ok(), "slot released after the answer");
    t.stop().await;

    let toml = r#"
        [server]
        request_timeout_ms = 1
        [[models]]
        name = "mlp"
        versions = [1]
    "#;
    let t = common::start(toml).await;
    let r = t.gateway().handle(big_mlp_request(16384), SelectedTensors).await;
    assert!(matches!(r, Err(CoreError::Timeout(_))), "{r:?}");
    t.stop().await;
}
