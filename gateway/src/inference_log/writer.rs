//! The writer thread of one table: buffers records, and at least every `flush_interval` (or at
//! `max_file_rows`) writes them as zstd Parquet files, one per date partition, each published
//! atomically (hidden temporary name, fsync, rename; see [`crate::durable`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use super::{InferenceRecord, LogError, Queued, TableLayout, TableMetrics, TableOptions, columns, partition_of};
use crate::budget::Reserved;

/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 64 * 1024;

static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

pub(super) struct Writer {
    options: TableOptions,
    layout: TableLayout,
    metrics: TableMetrics,
    last_error_log: Option<Instant>,
}

impl Writer {
    pub fn new(options: TableOptions, layout: TableLayout, metrics: TableMetrics) -> Writer {
        Writer { options, layout, metrics, last_error_log: None }
    }

    /// Runs until every sender is gone, then writes what is left. The budget bytes of buffered
    /// records are held until they are written; at half the budget the buffer is written
    /// early, so the queue always has room to fill while a file is being written.
    pub fn run(mut self, rx: flume::Receiver<Queued>) {
        let mut buffer: Vec<InferenceRecord> = Vec::new();
        let mut held: Vec<Reserved> = Vec::new();
        let mut held_bytes = 0usize;
        let early = (self.options.queue_max_bytes / 2).max(1);
        let mut rows = 0usize;
        let mut deadline = Instant::now() + self.options.flush_interval;
        loop {
            match rx.recv_deadline(deadline) {
                Ok(Queued { record, held: h }) => {
                    rows += record.rows.max(1);
                    held_bytes += h.bytes();
                    buffer.push(record);
                    held.push(h);
                    if rows >= self.options.max_file_rows || held_bytes >= early {
                        self.flush(&mut buffer);
                        held.clear();
                        (rows, held_bytes) = (0, 0);
                    }
                }
                Err(flume::RecvTimeoutError::Timeout) => {
                    self.flush(&mut buffer);
                    held.clear();
                    (rows, held_bytes) = (0, 0);
                    deadline = Instant::now() + self.options.flush_interval;
                }
                Err(flume::RecvTimeoutError::Disconnected) => {
                    self.flush(&mut buffer);
                    return;
                }
            }
        }
    }

    /// Writes the buffered records (one file per date partition) and empties the buffer.
    fn flush(&mut self, buffer: &mut Vec<InferenceRecord>) {
        if buffer.is_empty() {
            return;
        }
        let mut by_date: BTreeMap<String, Vec<InferenceRecord>> = BTreeMap::new();
        for rec in buffer.drain(..) {
            by_date.entry(partition_of(rec.timestamp_us)).or_default().push(rec);
        }
        for (partition, recs) in by_date {
            let rows: u64 = recs.iter().map(|r| r.rows.max(1) as u64).sum();
            let dir = self.options.dir.join(&partition);
            match write_file(&dir, &self.layout, &recs) {
                Ok(bytes) => {
                    self.metrics.rows_written.increment(rows);
                    self.metrics.files.increment(1);
                    self.metrics.bytes.increment(bytes);
                }
                Err(e) => {
                    self.metrics.write_errors.increment(1);
                    self.metrics.dropped_write_error.increment(rows);
                    let now = Instant::now();
                    if self.last_error_log.is_none_or(|t| now.duration_since(t).as_secs() >= 1) {
                        self.last_error_log = Some(now);
                        tracing::error!(table = %self.options.table, dir = %dir.display(), "cannot write inference log ({rows} rows dropped): {e}");
                    }
                }
            }
        }
    }
}

/// Writes one Parquet file into `dir` under a hidden name, then renames it into place.
/// Returns the file's size.
pub(super) fn write_file(dir: &Path, layout: &TableLayout, recs: &[InferenceRecord]) -> Result<u64, LogError> {
    let batch = columns::batch(layout, recs).map_err(LogError::Columns)?;
    write_batch(dir, &batch)
}

/// Writes a record batch as a new part file in `dir`, atomically and durably
/// ([`crate::durable`]). Returns the file's size.
pub(crate) fn write_batch(dir: &Path, batch: &datafusion::arrow::record_batch::RecordBatch) -> Result<u64, LogError> {
    let dst = dir.join(part_name());
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    crate::durable::write_atomic_with(&dst, |file| {
        let mut w = ArrowWriter::try_new(&mut *file, batch.schema(), Some(props)).map_err(std::io::Error::other)?;
        w.write(batch).map_err(std::io::Error::other)?;
        w.close().map_err(std::io::Error::other)?;
        Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
    })
    .map_err(|source| LogError::Write { path: dst.clone(), source })
}

/// `part-<unix micros>-<pid>-<seq>.parquet`: unique per process, sortable by time.
fn part_name() -> String {
    let us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    format!("part-{us:016}-{}-{:06}.parquet", std::process::id(), FILE_SEQ.fetch_add(1, Ordering::Relaxed))
}
