//! One Delta table: open or create it, append record batches as one commit each, and list the
//! data files of its current version.
//!
//! Appends are written in two steps so that a failed commit never rewrites data: [`Table::stage`]
//! uploads the Parquet files (names carry a random UUID, so they are unique across processes
//! and hosts) and returns their `add` actions; [`Table::commit`] commits them, carrying an
//! application transaction (`txn`: this writer's id and a sequence number). A commit whose answer
//! was lost (a timeout after the object store took the write) is detected on the next try by
//! that `txn`, so a retried commit never appends the same rows twice. Concurrent appenders need
//! no lock: each commit is a conditional create of the next log entry, and delta-rs retries a
//! lost race against appends; a race lost against a delete or a schema change reloads the table
//! and commits the same files again.

use std::collections::HashMap;
use std::sync::Arc;

use buoyant_kernel::expressions::Scalar;
use deltalake_core::arrow::array::{Array, RecordBatch, new_null_array};
use deltalake_core::arrow::compute::cast;
use deltalake_core::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake_core::kernel::{Action, Add, LogicalFileView, StructField, StructType, Transaction};
use deltalake_core::parquet::basic::{Compression, ZstdLevel};
use deltalake_core::parquet::file::properties::WriterProperties;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::writer::{DeltaWriter as _, RecordBatchWriter};
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError, TableProperty};

use crate::{Location, TableError};

/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// How many times a commit that lost a race to a delete or a schema change is retried (each
/// after reloading the table) before the error goes back to the caller.
const CONFLICT_RETRIES: usize = 8;

/// What a new table looks like.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// The Arrow schema of the rows, partition columns included (as `Utf8`).
    pub schema: SchemaRef,
    pub partition_by: Vec<String>,
    /// A checkpoint every this many commits (`delta.checkpointInterval`).
    pub checkpoint_interval: u32,
}

/// An open Delta table.
pub struct Table {
    location: Location,
    inner: DeltaTable,
    /// This process's id for the table's `txn` actions.
    writer_id: String,
    seq: i64,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("location", &self.location.to_string()).field("version", &self.version()).finish()
    }
}

/// Files uploaded for one append, not yet committed.
#[derive(Debug, Clone)]
pub struct Staged {
    adds: Vec<Add>,
    txn: Transaction,
    /// A commit of these files was tried and its outcome is unknown.
    pub(crate) tried: bool,
    pub rows: u64,
    pub bytes: u64,
}

impl Staged {
    pub fn files(&self) -> usize {
        self.adds.len()
    }

    /// Adds `other`'s files to these, to be committed together (under this one's transaction).
    pub fn merge(&mut self, other: Staged) {
        self.adds.extend(other.adds);
        self.rows += other.rows;
        self.bytes += other.bytes;
    }
}

/// One data file of a table's version.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    /// Relative to the table's root, as the log writes it (`date=2026-12-05/part-...parquet`).
    pub path: String,
    pub size: i64,
    /// When the file was written (ms since the epoch, as its add action says).
    pub modified: i64,
    pub rows: Option<usize>,
    pub partition: HashMap<String, Option<String>>,
    /// Smallest and largest value of each Long or Timestamp column with statistics; a field of
    /// a struct column by its dotted path (`window.start`).
    pub min: HashMap<String, i64>,
    pub max: HashMap<String, i64>,
    /// The same for String columns.
    pub min_text: HashMap<String, String>,
    pub max_text: HashMap<String, String>,
}

impl DataFile {
    fn of(f: &LogicalFileView) -> DataFile {
        let (min, min_text) = stats(f.min_values());
        let (max, max_text) = stats(f.max_values());
        DataFile {
            path: f.path().into_owned(),
            size: f.size(),
            modified: f.modification_time(),
            rows: f.num_records(),
            partition: f.partition_values_map(),
            min,
            max,
            min_text,
            max_text,
        }
    }

    /// Whether every row of the file has `value` in String column `column` (by its statistics).
    pub fn all_text(&self, column: &str, value: &str) -> bool {
        self.min_text.get(column).is_some_and(|v| v == value) && self.max_text.get(column).is_some_and(|v| v == value)
    }

