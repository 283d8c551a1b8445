//! Inference tables: every answer an endpoint gives (primary and shadow, success and error) is
//! logged to a Delta Lake table partitioned by `date` (`<data_dir>/<table>`: zstd Parquet files
//! under `date=YYYY-MM-DD/` and the transaction log in `_delta_log/`), readable by Spark,
//! Databricks, delta-rs, DuckDB and Polars.
//!
//! The request path only enqueues a record. The queue is bounded in records and in bytes (an
//! estimate of each record's heap size, held until the record is written): `drop` counts
//! what does not fit, `block` waits for room, at most [`Table::block_wait`]. One writer thread
//! per table turns records into Arrow columns and appends them as one Delta commit per flush
//! (at least every `flush_interval`, and at `max_file_rows`): readers see a flush whole or not
//! at all. On clean shutdown the queue is drained and written. Every drop and write error is
//! counted.
//!
//! This module is a leaf: it knows tensors and its own record types, nothing of routing or APIs.

mod columns;
mod error;
pub mod labels;
pub mod read;
mod writer;

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::Counter;

pub use error::LogError;

/// Commits between two checkpoints of a table's Delta log (`delta.checkpointInterval`): readers
/// replay at most this many commit files on top of the last checkpoint.
pub const CHECKPOINT_INTERVAL: u32 = 100;

use crate::budget::{ByteBudget, Reserved};
use crate::tensor::Tensor;

/// What to do when a table's queue is full (of records or of bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Drop the record and count it (default): serving never waits for the log.
    Drop,
    /// Wait for room: requests slow down instead. The wait is bounded ([`Table::block_wait`]):
    /// a writer stuck that long drops (and counts) rather than stalling requests for ever.
    Block,
}

/// Settings of one inference table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableOptions {
    /// Table name: the directory under `data_dir` (or under `storage.tables`).
    pub table: String,
    /// The table's local directory: the table, or for a remote table the readers' copy of its
    /// files.
    pub dir: PathBuf,
    /// Where the table lives when that is object storage.
    pub remote: Option<sluice_tables::Location>,
    /// Share of requests logged (each request is in or out as a whole, with its shadows).
    pub sampling_fraction: f64,
    pub on_full: OnFull,
    pub queue_capacity: usize,
    /// Most bytes (estimated heap size) of records queued or buffered and not yet written.
    pub queue_max_bytes: usize,
    pub flush_interval: Duration,
    pub max_file_rows: usize,
    /// Log raw request and response JSON (`/predict` only), each capped at `max_payload_bytes`.
    pub log_payloads: bool,
    pub max_payload_bytes: usize,
    /// Keep labels whose id this table never logged (default: refuse them).
    pub labels_accept_unknown_ids: bool,
    /// Days of `date` partitions kept, today included (older ones removed by a Delta delete).
    pub retention_days: Option<u32>,
}

impl TableOptions {
    /// Where the table is written: its remote location, else its directory.
    pub fn location(&self) -> sluice_tables::Location {
        self.remote.clone().unwrap_or_else(|| sluice_tables::Location::Local(self.dir.clone()))
    }

    /// Where its labels table is written (`<table>_labels` beside it).
    pub fn labels_location(&self) -> sluice_tables::Location {
        let name = format!("{}_labels", self.table);
        match &self.remote {
            Some(r) => r.sibling(&name),
            None => sluice_tables::Location::Local(labels::dir_of(&self.dir)),
        }
    }
}

/// One feature column: values come from `inputs[input]` at `offset + row * width`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureColumn {
    pub name: String,
    pub input: usize,
    pub offset: usize,
    pub width: usize,
}

/// How a table stores inputs: named feature columns (FLOAT64), or one list column per input
/// tensor (`input_<name>`) for models without named features.
#[derive(Debug, Clone, PartialEq)]
pub enum InputColumns {
    Features(Vec<FeatureColumn>),
    Tensors(Vec<String>),
}

/// The prediction columns of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionKind {
    /// `prediction` (label, STRING) and `probabilities` (MAP<STRING, DOUBLE>).
    Classification,
    /// `prediction` (DOUBLE).
    Regression,
    /// One list column per output (`output_<name>`).
    Tensor,
}

