//! One request path: the same request over `/predict`, V2 JSON, V2 binary and gRPC to one
//! endpoint counts the same endpoint metrics, fills the same traffic buckets and writes the same
//! inference-table row (ids, times and the error text aside), answered or refused.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::json;
use sluice_wire::pb;
use sluice_wire::pb::grpc_inference_service_client::GrpcInferenceServiceClient;

use crate::common::{self, eventually, fixture, metric};

const REQUESTER: &str = "one-path-test";

fn config(data: &Path) -> String {
    format!(
        r#"
        [server]
        data_dir = "{}"
        [[models]]
        name = "fraud_classifier"
        versions = [1]
        [[endpoints]]
        name = "one_path"
        served_entities = [{{ name = "primary", entity_name = "fraud_classifier", entity_version = 1 }}]
        traffic_config = {{ routes = [{{ served_model_name = "primary", traffic_percentage = 100 }}] }}
        inference_table = {{ flush_interval_ms = 50 }}
        "#,
        data.display()
    )
}

/// Every row of the table, as column -> displayed value, in timestamp order.
pub(crate) fn table_rows(dir: &Path) -> Vec<BTreeMap<String, String>> {
    let mut batches: Vec<RecordBatch> = Vec::new();
    for f in crate::common::delta_files(dir) {
        let file = std::fs::File::open(f).unwrap();
        batches.extend(ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().map(|b| b.unwrap()));
    }
    let mut rows = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            let row: BTreeMap<String, String> = b
                .schema()
                .fields()
                .iter()
                .zip(b.columns())
                .map(|(f, c)| (f.name().clone(), array_value_to_string(c, r).unwrap()))
                .collect();
            rows.push(row);
        }
    }
    rows.sort_by_key(|r| (r["timestamp"].clone(), r["row_index"].parse::<u64>().unwrap_or(0)));
    rows
}

/// A row without what differs between any two requests (ids, times) and, for refusals, the
/// error text (each wire format words its own).
fn comparable(mut row: BTreeMap<String, String>) -> BTreeMap<String, String> {
    for c in ["request_id", "client_request_id", "timestamp", "latency_ms", "execution_ms", "queue_ms"] {
        row.remove(c);
    }
    if row["status_code"] != "200" {
        row.remove("error");
    }
    row
}

/// What one request left behind: endpoint metric deltas, traffic bucket deltas, its table rows
/// (one per input row; one for a refused request).
#[derive(Debug, PartialEq)]
struct Trace {
    success: f64,
    bad_request: f64,
    traffic_requests: u64,
    traffic_errors: u64,
    rows: Vec<BTreeMap<String, String>>,
}

struct Counts {
    success: f64,
    bad_request: f64,
    requests: u64,
    errors: u64,
    rows: usize,
}

async fn counts(t: &common::TestServer, dir: &Path) -> Counts {
    let labels = |outcome: &str| format!("endpoint=\"one_path\",served_model=\"primary\",outcome=\"{outcome}\"");
    let now = sluice::inference_log::now_us();
    let view = t.gateway().traffic().view(60, now);
    let points = view.iter().filter(|s| s.endpoint == "one_path").flat_map(|s| s.points.iter());
    let (requests, errors) = points.fold((0, 0), |(r, e), p| (r + p.requests, e + p.errors));
    Counts {
        success: metric(t, "sluice_requests_total", &labels("success")).await,
        bad_request: metric(t, "sluice_requests_total", &labels("bad_request")).await,
        requests,
        errors,
        rows: table_rows(dir).len(),
    }
}

