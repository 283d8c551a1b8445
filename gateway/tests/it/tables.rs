//! Inference tables: rows for every answer (primary, shadow, errors), sampling, labels, payload
//! caps, unwritable directories, and the `sluice table` CLI.

use std::path::Path;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::json;

use crate::common::{self, eventually, fraud_body, metric};

/// Every row of a table: the files its Delta log lists, read with the parquet crate.
fn read_table(dir: &Path) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for f in common::delta_files(dir) {
        let rel = f.strip_prefix(dir).unwrap().to_string_lossy().to_string();
        assert!(rel.starts_with("date="), "{rel}");
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap()).unwrap().build().unwrap();
        out.extend(reader.map(|b| b.unwrap()));
    }
    out
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn strings(batches: &[RecordBatch], col: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name(col).unwrap_or_else(|| panic!("no column {col}")).as_string::<i32>().clone();
            (0..a.len()).map(move |i| a.is_valid(i).then(|| a.value(i).to_string())).collect::<Vec<_>>()
        })
        .collect()
}

fn config(data: &Path, table: &str, extra: &str) -> String {
    format!(
        r#"
        [server]
        data_dir = "{}"
        [[models]]
        name = "fraud_classifier"
        versions = [1, 3]
        [[endpoints]]
        name = "logged"
        served_entities = [{{ name = "primary", entity_name = "fraud_classifier", entity_version = 1 }},
                           {{ name = "shadow", entity_name = "fraud_classifier", entity_version = 3 }}]
        traffic_config = {{ routes = [{{ served_model_name = "primary", traffic_percentage = 100 }}] }}
        shadow = [{{ served_model_name = "shadow", mirror_percent = 100 }}]
        inference_table = {{ flush_interval_ms = 50, {table} }}
        {extra}
        "#,
        data.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_a_row_primary_shadow_and_errors() {
    if common::skip_without_ort() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let t = common::start(&config(data.path(), "log_payloads = true, max_payload_bytes = 2000", "")).await;
    // 3 good requests of 2 rows, one with a client_request_id; one that names a wrong feature
    for i in 0..3 {
        let mut body = fraud_body(2);
        if i == 0 {
            body["client_request_id"] = json!("order-17");
        }
        let r = t
            .client
            .post(t.url("/endpoints/logged/predict"))
            .json(&body)
            .header("x-request-id", format!("req-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = t
        .client
        .post(t.url("/endpoints/logged/predict"))
        .json(&json!({"dataframe_records": [{"nope": 1}]}))
        .header("x-request-id", "bad-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // a payload over the cap is logged as NULL with an error code
    let big = fraud_body(40);
    let r = t
        .client
        .post(t.url("/endpoints/logged/predict"))
        .json(&big)
        .header("x-request-id", "big-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // V2 through the endpoint name is logged too
    let x: Vec<f32> = common::fixture("fraud_classifier").1[0].iter().map(|&v| v as f32).collect();
    let v2 = json!({"id": "v2-1", "inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": x}]});
    assert_eq!(t.client.post(t.url("/v2/models/logged/infer")).json(&v2).send().await.unwrap().status(), 200);
    let dir = data.path().join("logged");
    // primary: 3x2 + 1 error row + 40 + 1 (V2); shadow: 3x2 + 40 + 1
    eventually("rows to be published", || async { rows(&read_table(&dir)) == 48 + 47 }).await;
    let b = read_table(&dir);
    let ids = strings(&b, "request_id");
    let shadow: Vec<bool> = b
        .iter()
        .flat_map(|x| {
            let a = x.column_by_name("is_shadow").unwrap().as_boolean().clone();
            (0..a.len()).map(move |i| a.value(i)).collect::<Vec<_>>()
        })
        .collect();
    let status: Vec<i32> = b
        .iter()
        .flat_map(|x| x.column_by_name("status_code").unwrap().as_primitive::<Int32Type>().values().to_vec())
        .collect();
    let served = strings(&b, "served_model");
    let pred = strings(&b, "prediction");
    let err = strings(&b, "error");
    let client = strings(&b, "client_request_id");
    let req_json = strings(&b, "request_json");
    let amount: Vec<Option<f64>> = b
        .iter()
        .flat_map(|x| {
            let a = x.column_by_name("amount").unwrap().as_primitive::<Float64Type>().clone();
            (0..a.len()).map(move |i| a.is_valid(i).then(|| a.value(i))).collect::<Vec<_>>()
        })
        .collect();
    let row_index: Vec<i64> = b
        .iter()
        .flat_map(|x| x.column_by_name("row_index").unwrap().as_primitive::<Int64Type>().values().to_vec())
        .collect();
    for i in 0..ids.len() {
        let id = ids[i].as_deref().unwrap();
        match id {
            "bad-1" => {
                assert_eq!(status[i], 400);
                assert!(err[i].as_deref().unwrap().contains("unknown feature 'nope'"));
                assert!(!shadow[i], "a request that failed validation is not mirrored");
                assert_eq!(amount[i], None);
            }
            _ => {
                assert_eq!(status[i], 200, "{id}");
                assert_eq!(served[i].as_deref(), Some(if shadow[i] { "shadow" } else { "primary" }));
                assert!(matches!(pred[i].as_deref(), Some("legit" | "fraud")));
                assert!(amount[i].is_some());
            }
        }
        if id == "req-0" {
            assert_eq!(client[i].as_deref(), Some("order-17"));
        }
        if id == "big-1" && !shadow[i] {
            assert_eq!(req_json[i], None, "over max_payload_bytes");
        }
        if id == "req-1" && !shadow[i] {
            assert!(req_json[i].as_deref().unwrap().contains("dataframe_split"));
        }
    }
    let count =
        |id: &str, sh: bool| ids.iter().zip(&shadow).filter(|(i, s)| i.as_deref() == Some(id) && **s == sh).count();
    assert_eq!(
        (count("req-2", false), count("req-2", true)),
        (2, 2),
        "2 rows each, primary and shadow, under one request id"
    );
    assert_eq!((count("big-1", false), count("big-1", true)), (40, 40));
    assert_eq!(count("v2-1", false), 1);
    let big_rows: Vec<i64> = ids
        .iter()
        .zip(&row_index)
        .zip(&shadow)
        .filter(|((i, _), s)| i.as_deref() == Some("big-1") && !**s)
        .map(|((_, r), _)| *r)
        .collect();
    let mut sorted = big_rows.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..40).collect::<Vec<_>>());
    let codes = b.iter().flat_map(|x| {
        let a = x.column_by_name("logging_error_codes").unwrap().as_list::<i32>().clone();
        (0..a.len())
            .map(move |i| {
                a.value(i).as_string::<i32>().iter().map(|s| s.unwrap_or_default().to_string()).collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    });
    assert!(
        codes
            .zip(&ids)
            .any(|(c, id)| id.as_deref() == Some("big-1") && c.contains(&"REQUEST_PAYLOAD_TOO_LARGE".to_string()))
    );
    // no partial files are ever visible under a published name. The writer counts its rows just
    // after the commit that makes them readable, so the count can trail the rows read above by a
    // moment: wait for it to reach them, then check it is exactly them
    eventually("the written rows to be counted", || async {
        metric(&t, "sluice_log_rows_written_total", r#"table="logged""#).await >= 95.0
    })
    .await;
    assert_eq!(metric(&t, "sluice_log_rows_written_total", r#"table="logged""#).await, 95.0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_labels_and_the_table_cli() {
    if common::skip_without_ort() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let t = common::start(&config(data.path(), "sampling_fraction = 0.1", "routing_seed = 7")).await;
    let body = fraud_body(1);
    for i in 0..2000 {
        let r = t
            .client
            .post(t.url("/endpoints/logged/predict"))
            .json(&body)
            .header("x-request-id", format!("s-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    t.stop().await; // flushes everything
    let b = read_table(&data.path().join("logged"));
    let primary = strings(&b, "served_model").iter().filter(|s| s.as_deref() == Some("primary")).count();
    // binomial(2000, 0.1): mean 200, sd 13.4; 5 sd either side
    assert!((133..=267).contains(&primary), "{primary} of 2000 requests logged at sampling 0.1");
    let shadow = rows(&b) - primary;
    assert_eq!(shadow, primary, "a sampled request's shadow is logged with it");
    let fractions: Vec<f64> = b
        .iter()
        .flat_map(|x| x.column_by_name("sampling_fraction").unwrap().as_primitive::<Float64Type>().values().to_vec())
        .collect();
    assert!(fractions.iter().all(|f| *f == 0.1));

    // labels: post for half of a fresh set of requests, and join back
    let t = common::start(&config(data.path(), "table = \"labelled\"", "")).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = format!("l-{i}");
        let r = t
            .client
            .post(t.url("/endpoints/logged/predict"))
            .json(&body)
            .header("x-request-id", &id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.push(id);
    }
    let half: Vec<_> = ids
        .iter()
        .step_by(2)
        .map(|id| json!({"request_id": id, "label": "fraud"}))
        .chain([json!({"request_id": "never-seen", "label": "legit"})])
        .collect();
    let r = t.client.post(t.url("/endpoints/logged/labels")).json(&half).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // the id this table never logged is refused (and named); the others are written
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"accepted": 20, "unknown": 1, "unknown_ids": ["never-seen"]})
    );
    let r = t.client.post(t.url("/endpoints/logged/labels")).json(&json!([{"label": 1}])).send().await.unwrap();
    assert_eq!(r.status(), 400);
    t.stop().await;
    let dir = data.path().join("labelled");
    let joined = sluice::cli::table::query(
        &dir,
        &sluice::cli::table::TableQuery::Sql(
            "SELECT t.request_id FROM t JOIN labels l ON t.request_id = l.request_id WHERE NOT t.is_shadow ORDER BY t.request_id".into(),
        ),
    )
    .await
    .unwrap();
    let mut expected: Vec<&String> = ids.iter().step_by(2).collect();
    expected.sort();
    let got: Vec<&str> =
        joined.lines().filter(|l| l.contains("l-")).map(|l| l.trim_matches(|c| c == '|' || c == ' ')).collect();
    assert_eq!(got, expected.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "{joined}");
    // the CLI, as an operator runs it
    let bin = env!("CARGO_BIN_EXE_sluice");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).arg("--data-dir").arg(data.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run(&["table", "count", "labelled"]).contains("| 80 "), "40 primary + 40 shadow rows");
    let tail = run(&["table", "tail", "labelled", "-n", "3"]);
    assert_eq!(tail.lines().filter(|l| l.contains("l-")).count(), 3, "{tail}");
    let by_model = run(&[
        "table",
        "sql",
        "labelled",
        "SELECT served_model, count(*) AS n FROM t GROUP BY served_model ORDER BY served_model",
    ]);
    assert!(
        by_model.contains("| primary      | 40 |") || by_model.contains("primary") && by_model.contains("40"),
        "{by_model}"
    );
    let out = std::process::Command::new(bin)
        .args(["table", "count", "no_such_table", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no table at"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_table_directory_leaves_serving_up() {
    if common::skip_without_ort() {
        return;
    }
    // a data_dir below a regular file cannot be created, even by root
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let t = common::start(&config(&blocker.path().join("data"), "table = \"unwritable\"", "")).await;
    for _ in 0..5 {
        let (s, _) = t.served("/endpoints/logged/predict", &fraud_body(1), &[]).await;
        assert_eq!(s, 200);
    }
    eventually("write errors to be counted", || async {
        metric(&t, "sluice_log_write_errors_total", r#"table="unwritable""#).await >= 1.0
    })
    .await;
    eventually("dropped rows to be counted", || async {
        metric(&t, "sluice_log_rows_dropped_total", r#"table="unwritable",reason="write_error""#).await == 10.0
    })
    .await;
    let (s, _) = t.served("/endpoints/logged/predict", &fraud_body(1), &[]).await;
    assert_eq!(s, 200, "still serving");
    t.stop().await;
}

/// A float16 model end to end: `/predict` turns JSON numbers into FP16 inputs and answers with
/// the FP16 outputs as numbers; V2 binary carries 2-byte elements both ways (the same bits);
/// V2 JSON carries numbers; the inference table logs the FP16 input and the probabilities as
/// doubles, each the exact half value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_precision_model_end_to_end() {
    if common::skip_without_ort() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
        [server]
        data_dir = "{}"
        [[models]]
        name = "mlp_fp16"
        versions = [1]
        [[endpoints]]
        name = "half"
        served_entities = [{{ name = "h", entity_name = "mlp_fp16", entity_version = 1 }}]
        inference_table = {{ flush_interval_ms = 50 }}
        "#,
        data.path().display()
    );
    let t = common::start(&toml).await;
    // 0.1 steps: most are not half values, so rounding shows
    let row: Vec<f64> = (0..64).map(|i| f64::from(i) * 0.1 - 3.0).collect();
    let halves: Vec<half::f16> = row.iter().map(|&x| half::f16::from_f64(x)).collect();
    let (s, a) = common::post_json(&t, "/endpoints/half/predict", &json!({"instances": [row]})).await;
    assert_eq!(s, 200, "{a}");
    let p = &a["predictions"][0]["probabilities"];
    // JSON numbers: each half value in its shortest f32 text, which reads back as that f32
    let predicted: Vec<f32> = (0..10).map(|c| p[format!("c{c}")].as_f64().unwrap() as f32).collect();
    assert!((predicted.iter().sum::<f32>() - 1.0).abs() < 1e-2, "{predicted:?}");
    for v in &predicted {
        assert_eq!(half::f16::from_f32(*v).to_f32(), *v, "{v} is not a half value");
    }

    // V2 binary: the FP16 bits in, the FP16 bits out
    let header = json!({"inputs": [{"name": "input", "datatype": "FP16", "shape": [1, 64],
                                    "parameters": {"binary_data_size": 128}}],
                        "outputs": [{"name": "probs", "parameters": {"binary_data": true}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(halves.iter().flat_map(|h| h.to_le_bytes()));
    let r = t
        .client
        .post(t.url("/v2/models/mlp_fp16/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let n: usize = r.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let bytes = r.bytes().await.unwrap();
    let head: serde_json::Value = serde_json::from_slice(&bytes[..n]).unwrap();
    assert_eq!(head["outputs"][0]["datatype"], "FP16", "{head}");
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 20, "{head}");
    let out: Vec<f32> = bytes[n..].chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
    assert_eq!(out, predicted, "V2 binary and /predict give the same half values");
    // V2 JSON: numbers in, numbers out
    let v2 = json!({"inputs": [{"name": "input", "datatype": "FP16", "shape": [1, 64], "data": row}]});
    let (s, j) = common::post_json(&t, "/v2/models/mlp_fp16/infer", &v2).await;
    assert_eq!(s, 200, "{j}");
    let out: Vec<f32> =
        j["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(out, predicted);
    let (s, e) = common::post_json(
        &t,
        "/v2/models/mlp_fp16/infer",
        &json!({"inputs": [{"name": "input", "datatype": "FP16", "shape": [1, 64], "data": vec![70000.0; 64]}]}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("out of range for FP16"), "{e}");

    // the inference table: the endpoint's request, the FP16 values as doubles
    let dir = data.path().join("half");
    eventually("the row is written", || async { rows(&read_table(&dir)) == 1 }).await;
    let batches = read_table(&dir);
    let inputs = batches[0].column_by_name("input_input").expect("input_input column").as_list::<i32>().value(0);
    let logged: Vec<f64> = inputs.as_primitive::<Float64Type>().values().to_vec();
    assert_eq!(logged, halves.iter().map(|h| h.to_f64()).collect::<Vec<_>>());
    let probs = batches[0].column_by_name("probabilities").expect("probabilities column").as_map().value(0);
    let values: Vec<f64> = probs.column(1).as_primitive::<Float64Type>().values().to_vec();
    assert_eq!(values, predicted.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), "the exact half values");
    t.stop().await;
}
