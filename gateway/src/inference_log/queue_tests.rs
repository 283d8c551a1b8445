//! A table's queue is bounded in records and in bytes: `drop` counts what does not fit by
//! reason, `block` waits for room (bytes included) at most `block_wait`, and the writer gives
//! the bytes back once records are written.

use std::path::Path;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use super::*;
use crate::tensor::TensorData;

fn options(dir: &Path, on_full: OnFull, queue_capacity: usize, queue_max_bytes: usize) -> TableOptions {
    TableOptions {
        table: "q".into(),
        dir: dir.to_path_buf(),
        remote: None,
        sampling_fraction: 1.0,
        on_full,
        queue_capacity,
        queue_max_bytes,
        flush_interval: Duration::from_millis(1),
        max_file_rows: 1000,
        log_payloads: false,
        max_payload_bytes: 0,
        labels_accept_unknown_ids: false,
        retention_days: None,
    }
}

fn layout() -> TableLayout {
    TableLayout { inputs: InputColumns::Tensors(vec!["x".into()]), prediction: PredictionKind::Tensor }
}

/// A one-row record whose input holds `values` FP32 values.
fn record(values: usize) -> InferenceRecord {
    let name: Arc<str> = Arc::from("m");
    InferenceRecord {
        request_id: Arc::from("r"),
        client_request_id: None,
        timestamp_us: 0,
        endpoint: name.clone(),
        served_model: name.clone(),
        model_name: name.clone(),
        model_version: name,
        is_shadow: false,
        status_code: 200,
        error: None,
        latency_ms: 0.0,
        execution_ms: 0.0,
        queue_ms: 0.0,
        batch_size: 1,
        sampling_fraction: 1.0,
        requester: None,
        rows: 1,
        inputs: Some(Arc::new(vec![Tensor::new(vec![1, values as i64], TensorData::F32(vec![0.0; values]))])),
        outputs: None,
        prediction: None,
        request_json: None,
        response_json: None,
    }
}

/// A table whose queue the test drains by hand, counting into a recorder of its own.
fn held_table(opts: TableOptions) -> (Table, flume::Receiver<Queued>, PrometheusRecorder) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let (give, take) = std::sync::mpsc::channel();
    let table = metrics::with_local_recorder(&recorder, || {
        let m = TableMetrics::new(&opts.table);
        Table::open_with(opts, layout(), m, move |rx| {
            let _ = give.send(rx);
        })
    })
    .unwrap();
    (table, take.recv().unwrap(), recorder)
}

fn dropped(r: &PrometheusRecorder, reason: &str) -> u64 {
    let prefix = format!("sluice_log_rows_dropped_total{{table=\"q\",reason=\"{reason}\"}} ");
    r.handle().render().lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn a_record_counts_its_tensors_and_strings() {
    let small = record(1).heap_bytes();
    assert_eq!(record(1001).heap_bytes() - small, 4000);
    let mut r = record(1);
    r.error = Some("x".repeat(500));
    r.request_json = Some(Payload::Json(Arc::from(&[0u8; 300][..])));
    assert_eq!(r.heap_bytes() - small, 800);
}

#[tokio::test]
async fn drop_counts_records_over_the_byte_budget_and_over_the_item_bound() {
    let dir = tempfile::tempdir().unwrap();
    let b = record(1000).heap_bytes();
    let (table, rx, metrics) = held_table(options(dir.path(), OnFull::Drop, 100, 3 * b));
    for _ in 0..5 {
        table.log(record(1000)).await;
    }
    assert_eq!((rx.len(), table.queued_bytes()), (3, 3 * b));
    assert_eq!((dropped(&metrics, "queue_bytes_full"), dropped(&metrics, "queue_full")), (2, 0));
    // a written (here: taken and dropped) record gives its bytes back
    drop(rx.recv().unwrap());
    assert_eq!(table.queued_bytes(), 2 * b);
    table.log(record(1000)).await;
    assert_eq!((rx.len(), dropped(&metrics, "queue_bytes_full")), (3, 2));

    let (table, rx, metrics) = held_table(options(dir.path(), OnFull::Drop, 2, usize::MAX));
    for _ in 0..3 {
        table.log(record(10)).await;
    }
    assert_eq!((rx.len(), dropped(&metrics, "queue_full"), dropped(&metrics, "queue_bytes_full")), (2, 1, 0));
    // a refused record holds no bytes
    assert_eq!(table.queued_bytes(), 2 * record(10).heap_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_waits_for_bytes_and_gives_up_after_block_wait() {
    let dir = tempfile::tempdir().unwrap();
    let b = record(1000).heap_bytes();
    let (table, rx, metrics) = held_table(options(dir.path(), OnFull::Block, 100, b));
    table.log(record(1000)).await;
    let t = table.clone();
    let waiting = tokio::spawn(async move { t.log(record(1000)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the second record waits for bytes, not for a queue slot");
    assert_eq!(rx.len(), 1);
    drop(rx.recv().unwrap());
    waiting.await.unwrap();
    assert_eq!((rx.len(), dropped(&metrics, "queue_bytes_full")), (1, 0));
    // nobody frees anything: the wait is bounded, then the record is dropped and counted
    let start = std::time::Instant::now();
    table.log(record(1000)).await;
    let waited = start.elapsed();
    assert!(waited >= table.block_wait() && waited < table.block_wait() * 3, "{waited:?}");
    assert_eq!((rx.len(), dropped(&metrics, "queue_bytes_full")), (1, 1));
}

#[tokio::test]
async fn the_writer_gives_bytes_back_once_records_are_written() {
    let dir = tempfile::tempdir().unwrap();
    // a budget of about two records: the writer writes early, at half of it
    let table = Table::open(options(dir.path(), OnFull::Block, 100, 2 * record(1000).heap_bytes()), layout()).unwrap();
    for _ in 0..20 {
        table.log(record(1000)).await;
    }
    table.close();
    assert_eq!(table.queued_bytes(), 0);
    let rows: u64 = read::list_parquet(dir.path())
        .iter()
        .map(|p| {
            let f = std::fs::File::open(p).unwrap();
            let r = parquet::file::reader::SerializedFileReader::new(f).unwrap();
            parquet::file::reader::FileReader::metadata(&r).file_metadata().num_rows() as u64
        })
        .sum();
    assert_eq!(rows, 20, "every record was written, none dropped");
}