/// Sends one request with `send`, waits for its row, and returns what it left behind.
async fn trace<F, Fut>(t: &common::TestServer, dir: &Path, send: F) -> Trace
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = counts(t, dir).await;
    send().await;
    eventually("the request's table row", || async { table_rows(dir).len() > before.rows }).await;
    let after = counts(t, dir).await;
    let rows = table_rows(dir);
    let new: Vec<_> = rows[before.rows..].to_vec();
    assert!(new.iter().all(|r| r["request_id"] == new[0]["request_id"]), "one request's rows: {new:?}");
    Trace {
        success: after.success - before.success,
        bad_request: after.bad_request - before.bad_request,
        traffic_requests: after.requests - before.requests,
        traffic_errors: after.errors - before.errors,
        rows: new.into_iter().map(comparable).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_over_every_transport_is_counted_and_logged_the_same() {
    if common::skip_without_ort() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let t = common::start(&config(data.path())).await;
    let dir = data.path().join("one_path");
    let grpc = GrpcInferenceServiceClient::connect(t.grpc.clone()).await.unwrap();
    let (cols, rows) = fixture("fraud_classifier");

    for width in [8usize, 7] {
        let x: Vec<Vec<f64>> = rows.iter().take(2).map(|r| r[..width].to_vec()).collect();
        let flat: Vec<f32> = x.iter().flatten().map(|&v| v as f32).collect();
        let expect = if width == 8 { 200 } else { 400 };
        let predict = json!({"dataframe_split": {"columns": &cols[..width], "data": x}});
        let v2_json = json!({"inputs": [{"name": "input", "shape": [2, width], "datatype": "FP32", "data": flat}]});
        let bytes: Vec<u8> = flat.iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = json!({"inputs": [{"name": "input", "shape": [2, width], "datatype": "FP32",
                                        "parameters": {"binary_data_size": bytes.len()}}]})
        .to_string();
        let mut v2_binary = header.clone().into_bytes();
        v2_binary.extend_from_slice(&bytes);

        let mut traces = Vec::new();
        traces.push(
            trace(&t, &dir, || async {
                let r = t
                    .client
                    .post(t.url("/endpoints/one_path/predict"))
                    .header("x-sluice-requester", REQUESTER)
                    .json(&predict)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), expect, "/predict: {}", r.text().await.unwrap());
            })
            .await,
        );
        traces.push(
            trace(&t, &dir, || async {
                let r = t
                    .client
                    .post(t.url("/v2/models/one_path/infer"))
                    .header("x-sluice-requester", REQUESTER)
                    .json(&v2_json)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), expect, "V2 JSON: {}", r.text().await.unwrap());
            })
            .await,
        );
        traces.push(
            trace(&t, &dir, || async {
                let r = t
                    .client
                    .post(t.url("/v2/models/one_path/infer"))
                    .header("x-sluice-requester", REQUESTER)
                    .header("content-type", "application/octet-stream")
                    .header("inference-header-content-length", header.len())
                    .body(v2_binary.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), expect, "V2 binary: {}", r.text().await.unwrap());
            })
            .await,
        );
        traces.push(
            trace(&t, &dir, || async {
                let mut req = tonic::Request::new(pb::ModelInferRequest {
                    model_name: "one_path".into(),
                    inputs: vec![pb::model_infer_request::InferInputTensor {
                        name: "input".into(),
                        datatype: "FP32".into(),
                        shape: vec![2, width as i64],
                        ..Default::default()
                    }],
                    raw_input_contents: vec![bytes.clone()],
                    ..Default::default()
                });
                req.metadata_mut().insert("x-sluice-requester", REQUESTER.parse().unwrap());
                let r = grpc.clone().model_infer(req).await;
                match expect {
                    200 => assert!(r.is_ok(), "gRPC: {r:?}"),
                    _ => assert_eq!(r.unwrap_err().code(), tonic::Code::InvalidArgument),
                }
            })
            .await,
        );
        let first = &traces[0];
        if expect == 200 {
            assert_eq!(
                (first.success, first.bad_request, first.traffic_requests, first.traffic_errors),
                (1.0, 0.0, 1, 0)
            );
            assert_eq!(first.rows.len(), 2, "a row per input row");
            for row in &first.rows {
                assert_eq!(row["status_code"], "200");
                assert_eq!(row["requester"], REQUESTER);
                assert_eq!(row["served_model"], "primary");
                assert_ne!(row["prediction"], "", "{row:?}");
            }
        } else {
            assert_eq!(
                (first.success, first.bad_request, first.traffic_requests, first.traffic_errors),
                (0.0, 1.0, 1, 1)
            );
            assert_eq!(first.rows.len(), 1, "a refused request is one row");
            assert_eq!(first.rows[0]["status_code"], "400");
        }
        for (name, other) in ["V2 JSON", "V2 binary", "gRPC"].iter().zip(&traces[1..]) {
            assert_eq!(other, first, "{name} vs /predict, {width} features");
        }
    }
    t.stop().await;
}