/// Which outputs of one served model hold its prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionSpec {
    pub label: Option<usize>,
    pub probabilities: Option<usize>,
    pub value: Option<usize>,
    pub class_labels: Option<Vec<String>>,
    /// Output names, for `Tensor` tables.
    pub output_names: Vec<String>,
}

/// The shape of a table, fixed for the life of its files.
#[derive(Debug, Clone, PartialEq)]
pub struct TableLayout {
    pub inputs: InputColumns,
    pub prediction: PredictionKind,
}

/// One logged request (N rows share it).
#[derive(Debug, Clone)]
pub struct InferenceRecord {
    pub request_id: Arc<str>,
    pub client_request_id: Option<String>,
    /// Microseconds since the Unix epoch, UTC.
    pub timestamp_us: i64,
    pub endpoint: Arc<str>,
    pub served_model: Arc<str>,
    pub model_name: Arc<str>,
    pub model_version: Arc<str>,
    pub is_shadow: bool,
    pub status_code: u16,
    pub error: Option<String>,
    pub latency_ms: f64,
    pub execution_ms: f64,
    pub queue_ms: f64,
    /// Rows in the model execution this request was part of.
    pub batch_size: u32,
    pub sampling_fraction: f64,
    pub requester: Option<String>,
    /// Request rows; 0 when the request never became tensors (a malformed body).
    pub rows: usize,
    pub inputs: Option<Arc<Vec<Tensor>>>,
    pub outputs: Option<Arc<Vec<Tensor>>>,
    pub prediction: Option<Arc<PredictionSpec>>,
    pub request_json: Option<Payload>,
    pub response_json: Option<Payload>,
}

impl InferenceRecord {
    /// An estimate of the heap memory this record keeps alive (tensors, strings, payloads), for
    /// the table's byte budget. Tensors shared with another record (a primary's inputs and its
    /// shadow's) are counted by each, so the estimate errs high.
    pub fn heap_bytes(&self) -> usize {
        let s = |o: &Option<String>| o.as_ref().map_or(0, String::len);
        let p = |o: &Option<Payload>| match o {
            Some(Payload::Json(b)) => b.len(),
            _ => 0,
        };
        let t = |o: &Option<Arc<Vec<Tensor>>>| o.as_deref().map_or(0, |v| crate::budget::tensors_bytes(v));
        std::mem::size_of::<Self>()
            + self.request_id.len()
            + s(&self.client_request_id)
            + s(&self.error)
            + s(&self.requester)
            + t(&self.inputs)
            + t(&self.outputs)
            + p(&self.request_json)
            + p(&self.response_json)
    }
}

/// A record on a table's queue, with the bytes it holds of the table's budget.
#[derive(Debug)]
struct Queued {
    record: InferenceRecord,
    held: Reserved,
}

/// A raw JSON payload to log, or the fact that it was over `max_payload_bytes`.
#[derive(Debug, Clone)]
pub enum Payload {
    Json(Arc<[u8]>),
    TooLarge,
}

impl Payload {
    /// The payload, or `TooLarge` when it exceeds `cap` bytes.
    pub fn capped(bytes: &[u8], cap: usize) -> Payload {
        if bytes.len() > cap { Payload::TooLarge } else { Payload::Json(Arc::from(bytes)) }
    }
}

/// Counters of one table.
#[derive(Debug, Clone)]
struct TableMetrics {
    rows_written: Counter,
    dropped_full: Counter,
    dropped_bytes_full: Counter,
    dropped_closed: Counter,
    dropped_write_error: Counter,
    files: Counter,
    bytes: Counter,
    write_errors: Counter,
    commits: Counter,
    commit_retries: Counter,
    commit_seconds: metrics::Histogram,
}

