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
    pub fn run(mut self, rx: flume::Receiver<Queued>) {
        let mut buffer: Vec<InferenceRecord> = Vec::new();
        let mut held: Vec<crate::budget::Reserved> = Vec::new();
        let mut held_bytes = 0usize;
        let early = (self.options.queue_max_bytes / 2).max(1);
        let mut rows = 0usize;
        let mut deadline = Instant::now() + self.options.flush_interval;
        let mut next_retention = Instant::now();
        loop {
            if Instant::now() >= next_retention {
                self.apply_retention();
                next_retention = Instant::now() + RETENTION_EVERY;
            }
            match rx.recv_deadline(deadline) {
                Ok(Queued { record, held: h }) => {
                    rows += record.rows.max(1);
                    held_bytes += h.bytes();
                    buffer.push(record);
                    held.push(h);
                    if rows >= self.options.max_file_rows || held_bytes >= early {
                        self.flush(&mut buffer, None);
                        held.clear();
                        (rows, held_bytes) = (0, 0);
                    }
                }
                Err(flume::RecvTimeoutError::Timeout) => {
                    self.flush(&mut buffer, None);
                    held.clear();
                    (rows, held_bytes) = (0, 0);
                    deadline = Instant::now() + self.options.flush_interval;
                }
                Err(flume::RecvTimeoutError::Disconnected) => {
                    self.flush(&mut buffer, Some(Instant::now() + CLOSE_RETRY));
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
