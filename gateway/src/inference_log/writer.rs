//! The writer thread of one table: buffers records, and at least every `flush_interval` (or at
//! `max_file_rows`) appends them to the table's Delta log as one commit (one zstd Parquet file per
//! date partition; see [`crate::table_writer`]). A flush that cannot be committed yet (object
//! storage unreachable) is retried with backoff while records wait in the queue, whose bound and
//! `on_queue_full` policy decide what happens to new ones; after the queue closes, for at most
//! [`CLOSE_RETRY`], then its rows are dropped and counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use sluice_tables::TableSpec;

use super::{
    CHECKPOINT_INTERVAL, InferenceRecord, LogError, Queued, RETENTION_EVERY, TableLayout, TableMetrics, TableOptions,
    columns, date_of,
};
use crate::table_writer::TableWriter;

/// How long a closing writer keeps retrying a flush that cannot be committed.
pub(super) const CLOSE_RETRY: Duration = Duration::from_secs(30);

/// Records taken from the queue and not yet written, with the budget bytes they hold.
#[derive(Default)]
struct Pending {
    buffer: Vec<InferenceRecord>,
    held: Vec<crate::budget::Reserved>,
    held_bytes: usize,
    rows: usize,
}

impl Pending {
    fn push(&mut self, q: Queued) {
        self.rows += q.record.rows.max(1);
        self.held_bytes += q.held.bytes();
        self.buffer.push(q.record);
        self.held.push(q.held);
    }

    /// Writes the buffer, then frees its budget bytes.
    fn write(&mut self, w: &mut Writer, until: Option<Instant>) {
        w.flush(&mut self.buffer, until);
        self.held.clear();
        (self.rows, self.held_bytes) = (0, 0);
    }
}

/// How long the writer lets records gather in the queue after taking what was there.
const GATHER: Duration = Duration::from_millis(5);

pub(super) struct Writer {
    options: TableOptions,
    layout: TableLayout,
    metrics: TableMetrics,
    table: TableWriter,
    /// The labels table, for retention only (its rows are written by the label sink).
    labels: Option<TableWriter>,
    last_error_log: Option<Instant>,
}

impl Writer {
    pub fn new(options: TableOptions, layout: TableLayout, metrics: TableMetrics) -> Result<Writer, LogError> {
        let schema = columns::batch(&layout, &[]).map_err(LogError::Columns)?.schema();
        let spec = TableSpec {
            schema: with_date_field(&schema),
            partition_by: vec!["date".into()],
            checkpoint_interval: CHECKPOINT_INTERVAL,
        };
        let table = TableWriter::new(options.location(), spec)
            .map_err(|source| LogError::StartWriter { table: options.table.clone(), source })?
            .count_retries(metrics.commit_retries.clone());
        let labels = match options.retention_days {
            Some(_) => Some(
                TableWriter::new(options.labels_location(), super::labels::spec())
                    .map_err(|source| LogError::StartWriter { table: options.table.clone(), source })?,
            ),
            None => None,
        };
        Ok(Writer { options, layout, metrics, table, labels, last_error_log: None })
    }