impl TableMetrics {
    fn new(table: &str) -> TableMetrics {
        use crate::metrics::{
            LOG_BYTES_TOTAL, LOG_COMMIT_DURATION, LOG_COMMIT_RETRIES_TOTAL, LOG_COMMITS_TOTAL, LOG_FILES_TOTAL,
            LOG_ROWS_DROPPED_TOTAL, LOG_ROWS_WRITTEN_TOTAL, LOG_WRITE_ERRORS_TOTAL,
        };
        let t = || ("table", table.to_string());
        let dropped = |r: &'static str| metrics::counter!(LOG_ROWS_DROPPED_TOTAL, &[t(), ("reason", r.to_string())]);
        TableMetrics {
            rows_written: metrics::counter!(LOG_ROWS_WRITTEN_TOTAL, &[t()]),
            dropped_full: dropped("queue_full"),
            dropped_bytes_full: dropped("queue_bytes_full"),
            dropped_closed: dropped("closed"),
            dropped_write_error: dropped("write_error"),
            files: metrics::counter!(LOG_FILES_TOTAL, &[t()]),
            bytes: metrics::counter!(LOG_BYTES_TOTAL, &[t()]),
            write_errors: metrics::counter!(LOG_WRITE_ERRORS_TOTAL, &[t()]),
            commits: metrics::counter!(LOG_COMMITS_TOTAL, &[t()]),
            commit_retries: metrics::counter!(LOG_COMMIT_RETRIES_TOTAL, &[t()]),
            commit_seconds: metrics::histogram!(LOG_COMMIT_DURATION, &[t()]),
        }
    }
}

/// Request and client request ids logged recently, so labels can tell known ids from unknown.
#[derive(Debug, Default)]
struct IdIndex {
    set: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
}

/// Most ids remembered per table for label matching.
const ID_INDEX_CAPACITY: usize = 1_000_000;

impl IdIndex {
    fn insert(&mut self, id: Arc<str>) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > ID_INDEX_CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

/// Handle to one table's writer. Cheap to clone; the writer thread stops (after writing what it
/// holds) when [`Table::close`] is called or every handle is dropped.
#[derive(Debug, Clone)]
pub struct Table {
    inner: Arc<TableInner>,
}

#[derive(Debug)]
struct TableInner {
    options: TableOptions,
    layout: TableLayout,
    tx: Mutex<Option<flume::Sender<Queued>>>,
    budget: Arc<ByteBudget>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    metrics: TableMetrics,
    /// Unix second of the last drop warning (at most one a second).
    last_drop_warning: AtomicU64,
    ids: Mutex<IdIndex>,
    /// The table version the id index has read up to (a Delta table), and when it last looked:
    /// ids other replicas logged are learnt from the files added since.
    ids_seen: Mutex<(Option<u64>, Option<std::time::Instant>)>,
    /// The writer of the labels table beside this one.
    labels: labels::LabelSink,
}

impl Table {
    /// Starts the writer thread of a table.
    pub fn open(options: TableOptions, layout: TableLayout) -> Result<Table, LogError> {
        let metrics = TableMetrics::new(&options.table);
        let w = writer::Writer::new(options.clone(), layout.clone(), metrics.clone())?;
        Table::open_with(options, layout, metrics, move |rx| w.run(rx))
    }

    /// A table whose queue is drained by `drain` on the writer thread (tests hold records back).
    fn open_with(
        options: TableOptions,
        layout: TableLayout,
        metrics: TableMetrics,
        drain: impl FnOnce(flume::Receiver<Queued>) + Send + 'static,
    ) -> Result<Table, LogError> {
        let (tx, rx) = flume::bounded(options.queue_capacity.max(1));
        let budget = ByteBudget::new(options.queue_max_bytes.max(1));
        if let Ok(schema) = schema_of(&layout) {
            read::expect_schema(&options.dir, schema);
        }
        let thread = std::thread::Builder::new()
            .name(format!("log-{}", options.table))
            .spawn(move || drain(rx))
            .map_err(|source| LogError::StartWriter { table: options.table.clone(), source })?;
        if let Some(remote) = &options.remote {
            // readers see the remote tables through local copies of their files
            read::mirror(&options.dir, remote.clone());
            read::mirror(&labels::dir_of(&options.dir), options.labels_location());
        }
        let label_sink = labels::LabelSink::start(options.labels_location(), &options.table)
            .map_err(|source| LogError::StartWriter { table: format!("{}_labels", options.table), source })?;
        // what the table logged before this process: labels may refer to it
        let mut ids = IdIndex::default();
        let (mut recent, version) = match read::log_listing(&options.dir, None) {
            Some(l) => (read::ids_in(l.files.into_iter().rev().map(|(p, _)| p), ID_INDEX_CAPACITY), l.version),
            None => (read::recent_ids(&options.dir, ID_INDEX_CAPACITY), None),
        };
        recent.reverse();
        for id in recent {
            ids.insert(Arc::from(id));
        }
        Ok(Table {
            inner: Arc::new(TableInner {
                options,
                layout,
                tx: Mutex::new(Some(tx)),
                budget,
                thread: Mutex::new(Some(thread)),
                metrics,
                last_drop_warning: AtomicU64::new(0),
                ids: Mutex::new(ids),
                ids_seen: Mutex::new((version, None)),
                labels: label_sink,
            }),
        })
    }