    /// Whether every row of the file has the timestamp `micros` in column `column`, to the
    /// millisecond: Delta keeps timestamp statistics in milliseconds, the minimum truncated and
    /// the maximum rounded up (delta-rs writes a whole-millisecond maximum `v` as `v + 1 ms`).
    pub fn all_time(&self, column: &str, micros: i64) -> bool {
        let ms = micros - micros.rem_euclid(1000);
        self.min.get(column) == Some(&ms) && self.max.get(column).is_some_and(|&m| m >= ms && m <= ms + 1000)
    }
}

/// Picks the data files a [`Table::replace`] removes.
pub type Selector = dyn Fn(&DataFile) -> bool + Sync;

/// Who writes, as every commit's `commitInfo` says (`"sluiceReplica"`): set once per process
/// ([`set_writer_name`]; the gateway sets its replica id), so a table's history shows which
/// replica wrote each version.
static WRITER_NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process in the `commitInfo` of every commit it writes from now on (the first
/// name set stays).
pub fn set_writer_name(name: &str) {
    let _ = WRITER_NAME.set(name.to_string());
}

/// The commit properties of every commit: `commitInfo` names the writer when one is set.
pub(crate) fn commit_properties() -> CommitProperties {
    match WRITER_NAME.get() {
        Some(name) => CommitProperties::default()
            .with_metadata([("sluiceReplica".to_string(), serde_json::Value::String(name.clone()))]),
        None => CommitProperties::default(),
    }
}

impl Table {
    /// Opens an existing table (readers). A local directory of plain Parquet files without a
    /// log is reported as such, with the conversion command.
    pub async fn open(location: &Location) -> Result<Table, TableError> {
        if let Some(p) = location.local_path()
            && !p.join("_delta_log").is_dir()
        {
            return Err(if has_parquet(p) {
                TableError::PlainParquet { location: location.to_string() }
            } else {
                TableError::NotATable { location: location.to_string() }
            });
        }
        let inner = builder(location)?.load().await.map_err(|e| match e {
            DeltaTableError::NotATable(_) => TableError::NotATable { location: location.to_string() },
            source => TableError::Delta { location: location.to_string(), source: Box::new(source) },
        })?;
        Ok(Table::wrap(location, inner))
    }

    /// Opens the table, or creates it with `spec` when there is none (two processes creating it
    /// at once: one creates, the other opens what it created).
    pub async fn open_or_create(location: &Location, spec: &TableSpec) -> Result<Table, TableError> {
        match Table::open(location).await {
            Err(TableError::NotATable { .. }) => {}
            other => return other,
        }
        let derr = |source| TableError::Delta { location: location.to_string(), source: Box::new(source) };
        let schema: StructType = spec.schema.as_ref().try_into_kernel().map_err(|e| derr(e.into()))?;
        let table = builder(location)?.build().map_err(derr)?;
        let created = table
            .create()
            .with_columns(schema.fields().cloned())
            .with_partition_columns(spec.partition_by.clone())
            .with_save_mode(SaveMode::Ignore)
            .with_configuration_property(TableProperty::CheckpointInterval, Some(spec.checkpoint_interval.to_string()))
            // a lost create race must not commit a second protocol and metadata as version 1
            .with_commit_properties(commit_properties().with_max_retries(0))
            .await;
        match created {
            Ok(inner) => Ok(Table::wrap(location, inner)),
            Err(_) => Table::open(location).await,
        }
    }

    fn wrap(location: &Location, inner: DeltaTable) -> Table {
        Table { location: location.clone(), inner, writer_id: uuid::Uuid::new_v4().to_string(), seq: 0 }
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The loaded version.
    pub fn version(&self) -> Option<u64> {
        self.inner.version()
    }

    pub fn delta(&self) -> &DeltaTable {
        &self.inner
    }

    /// Copies a data file of the table (`path` as [`DataFile::path`] gives it) into the local
    /// file `dest`, chunk by chunk as it arrives (never the whole file in memory). Answers the
    /// bytes written.
    pub async fn download(&self, path: &str, dest: &std::path::Path) -> Result<u64, TableError> {
        use futures::StreamExt as _;
        use object_store::ObjectStoreExt as _;
        use std::io::Write as _;
        let store = self.inner.log_store().object_store(None);
        let p = object_store::path::Path::parse(path)
            .map_err(|e| TableError::Location { location: format!("{}/{path}", self.location), why: e.to_string() })?;
        let io = |e: std::io::Error| TableError::Location { location: dest.display().to_string(), why: e.to_string() };
        let mut stream = store.get(&p).await.map_err(|e| self.derr(e.into()))?.into_stream();
        let mut out = std::io::BufWriter::new(std::fs::File::create(dest).map_err(io)?);
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.derr(e.into()))?;
            out.write_all(&chunk).map_err(io)?;
            n += chunk.len() as u64;
        }
        out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
        Ok(n)
    }

    pub(crate) fn delta_mut(&mut self) -> &mut DeltaTable {
        &mut self.inner
    }

    pub(crate) fn derr(&self, source: DeltaTableError) -> TableError {
        TableError::Delta { location: self.location.to_string(), source: Box::new(source) }
    }

    /// Loads what other writers committed since the loaded version.
    pub async fn refresh(&mut self) -> Result<(), TableError> {
        self.inner.update_incremental(None).await.map_err(|e| self.derr(e))
    }

    /// The table's schema as Arrow (partition columns included).
    pub fn arrow_schema(&self) -> Result<SchemaRef, TableError> {
        Ok(self.inner.snapshot().map_err(|e| self.derr(e))?.snapshot().arrow_schema())
    }

    /// The data files of the loaded version.
    pub fn files(&self) -> Result<Vec<DataFile>, TableError> {
        let snap = self.inner.snapshot().map_err(|e| self.derr(e))?;
        Ok(snap.log_data().iter().map(|f| DataFile::of(&f)).collect())
    }

    /// Uploads `batches` as Parquet files of the table (not yet visible to readers). Columns the
    /// table lacks are added first (nullable, one `ADD COLUMNS` commit: schema evolution);
    /// columns the rows lack are written as NULL; a column whose type changed is refused.
    pub async fn stage(&mut self, batches: &[RecordBatch]) -> Result<Staged, TableError> {
        let Some(first) = batches.first() else {
            return Ok(self.staged(Vec::new(), 0));
        };
        self.evolve(first.schema_ref()).await?;
        let table_schema = self.arrow_schema()?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| self.derr(e.into()))?))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let mut w = RecordBatchWriter::for_table(&self.inner).map_err(|e| self.derr(e))?.with_writer_properties(props);
        let mut rows = 0u64;
        for b in batches {
            rows += b.num_rows() as u64;
            let b = self.conform(b, &table_schema)?;
            w.write(b).await.map_err(|e| self.derr(e))?;
        }
        let adds = w.flush().await.map_err(|e| self.derr(e))?;
        Ok(self.staged(adds, rows))
    }

    fn staged(&mut self, adds: Vec<Add>, rows: u64) -> Staged {
        self.seq += 1;
        let bytes = adds.iter().map(|a| a.size.max(0) as u64).sum();
        Staged { adds, txn: Transaction::new(&self.writer_id, self.seq), tried: false, rows, bytes }
    }

    /// Commits staged files as one append. Safe to call again with the same `staged` after an
    /// error: if an earlier try did land, nothing is committed twice. Returns the version.
    pub async fn commit(&mut self, staged: &mut Staged) -> Result<u64, TableError> {
        if staged.adds.is_empty() {
            return Ok(self.version().unwrap_or(0));
        }
        self.commit_with(staged, None).await
    }

    /// Commits staged files in place of the files of the loaded version that `replaced` picks,
    /// in one commit: an overwrite whose `predicate` (a SQL condition over the table's columns
    /// that holds for exactly the replaced rows, as Spark's `replaceWhere`) is written to the
    /// log. Readers see the old rows or the new ones, never both or neither. Retried as
    /// [`Table::commit`]; a concurrent append of rows matching `predicate` is a conflict (the
    /// table is reloaded and the files to remove picked again).
    pub async fn replace(
        &mut self,
        staged: &mut Staged,
        predicate: &str,
        replaced: &Selector,
    ) -> Result<u64, TableError> {
        self.commit_with(staged, Some((predicate, replaced))).await
    }

    async fn commit_with(
        &mut self,
        staged: &mut Staged,
        replacing: Option<(&str, &Selector)>,
    ) -> Result<u64, TableError> {
        if staged.tried {
            self.refresh().await?;
            if self.landed(&staged.txn).await? {
                return Ok(self.version().unwrap_or(0));
            }
        }
        let mut conflicts = 0;
        loop {
            let snapshot = self.inner.snapshot().map_err(|e| self.derr(e))?;
            let mut actions: Vec<Action> = staged.adds.iter().cloned().map(Action::Add).collect();
            let op = match replacing {
                None => DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by: partition_columns(&self.inner),
                    predicate: None,
                },
                Some((predicate, replaced)) => {
                    let log = snapshot.log_data();
                    let removes = log.iter().filter(|f| replaced(&DataFile::of(f)));
                    actions.extend(removes.map(|f| Action::Remove(f.remove_action(true))));
                    DeltaOperation::Write {
                        mode: SaveMode::Overwrite,
                        partition_by: partition_columns(&self.inner),
                        predicate: Some(predicate.to_string()),
                    }
                }
            };
            if actions.is_empty() {
                return Ok(self.version().unwrap_or(0));
            }
            staged.tried = true;
            let props = commit_properties()
                .with_application_transaction(staged.txn.clone())
                // log cleanup lists `_delta_log` after each commit: `sluice table vacuum` does it
                .with_cleanup_expired_logs(Some(false));
            let done = CommitBuilder::from(props)
                .with_actions(actions)
                .build(Some(snapshot), self.inner.log_store(), op)
                .await;
            match done {
                Ok(done) => {
                    let v = done.version();
                    self.inner.state = Some(done.snapshot());
                    return Ok(v);
                }
                Err(DeltaTableError::Transaction { source: TransactionError::CommitConflict(c) })
                    if conflicts < CONFLICT_RETRIES =>
                {
                    conflicts += 1;
                    tracing::debug!(table = %self.location, "commit conflicted ({c}); reloading and committing again");
                    self.refresh().await?;
                    if self.landed(&staged.txn).await? {
                        return Ok(self.version().unwrap_or(0));
                    }
                }
                Err(e) => return Err(self.derr(e)),
            }
        }
    }

    /// Stages and commits `batches` (tests and one-shot tools; the writers retry the two steps
    /// themselves).
    pub async fn append(&mut self, batches: &[RecordBatch]) -> Result<u64, TableError> {
        let mut staged = self.stage(batches).await?;
        self.commit(&mut staged).await
    }

    async fn landed(&self, txn: &Transaction) -> Result<bool, TableError> {
        let snap = self.inner.snapshot().map_err(|e| self.derr(e))?;
        let v =
            snap.transaction_version(self.inner.log_store().as_ref(), &txn.app_id).await.map_err(|e| self.derr(e))?;
        Ok(v.is_some_and(|v| v >= txn.version))
    }

    /// Adds the columns of `schema` the table lacks (nullable); refuses a changed type.
    async fn evolve(&mut self, schema: &SchemaRef) -> Result<(), TableError> {
        let table_schema = self.arrow_schema()?;
        let mut new = Vec::new();
        for f in schema.fields() {
            match table_schema.field_with_name(f.name()) {
                Ok(t) if !same_type(t.data_type(), f.data_type()) => {
                    return Err(TableError::SchemaConflict {
                        location: self.location.to_string(),
                        column: f.name().clone(),
                        expected: t.data_type().to_string(),
                        found: f.data_type().to_string(),
                    });
                }
                Ok(_) => {}
                Err(_) => new.push(f.as_ref().clone().with_nullable(true)),
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let fields: Vec<StructField> =
            new.iter().map(|f| f.try_into_kernel()).collect::<Result<_, _>>().map_err(|e| self.derr(e.into()))?;
        tracing::info!(table = %self.location, columns = ?new.iter().map(|f| f.name()).collect::<Vec<_>>(), "adding columns to the table");
        let log = self.inner.log_store();
        let t = std::mem::replace(&mut self.inner, DeltaTable::new(log));
        match t.add_columns().with_fields(fields).await {
            Ok(t) => self.inner = t,
            Err(e) => {
                // another writer may have added them first
                self.inner = builder(&self.location)?.load().await.map_err(|e| self.derr(e))?;
                let now = self.arrow_schema()?;
                if new.iter().any(|f| now.field_with_name(f.name()).is_err()) {
                    return Err(self.derr(e));
                }
            }
        }
        Ok(())
    }

    /// The batch with the table's columns in the table's order and types: missing nullable
    /// columns as NULL; same-type columns whose Arrow nesting names differ (a map's `entries`
    /// vs Delta's `key_value`, a list's `item` vs `element`) cast to the table's.
    fn conform(&self, b: &RecordBatch, table: &Schema) -> Result<RecordBatch, TableError> {
        let aerr = |source| TableError::Arrow { location: self.location.to_string(), source: Box::new(source) };
        if b.schema().fields() == table.fields() {
            return Ok(b.clone());
        }
        let mut cols: Vec<Arc<dyn Array>> = Vec::new();
        let mut fields: Vec<Field> = Vec::new();
        for t in table.fields() {
            match b.schema().index_of(t.name()) {
                Ok(i) => {
                    let c = b.column(i);
                    let c = if c.data_type() == t.data_type() {
                        c.clone()
                    } else {
                        cast(c, t.data_type()).map_err(aerr)?
                    };
                    cols.push(c);
                    fields.push(t.as_ref().clone().with_nullable(t.is_nullable() || b.schema().field(i).is_nullable()));
                }
                Err(_) => {
                    cols.push(new_null_array(t.data_type(), b.num_rows()));
                    fields.push(t.as_ref().clone().with_nullable(true));
                }
            }
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(aerr)
    }
}

/// A builder for the table at `location`, with its storage options.
pub(crate) fn builder(location: &Location) -> Result<DeltaTableBuilder, TableError> {
    let url = location.url()?;
    DeltaTableBuilder::from_url(url)
        .map(|b| b.with_storage_options(location.storage_options()))
        .map_err(|source| TableError::Delta { location: location.to_string(), source: Box::new(source) })
}

fn partition_columns(t: &DeltaTable) -> Option<Vec<String>> {
    t.snapshot().ok().map(|s| s.metadata().partition_columns().to_vec())
}

fn has_parquet(dir: &std::path::Path) -> bool {
    crate::files_under(dir).iter().any(|p| p.extension().is_some_and(|x| x == "parquet"))
}

/// Whether two Arrow types are the same Delta type (Delta has one string, one binary, and names
/// map and list fields its own way).
fn same_type(a: &DataType, b: &DataType) -> bool {
    use DataType::*;
    match (a, b) {
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (List(x) | LargeList(x) | ListView(x), List(y) | LargeList(y) | ListView(y)) => {
            same_type(x.data_type(), y.data_type())
        }
        (Map(x, _), Map(y, _)) => same_type(x.data_type(), y.data_type()),
        (Struct(x), Struct(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| same_type(p.data_type(), q.data_type()))
        }
        (Timestamp(u, _), Timestamp(v, _)) => u == v,
        _ => a == b,
    }
}

/// The Long and Timestamp values and the String values of a stats struct, by column name (fields
/// of struct columns by dotted path).
fn stats(s: Option<Scalar>) -> (HashMap<String, i64>, HashMap<String, String>) {
    fn walk(prefix: &str, s: &Scalar, longs: &mut HashMap<String, i64>, texts: &mut HashMap<String, String>) {
        let Scalar::Struct(data) = s else { return };
        for (f, v) in data.fields().iter().zip(data.values()) {
            let name = if prefix.is_empty() { f.name().to_string() } else { format!("{prefix}.{}", f.name()) };
            match v {
                Scalar::Long(x) | Scalar::Timestamp(x) | Scalar::TimestampNtz(x) => {
                    longs.insert(name, *x);
                }
                Scalar::String(x) => {
                    texts.insert(name, x.clone());
                }
                Scalar::Struct(_) => walk(&name, v, longs, texts),
                _ => {}
            }
        }
    }
    let (mut longs, mut texts) = (HashMap::new(), HashMap::new());
    if let Some(s) = s {
        walk("", &s, &mut longs, &mut texts);
    }
    (longs, texts)
}