    /// Runs until every sender is gone, then writes what is left. The budget bytes of buffered
    /// records are held until they are written; at half the budget the buffer is written
    /// early, so the queue always has room to fill while a file is being written.
    ///
    /// Records are taken in gathers: after a wake-up the writer takes everything queued, then
    /// sleeps [`GATHER`] while the queue fills without waking it (a sender wakes only a writer
    /// blocked in `recv`), so under load it wakes a few hundred times a second, not once per
    /// request (each wake-up is two context switches on the request path's cores). It does not
    /// sleep when a gather took a quarter of the queue's capacity or more: the queue is filling
    /// fast and senders may be about to wait for room.
    pub fn run(mut self, rx: flume::Receiver<Queued>) {
        let mut pending = Pending::default();
        let early = (self.options.queue_max_bytes / 2).max(1);
        let busy = (self.options.queue_capacity / 4).max(1);
        let mut deadline = Instant::now() + self.options.flush_interval;
        let mut next_retention = Instant::now();
        loop {
            if Instant::now() >= next_retention {
                self.apply_retention();
                next_retention = Instant::now() + RETENTION_EVERY;
            }
            match rx.recv_deadline(deadline) {
                Ok(first) => {
                    let mut taken = 0;
                    for q in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                        taken += 1;
                        pending.push(q);
                        if pending.rows >= self.options.max_file_rows || pending.held_bytes >= early {
                            pending.write(&mut self, None);
                        }
                    }
                    let now = Instant::now();
                    if taken < busy && now < deadline {
                        std::thread::sleep(GATHER.min(deadline - now));
                    }
                }
                Err(flume::RecvTimeoutError::Timeout) => {
                    pending.write(&mut self, None);
                    deadline = Instant::now() + self.options.flush_interval;
                }
                Err(flume::RecvTimeoutError::Disconnected) => {
                    pending.write(&mut self, Some(Instant::now() + CLOSE_RETRY));
                    return;
                }
            }
        }
    }

    /// Appends the buffered records (one file per date partition, one commit) and empties the
    /// buffer. Retries while the commit can still succeed, up to `until` when closing.
    fn flush(&mut self, buffer: &mut Vec<InferenceRecord>, until: Option<Instant>) {
        if buffer.is_empty() {
            return;
        }
        let mut by_date: BTreeMap<String, Vec<InferenceRecord>> = BTreeMap::new();
        for rec in buffer.drain(..) {
            by_date.entry(date_of(rec.timestamp_us)).or_default().push(rec);
        }
        let mut batches = Vec::new();
        let mut rows = 0u64;
        for (date, recs) in by_date {
            let n: u64 = recs.iter().map(|r| r.rows.max(1) as u64).sum();
            match columns::batch(&self.layout, &recs).and_then(|b| add_date(&b, &date)) {
                Ok(b) => {
                    batches.push(b);
                    rows += n;
                }
                Err(e) => self.failed(n, &format!("cannot build the rows: {e}")),
            }
        }
        if batches.is_empty() {
            return;
        }
        let keep_trying = || until.is_none_or(|u| Instant::now() < u);
        match self.table.append(&batches, keep_trying) {
            Ok(a) => {
                self.metrics.rows_written.increment(rows);
                self.metrics.files.increment(a.files as u64);
                self.metrics.bytes.increment(a.bytes);
                self.metrics.commits.increment(1);
                self.metrics.commit_seconds.record(a.commit_seconds);
            }
            Err(e) => self.failed(rows, &e.to_string()),
        }
    }

    /// Removes the `date` partitions older than `retention_days` from the table and its labels
    /// table (one Delta delete each, only when there are some).
    fn apply_retention(&mut self) {
        let Some(days) = self.options.retention_days else { return };
        let first_kept = super::first_kept_date(super::now_us(), days);
        for t in std::iter::once(&mut self.table).chain(self.labels.as_mut()) {
            match t.with_table(async |t| t.remove_partitions_before("date", &first_kept).await) {
                Ok(r) if r.files_removed > 0 => tracing::info!(
                    table = %t.location(), first_kept, files = r.files_removed, rows = ?r.rows_removed, version = r.version,
                    "retention: removed the partitions before {first_kept}"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(table = %t.location(), "retention: cannot remove old partitions (next try in an hour): {e}")
                }
            }
        }
    }

    /// Counts `rows` dropped by a failed write; logs at most once a second.
    fn failed(&mut self, rows: u64, e: &str) {
        self.metrics.write_errors.increment(1);
        self.metrics.dropped_write_error.increment(rows);
        let now = Instant::now();
        if self.last_error_log.is_none_or(|t| now.duration_since(t).as_secs() >= 1) {
            self.last_error_log = Some(now);
            tracing::error!(table = %self.options.table, location = %self.table.location(), "cannot write inference log ({rows} rows dropped): {e}");
        }
    }
}

/// `schema` with the `date` partition column (`YYYY-MM-DD`) last.
pub(crate) fn with_date_field(schema: &Schema) -> Arc<Schema> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("date", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// `batch` with a `date` column holding `date` on every row.
pub(crate) fn add_date(batch: &RecordBatch, date: &str) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let mut cols = batch.columns().to_vec();
    cols.push(Arc::new(StringArray::from(vec![date; batch.num_rows()])));
    RecordBatch::try_new(with_date_field(batch.schema_ref()), cols)
}
