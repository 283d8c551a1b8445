//! Bad data must not poison the gateway: a committed Parquet file cut in half and one replaced
//! by a file of a foreign schema in a live inference table are skipped and counted (a stray
//! file beside the Delta log is not part of the table at all), while a monitor refresh,
//! a rollout step and an experiment report still work on the good files and `sluice table
//! check` names the bad ones. A shadow queue's byte budget drops (and counts) mirrored copies
//! that do not fit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::common::{self, TestServer, eventually, metric};

fn config(data: &Path) -> sluice::config::Config {
    let text = format!(
        r#"
[server]
data_dir = "{data}"

[[endpoints]]
name = "fraud"
served_entities = [
  {{ name = "champion", entity_name = "fraud_classifier", entity_version = "1", batching = {{ enabled = false }} }},
  {{ name = "candidate", entity_name = "fraud_classifier", entity_version = "1", batching = {{ enabled = false }} }},
]
traffic_config = {{ routes = [
  {{ served_model_name = "champion", traffic_percentage = 100 }},
  {{ served_model_name = "candidate", traffic_percentage = 0 }},
] }}
routing_seed = 7
inference_table = {{ enabled = true, flush_interval_ms = 100 }}
[endpoints.monitor]
granularities = ["1 hour"]
baseline = "models/fraud_classifier/1/baseline.parquet"
refresh_interval = "1h"
"#,
        data = data.display(),
    );
    let mut c = common::config(&text);
    c.server.test_clock = true;
    c
}

async fn send(t: &TestServer, n: usize) {
    for i in 0..n {
        let (s, _) = t.served("/endpoints/fraud/predict", &common::fraud_body(1 + i % 3), &[]).await;
        assert_eq!(s, 200);
    }
}

async fn admin(t: &TestServer, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = t.client.request(method, format!("{}{path}", t.admin)).header("content-type", "application/json");
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The committed data files of the table, oldest first.
fn parts(table: &Path) -> Vec<PathBuf> {
    sluice::inference_log::read::list_parquet(table)
}

/// The rows a Parquet file holds, from its footer.
fn file_rows(path: &Path) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let b = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    b.metadata().file_metadata().num_rows() as u64
}

/// The rows of the table's committed files.
fn committed_rows(table: &Path) -> u64 {
    parts(table).iter().map(|p| file_rows(p)).sum()
}

