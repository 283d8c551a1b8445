//! One Delta table appended from a thread of its own (the inference, labels and monitor
//! writers): opens or creates the table on first use, and appends each flush as one commit,
//! retrying what can succeed later (object storage down, slow, answering 5xx; a commit race)
//! with backoff for as long as the caller wants to keep trying. Files uploaded for a flush are
//! committed again rather than rewritten, and a commit whose answer was lost is recognised by
//! its transaction id, so a retry never appends rows twice.

use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use sluice_tables::{Location, Staged, Table, TableError, TableSpec};

/// First wait after a failed append; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What one append committed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Appended {
    pub version: u64,
    pub files: usize,
    pub bytes: u64,
    /// Tries it took (1: no retry).
    pub tries: u32,
    pub commit_seconds: f64,
}

/// A table written from one thread.
pub struct TableWriter {
    rt: tokio::runtime::Runtime,
    location: Location,
    spec: TableSpec,
    table: Option<Table>,
    last_error_log: Option<Instant>,
    /// Counts each retried append as it happens (not only once it succeeds).
    retries: Option<metrics::Counter>,
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter").field("location", &self.location.to_string()).finish()
    }
}

impl TableWriter {
    /// A writer for the table at `location` (created with `spec` if absent, on first append).
    pub fn new(location: Location, spec: TableSpec) -> std::io::Result<TableWriter> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(TableWriter { rt, location, spec, table: None, last_error_log: None, retries: None })
    }

    /// Counts every retry of an append in `counter`, when it is decided.
    pub fn count_retries(mut self, counter: metrics::Counter) -> TableWriter {
        self.retries = Some(counter);
        self
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Appends `batches` as one commit. A failure that can pass is retried with backoff while
    /// `keep_trying()` says so; the last error is returned otherwise (permanent errors at once).
    pub fn append(&mut self, batches: &[RecordBatch], keep_trying: impl Fn() -> bool) -> Result<Appended, TableError> {
        let mut staged: Option<Staged> = None;
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0u32;
        loop {
            tries += 1;
            let started = Instant::now();
            let res = self.rt.block_on(try_append(&self.location, &self.spec, &mut self.table, &mut staged, batches));
            match res {
                Ok(version) => {
                    let (files, bytes) = staged.as_ref().map(|s| (s.files(), s.bytes)).unwrap_or((0, 0));
                    return Ok(Appended {
                        version,
                        files,
                        bytes,
                        tries,
                        commit_seconds: started.elapsed().as_secs_f64(),
                    });
                }
                Err(e) if e.is_permanent() || !keep_trying() => return Err(e),
                Err(e) => {
                    if let Some(c) = &self.retries {
                        c.increment(1);
                    }
                    let now = Instant::now();
                    if self.last_error_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                        self.last_error_log = Some(now);
                        tracing::warn!(table = %self.location, tries, "table append failed, retrying in {backoff:?}: {e}");
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Runs `f` on the open table (opening it first), on this writer's runtime.
    pub fn with_table<T>(&mut self, f: impl AsyncFnOnce(&mut Table) -> Result<T, TableError>) -> Result<T, TableError> {
        self.rt.block_on(async {
            if self.table.is_none() {
                self.table = Some(Table::open_or_create(&self.location, &self.spec).await?);
            }
            match self.table.as_mut() {
                Some(t) => f(t).await,
                None => Err(TableError::NotATable { location: self.location.to_string() }),
            }
        })
    }
}

async fn try_append(
    location: &Location,
    spec: &TableSpec,
    table: &mut Option<Table>,
    staged: &mut Option<Staged>,
    batches: &[RecordBatch],
) -> Result<u64, TableError> {
    if table.is_none() {
        *table = Some(Table::open_or_create(location, spec).await?);
    }
    let Some(t) = table.as_mut() else {
        return Err(TableError::NotATable { location: location.to_string() });
    };
    if staged.is_none() {
        *staged = Some(t.stage(batches).await?);
    }
    match staged.as_mut() {
        Some(s) => t.commit(s).await,
        None => Err(TableError::NotATable { location: location.to_string() }),
    }
}