    pub fn options(&self) -> &TableOptions {
        &self.inner.options
    }

    pub fn layout(&self) -> &TableLayout {
        &self.inner.layout
    }

    /// The Arrow schema of this table's files.
    pub fn schema(&self) -> Result<datafusion::arrow::datatypes::SchemaRef, LogError> {
        schema_of(&self.inner.layout)
    }

    /// Whether a request drawn as `u` in [0, 1) is in the sample.
    pub fn sampled(&self, u: f64) -> bool {
        u < self.inner.options.sampling_fraction
    }

    fn sender(&self) -> Option<flume::Sender<Queued>> {
        self.inner.tx.lock().ok().and_then(|g| g.clone())
    }

    fn remember(&self, record: &InferenceRecord) {
        if record.is_shadow {
            return;
        }
        if let Ok(mut ids) = self.inner.ids.lock() {
            ids.insert(record.request_id.clone());
            if let Some(c) = &record.client_request_id {
                ids.insert(Arc::from(c.as_str()));
            }
        }
    }

    /// Logs a record. With `drop`, never waits: a record that does not fit (in records or in
    /// bytes) is dropped and counted. With `block`, waits for room, at most
    /// [`Table::block_wait`], then drops and counts.
    pub async fn log(&self, record: InferenceRecord) {
        let rows = record.rows.max(1) as u64;
        let Some(tx) = self.sender() else {
            self.inner.metrics.dropped_closed.increment(rows);
            return;
        };
        self.remember(&record);
        let bytes = record.heap_bytes();
        let m = &self.inner.metrics;
        match self.inner.options.on_full {
            OnFull::Drop => {
                let Some(held) = self.inner.budget.try_reserve(bytes) else {
                    return self.dropped(&m.dropped_bytes_full, rows, "queue_bytes_full");
                };
                match tx.try_send(Queued { record, held }) {
                    Ok(()) => {}
                    Err(flume::TrySendError::Full(_)) => self.dropped(&m.dropped_full, rows, "queue_full"),
                    Err(flume::TrySendError::Disconnected(_)) => m.dropped_closed.increment(rows),
                }
            }
            OnFull::Block => {
                let deadline = tokio::time::Instant::now() + self.block_wait();
                let Some(held) = self.inner.budget.reserve_until(bytes, deadline).await else {
                    return self.dropped(&m.dropped_bytes_full, rows, "queue_bytes_full");
                };
                match tokio::time::timeout_at(deadline, tx.send_async(Queued { record, held })).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => m.dropped_closed.increment(rows),
                    Err(_) => self.dropped(&m.dropped_full, rows, "queue_full"),
                }
            }
        }
    }

    /// The longest a `block` table makes a request wait for room: five flush intervals, and at
    /// least 1 s. A writer that frees nothing for that long is stuck (a hung disk), and
    /// requests must not hang with it.
    pub fn block_wait(&self) -> Duration {
        (self.inner.options.flush_interval * 5).max(Duration::from_secs(1))
    }