/// A Parquet file whose columns share names with the table's but not their types.
fn write_foreign(path: &Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("request_id", DataType::Int64, false),
        Field::new("timestamp", DataType::Utf8, false),
    ]));
    let cols: Vec<ArrayRef> =
        vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(StringArray::from(vec!["yesterday", "today"]))];
    let batch = RecordBatch::try_new(schema, cols).unwrap();
    let mut w =
        datafusion::parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn skipped(reason: &str) -> String {
    format!(r#"table="fraud",reason="{reason}""#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_foreign_parquet_files_are_skipped_counted_and_reported() {
    if common::skip_without_ort() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let table = data.path().join("fraud");
    let t = common::start_with(config(data.path())).await;
    // at least three committed files, so that the offline check (which has no writer's schema
    // to go by) takes the schema most files share
    let rows_per_send: u64 = (0..20).map(|i| 1 + i % 3).sum(); // as `send` sends them
    for n in 1..=3 {
        send(&t, 20).await;
        eventually("the rows committed", || async { committed_rows(&table) == rows_per_send * n }).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    // two committed files go bad: one is cut in half, one is replaced by a foreign tool's file
    // (another writer's mistake); a third foreign file lies beside the log, never committed
    let good = parts(&table);
    let (cut, foreign) = (good[0].clone(), good[1].clone());
    let lost = file_rows(&cut) + file_rows(&foreign);
    let (cut_bytes, foreign_bytes) = (std::fs::read(&cut).unwrap(), std::fs::read(&foreign).unwrap());
    std::fs::write(&cut, &cut_bytes[..cut_bytes.len() / 2]).unwrap();
    write_foreign(&foreign);
    let stray = cut.parent().unwrap().join("part-99999-stray.parquet");
    write_foreign(&stray);
    let (unreadable0, incompatible0) = (
        metric(&t, "sluice_table_files_skipped_total", &skipped("unreadable")).await,
        metric(&t, "sluice_table_files_skipped_total", &skipped("incompatible_schema")).await,
    );

    // the monitor refreshes over the good files
    let (s, v) = admin(&t, reqwest::Method::POST, "/monitors/fraud/refresh", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["refresh"]["report"]["rows_read"].as_u64().unwrap(), 3 * rows_per_send - lost, "{v}");
    assert_eq!(metric(&t, "sluice_table_files_skipped_total", &skipped("unreadable")).await, unreadable0 + 1.0);
    assert_eq!(
        metric(&t, "sluice_table_files_skipped_total", &skipped("incompatible_schema")).await,
        incompatible0 + 1.0
    );

    // a rollout step is judged on the good files and passes
    let body = json!({
        "candidate": "candidate", "steps": [25, 50, 100], "interval": "5m", "min_requests": 20,
        "guardrails": {"max_p99_latency_ratio": 20.0, "p99_latency_slack_ms": 1000.0},
    });
    let (s, st) = admin(&t, reqwest::Method::POST, "/rollouts/fraud", Some(body)).await;
    assert_eq!(s, 201, "{st}");
    send(&t, 200).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the writer publishes every 100 ms
    let (s, _) = admin(&t, reqwest::Method::POST, "/debug/clock", Some(json!({"advance": "5m"}))).await;
    assert_eq!(s, 200);
    let start = std::time::Instant::now();
    let st = loop {
        let st = admin(&t, reqwest::Method::GET, "/rollouts/fraud", None).await.1;
        if st["step"] != 0 || st["phase"] != "progressing" {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the first step was not judged: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(st["phase"], "progressing", "{st}");
    assert_eq!(st["candidate_percent"], 50, "{st}");
    let checks = st["last_checks"].as_array().unwrap();
    assert!(!checks.is_empty() && checks.iter().all(|c| c["passed"] == true), "{st}");

    // the A/B report reads the same table
    let (s, v) = admin(&t, reqwest::Method::GET, "/experiments/fraud", None).await;
    assert_eq!(s, 200, "{v}");

    // the files were counted once each, not once per read
    assert_eq!(metric(&t, "sluice_table_files_skipped_total", &skipped("unreadable")).await, unreadable0 + 1.0);
    assert_eq!(
        metric(&t, "sluice_table_files_skipped_total", &skipped("incompatible_schema")).await,
        incompatible0 + 1.0
    );
    t.stop().await;

    // the CLI names the bad files, says OK for the others, and fails
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["table", "check", "fraud", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = |p: &Path| {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        text.lines().find(|l| l.contains(&name)).unwrap_or_default().to_string()
    };
    assert!(line(&cut).starts_with("SKIP") && line(&cut).contains("unreadable"), "{text}");
    assert!(line(&foreign).starts_with("SKIP") && line(&foreign).contains("incompatible_schema"), "{text}");
    assert_eq!(line(&stray), "", "a file the log does not list is not part of the table: {text}");
    let ok = text.lines().filter(|l| l.starts_with("OK")).count();
    assert!(ok >= 1, "{text}");
    // with the committed files restored the table checks clean (the stray file still lies there)
    std::fs::write(&cut, &cut_bytes).unwrap();
    std::fs::write(&foreign, &foreign_bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["table", "check"]).arg(&table).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_queue_over_its_byte_budget_drops_and_counts() {
    if common::skip_without_ort() {
        return;
    }
    let cfg = crate::traffic::shadow_config("bytes", "fraud_classifier", 16)
        .replace("shadow_queue_capacity = 16", "shadow_queue_capacity = 16\nshadow_queue_max_bytes = 1");
    let t = common::start(&cfg).await;
    let gate = Arc::new(Semaphore::new(0));
    t.gateway().snapshot().endpoints["bytes"].set_shadow_gate(Some(gate.clone()));
    let labels = r#"endpoint="bytes",served_model="shadow""#;
    // the first copy fits alone (larger than the budget, nothing else held) and is held back;
    // every later one finds the budget spent, though the queue has room for 16
    for _ in 0..10 {
        let (s, _) = t.served("/endpoints/bytes/predict", &common::fraud_body(1), &[]).await;
        assert_eq!(s, 200);
    }
    let dropped = |reason: &str| format!("{labels},reason=\"{reason}\"");
    assert_eq!(metric(&t, "sluice_shadow_mirrored_total", labels).await, 1.0);
    assert_eq!(metric(&t, "sluice_shadow_dropped_total", &dropped("queue_bytes_full")).await, 9.0);
    assert_eq!(metric(&t, "sluice_shadow_dropped_total", &dropped("queue_full")).await, 0.0);
    let held = || t.gateway().snapshot().endpoints["bytes"].shadow_queued_bytes();
    assert!(held() > 0);
    // once the held copy has run, its bytes are back
    gate.add_permits(100);
    eventually("the held shadow to finish and give its bytes back", || async {
        let ran = metric(&t, "sluice_shadow_completed_total", labels).await
            + metric(&t, "sluice_shadow_failed_total", labels).await;
        ran == 1.0 && held() == 0
    })
    .await;
    assert_eq!(metric(&t, "sluice_shadow_failed_total", labels).await, 0.0);
    let (s, _) = t.served("/endpoints/bytes/predict", &common::fraud_body(1), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(metric(&t, "sluice_shadow_mirrored_total", labels).await, 2.0);
    t.stop().await;
}