    /// Counts dropped rows; warns at most once a second per table.
    fn dropped(&self, counter: &Counter, rows: u64, reason: &'static str) {
        counter.increment(rows);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let last = self.inner.last_drop_warning.load(Ordering::Relaxed);
        if now > last
            && self.inner.last_drop_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(table = %self.inner.options.table, reason, "inference table queue full: records are being dropped (sluice_log_rows_dropped_total)");
        }
    }

    /// Bytes of records queued or buffered and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.inner.budget.used()
    }

    /// Writes labels to the labels table beside this one, gathered with other posts into one
    /// file; returns once they are on disk.
    pub async fn write_labels(&self, items: Vec<labels::LabelItem>) -> Result<(), String> {
        self.inner.labels.write(items).await
    }

    /// Whether `id` (request id or client request id) was logged recently.
    pub fn knows(&self, id: &str) -> bool {
        self.inner.ids.lock().map(|i| i.set.contains(id)).unwrap_or(false)
    }

    /// Learns the ids of the rows other writers (other replicas) committed to the table since
    /// the index last looked, from the files the Delta log added since that version; at most
    /// every half second (a stream of unknown ids does not read the log each time).
    pub async fn learn_ids(&self) {
        let since = {
            let Ok(mut seen) = self.inner.ids_seen.lock() else { return };
            if seen.1.is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(500)) {
                return;
            }
            seen.1 = Some(std::time::Instant::now());
            seen.0
        };
        let dir = self.inner.options.dir.clone();
        let learnt = tokio::task::spawn_blocking(move || {
            // None: not a Delta table (nothing to learn from a log)
            let l = read::log_listing(&dir, since)?;
            let files: Vec<std::path::PathBuf> = match l.changes {
                Some(c) if !c.restart => {
                    let added = c.added.iter().chain(c.rewrites.iter().flat_map(|r| r.added.iter()));
                    added.map(|p| dir.join(p)).filter(|p| p.is_file()).collect()
                }
                // no version read yet (the table was made after this one opened), or the log
                // cannot say what changed: the newest files, up to the index's capacity
                _ => l.files.into_iter().rev().map(|(p, _)| p).collect(),
            };
            Some((l.version, read::ids_in(files.into_iter(), ID_INDEX_CAPACITY)))
        })
        .await;
        if let Ok(Some((version, ids))) = learnt {
            if let Ok(mut index) = self.inner.ids.lock() {
                for id in ids {
                    index.insert(Arc::from(id));
                }
            }
            if let (Some(v), Ok(mut seen)) = (version, self.inner.ids_seen.lock()) {
                seen.0 = Some(v);
            }
        }
    }

    /// Stops taking records, writes what is queued, and waits for the writer (blocking).
    pub fn close(&self) {
        if let Ok(mut tx) = self.inner.tx.lock() {
            tx.take();
        }
        let thread = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!(table = %self.inner.options.table, "inference table writer panicked");
        }
    }
}

/// The Arrow schema of the files of a table with `layout`.
pub fn schema_of(layout: &TableLayout) -> Result<datafusion::arrow::datatypes::SchemaRef, LogError> {
    columns::batch(layout, &[]).map(|b| b.schema()).map_err(LogError::Schema)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
pub fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `date=YYYY-MM-DD` partition of a timestamp in microseconds.
pub fn partition_of(timestamp_us: i64) -> String {
    format!("date={}", date_of(timestamp_us))
}

/// The `date` partition value (`YYYY-MM-DD`, UTC) of a timestamp.
pub fn date_of(timestamp_us: i64) -> String {
    let (y, m, d) = civil_date(timestamp_us.div_euclid(86_400_000_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The first `date` partition that `retention_days` keeps at `now_us` (today is the first day).
pub fn first_kept_date(now_us: i64, retention_days: u32) -> String {
    date_of(now_us - (i64::from(retention_days) - 1) * 86_400_000_000)
}

/// How often writers apply a table's retention (and once when they start).
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Now, in microseconds since the epoch.
pub fn now_us() -> i64 {
    crate::clock::system_now_us()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_partition_by_utc_day() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(19_723), (2024, 1, 1));
        assert_eq!(civil_date(20_513), (2026, 3, 1));
        assert_eq!(partition_of(1_795_665_647_794_000), "date=2026-11-26");
        assert_eq!(partition_of(-1), "date=1969-12-31");
    }

    #[test]
    fn retention_keeps_today_and_the_days_before() {
        let noon = 1_796_558_400_000_000; // 2026-12-06 12:00 UTC
        assert_eq!(first_kept_date(noon, 1), "2026-12-06");
        assert_eq!(first_kept_date(noon, 7), "2026-11-30");
        assert_eq!(first_kept_date(noon, 30), "2026-11-07");
    }

    #[test]
    fn id_index_forgets_the_oldest() {
        let mut i = IdIndex::default();
        for n in 0..(ID_INDEX_CAPACITY + 5) {
            i.insert(Arc::from(n.to_string().as_str()));
        }
        assert!(!i.set.contains("0"));
        assert!(i.set.contains("5"));
        assert_eq!(i.set.len(), ID_INDEX_CAPACITY);
    }
}

#[cfg(test)]
mod queue_tests;
