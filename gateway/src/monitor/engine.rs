//! One monitor over one inference table: incremental refresh.
//!
//! A refresh lists the table's files, reads the Parquet footers of the files it has not seen
//! (timestamp range, row count), and works out per granularity which windows those files (and
//! new label files) touch. It re-reads only the files overlapping those windows (plus the window
//! before each, for consecutive drift), in time-ordered chunks of about [`CHUNK_ROWS`] rows,
//! streaming record batches through DataFusion (one partition, so the row order and every float
//! sum are reproducible) into bounded accumulators. Each recomputed window's profile and drift
//! rows replace that window's files. The list of files seen is persisted after the outputs, so a
//! restart resumes where the last refresh ended, and a crash in between only repeats work.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::accum::{ColAcc, GroupAcc};
use super::output;
use super::rows::{self, DriftRow, ProfileRow, RowKey};
use super::spec::{CustomKind, Granularity, MonitorSpec, ProblemType};
use crate::inference_log::now_us;

/// Rows read per chunk of windows (an estimate from file footers).
const CHUNK_ROWS: u64 = 2_000_000;
/// Slices per slicing expression and window (by row count, ties by value).
const MAX_SLICE_VALUES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(String),
    #[error("query failed: {0}")]
    Query(String),
}

fn qerr(e: impl std::fmt::Display) -> MonitorError {
    MonitorError::Query(crate::analysis::explain(e))
}

fn ioerr(what: &str, path: &Path, e: impl std::fmt::Display) -> MonitorError {
    MonitorError::Io(format!("{what} {}: {e}", path.display()))
}

/// What the monitor knows about one data file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    pub size: u64,
    pub rows: u64,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// Alert state, persisted so that a restart neither repeats nor loses a notification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub firing: bool,
    /// Last value seen and the window it belongs to.
    pub value: Option<f64>,
    pub window_start: Option<i64>,
    pub since_us: Option<i64>,
    pub notifications_sent: u64,
    pub notifications_failed: u64,
}

/// Persisted state (`<out>/<table>_monitor_state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Spec and column set the outputs were computed with; a change recomputes everything.
    pub fingerprint: String,
    pub files: BTreeMap<String, FileInfo>,
    pub label_files: BTreeMap<String, u64>,
    pub refreshes: u64,
    pub last_refresh_us: Option<i64>,
    pub alerts: BTreeMap<String, AlertState>,
}

/// What a refresh did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RefreshReport {
    pub new_files: usize,
    pub new_label_files: usize,
    pub removed_files: usize,
    pub windows_recomputed: usize,
    pub rows_read: u64,
    pub profile_rows: usize,
    pub drift_rows: usize,
    pub duration_ms: f64,
    /// Drift rows of the newest window recomputed, per granularity (for gauges and the API).
    #[serde(skip)]
    pub latest_drift: Vec<DriftRow>,
    #[serde(skip)]
    pub latest_profile: Vec<ProfileRow>,
}

/// The monitored columns and how to read them.
#[derive(Debug, Clone)]
struct Layout {
    names: Vec<String>,
    numeric: Vec<bool>,
    has_proba: bool,
    view_schema: SchemaRef,
}

pub struct Monitor {
    pub spec: MonitorSpec,
    pub table: String,
    table_dir: PathBuf,
    labels_dir: Option<PathBuf>,
    pub out_dir: PathBuf,
    state: State,
    baseline: Option<(String, Arc<BaselineGroups>)>,
}

/// The baseline's accumulators: whole (`None`) and per slice.
#[derive(Debug, Default)]
struct BaselineGroups {
    groups: HashMap<Option<(usize, Arc<str>)>, GroupAcc>,
    /// Slice expressions that cannot be evaluated on the baseline (compare with the whole).
    unsliced: Vec<bool>,
    profile: HashMap<Option<(usize, Arc<str>)>, Vec<ProfileRow>>,
}

fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

use crate::inference_log::read::check::{SkipReason, report_skip};
use crate::inference_log::read::usable_files;

/// Timestamp range and row count from a Parquet footer (statistics of `ts_col`), or why the
/// file cannot be placed in time.
fn file_info(path: &Path, ts_col: &str) -> Result<FileInfo, (SkipReason, String)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::statistics::Statistics;
    let unreadable = |what: &str, e: &dyn std::fmt::Display| (SkipReason::Unreadable, format!("{what}: {e}"));
    let file = std::fs::File::open(path).map_err(|e| unreadable("cannot open", &e))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let reader = SerializedFileReader::new(file).map_err(|e| unreadable("cannot read", &e))?;
    let meta = reader.metadata();
    let schema = meta.file_metadata().schema_descr();
    let idx = (0..schema.num_columns()).find(|&i| schema.column(i).name() == ts_col);
    let (mut lo, mut hi, mut rows) = (i64::MAX, i64::MIN, 0u64);
    for rg in meta.row_groups() {
        rows += rg.num_rows().max(0) as u64;
        let stats = idx.and_then(|i| rg.column(i).statistics());
        match stats {
            Some(Statistics::Int64(s)) => {
                if let (Some(a), Some(b)) = (s.min_opt(), s.max_opt()) {
                    lo = lo.min(*a);
                    hi = hi.max(*b);
                }
            }
            _ if rg.num_rows() > 0 => {
                return Err((
                    SkipReason::NoTimestampStatistics,
                    format!("no INT64 timestamp statistics for column '{ts_col}'"),
                ));
            }
            _ => {}
        }
    }
    if lo > hi {
        (lo, hi) = (0, -1);
    }
    Ok(FileInfo { size, rows, min_ts: lo, max_ts: hi })
}

use crate::inference_log::read::new_ctx;

async fn register_files(ctx: &SessionContext, name: &str, files: &[PathBuf]) -> Result<(), MonitorError> {
    crate::inference_log::read::register_files(ctx, name, files).await.map_err(qerr)
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric()
}

fn is_stringish(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Boolean)
}

/// System columns of an inference table that are not profiled by default.
const SYSTEM_COLUMNS: &[&str] = &[
    "row_index",
    "latency_ms",
    "execution_ms",
    "queue_ms",
    "batch_size",
    "sampling_fraction",
    "status_code",
    "label_value",
];

impl Monitor {
    /// A monitor over `table_dir`, writing to `out_dir`; resumes from its state file if any.
    pub fn new(spec: MonitorSpec, table_dir: PathBuf, labels_dir: Option<PathBuf>, out_dir: PathBuf) -> Monitor {
        let table = table_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "table".into());
        let mut m = Monitor { spec, table, table_dir, labels_dir, out_dir, state: State::default(), baseline: None };
        // a torn state file falls back to its previous version (counted); none: recompute
        if let Some(s) = crate::durable::load_json::<State>(&m.state_path(), "monitor").into_option() {
            m.state = s;
        }
        m
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    pub fn state_path(&self) -> PathBuf {
        self.out_dir.join(format!("{}_monitor_state.json", self.table))
    }

    pub fn profile_dir(&self) -> PathBuf {
        self.out_dir.join(format!("{}_profile_metrics", self.table))
    }

    pub fn drift_dir(&self) -> PathBuf {
        self.out_dir.join(format!("{}_drift_metrics", self.table))
    }

    /// Writes the state durably, keeping the version it replaces as `<state>.prev`.
    pub fn save_state(&self) -> Result<(), MonitorError> {
        let path = self.state_path();
        crate::durable::save_json(&path, &self.state).map_err(|e| ioerr("cannot write", &path, e))
    }

    fn label_files(&self) -> Vec<PathBuf> {
        self.labels_dir.as_deref().map(usable_files).unwrap_or_default()
    }

    /// Names of the custom metrics of `kinds`, kind by kind (the order of `ProfileRow::custom`).
    fn custom_names(&self, kinds: &[CustomKind]) -> Vec<String> {
        kinds
            .iter()
            .flat_map(|k| self.spec.custom_metrics.iter().filter(move |c| c.kind == *k).map(|c| c.name.clone()))
            .collect()
    }

    /// Registers `t` (the given files), `labels` and the view `v` (table + latest label per row).
    async fn view(&self, ctx: &SessionContext, files: &[PathBuf], labels: &[PathBuf]) -> Result<(), MonitorError> {
        crate::inference_log::read::register_labelled(ctx, files, labels).await.map_err(qerr)
    }

    /// The monitored columns, checked against the view's schema.
    fn layout(&self, schema: SchemaRef, has_labels: bool) -> Result<Layout, MonitorError> {
        let s = &self.spec;
        let names: Vec<String> = match &s.columns {
            Some(c) => c.clone(),
            None => {
                let mut v: Vec<String> = schema
                    .fields()
                    .iter()
                    .filter(|f| matches!(f.data_type(), DataType::Float64 | DataType::Float32))
                    .map(|f| f.name().clone())
                    .filter(|n| !SYSTEM_COLUMNS.contains(&n.as_str()) && *n != s.prediction_col && *n != s.label_col)
                    .collect();
                if schema.field_with_name(&s.prediction_col).is_ok() {
                    v.push(s.prediction_col.clone());
                }
                if has_labels {
                    match s.problem_type {
                        ProblemType::Classification => v.push(s.label_col.clone()),
                        ProblemType::Regression => v.push("label_value".into()),
                    }
                }
                v
            }
        };
        let mut numeric = Vec::new();
        for n in &names {
            let f = schema.field_with_name(n).map_err(|_| {
                MonitorError::Config(format!(
                    "monitored column '{n}' is not in the table (columns: {})",
                    column_list(&schema)
                ))
            })?;
            let t = f.data_type();
            if is_numeric(t) {
                numeric.push(true);
            } else if is_stringish(t) {
                numeric.push(false);
            } else {
                return Err(MonitorError::Config(format!(
                    "column '{n}' has type {t}; only numeric and string columns can be monitored"
                )));
            }
        }
        for c in [&s.timestamp_col, &s.prediction_col] {
            if schema.field_with_name(c).is_err() {
                return Err(MonitorError::Config(format!(
                    "column '{c}' is not in the table (columns: {})",
                    column_list(&schema)
                )));
            }
        }
        let has_proba = s.problem_type == ProblemType::Classification
            && matches!(schema.field_with_name("probabilities").map(|f| f.data_type().clone()), Ok(DataType::Map(..)));
        Ok(Layout { names, numeric, has_proba, view_schema: schema })
    }

    fn fingerprint(&self, layout: &Layout) -> String {
        format!("v1|{:?}|{:?}", self.spec_for_fingerprint(), layout.names)
    }

    fn spec_for_fingerprint(&self) -> String {
        let s = &self.spec;
        format!(
            "{:?}|{:?}|{}|{}|{}|{}|{:?}|{}|{:?}|{}|{:?}",
            s.problem_type,
            s.granularities,
            s.timestamp_col,
            s.model_id_col,
            s.prediction_col,
            s.label_col,
            s.slicing_exprs,
            s.filter,
            s.baseline,
            s.max_exact_values,
            s.custom_metrics
        )
    }

    /// Without a configured problem type: classification when the prediction is a string.
    pub fn resolve_problem_type(&mut self, schema: &Schema) {
        if self.spec.infer_problem_type
            && let Ok(f) = schema.field_with_name(&self.spec.prediction_col)
        {
            self.spec.problem_type =
                if is_stringish(f.data_type()) { ProblemType::Classification } else { ProblemType::Regression };
        }
    }

    /// Plans every expression of the spec against the table's schema, so a bad expression is
    /// reported (naming it) before any work. `schema` is the inference table's (no labels).
    pub async fn check(&self, schema: SchemaRef) -> Result<(), MonitorError> {
        let ctx = new_ctx();
        let empty = MemTable::try_new(schema.clone(), vec![vec![]]).map_err(qerr)?;
        ctx.register_table("t", Arc::new(empty)).map_err(qerr)?;
        let has = |c: &str| schema.field_with_name(c).is_ok();
        let sql = if has("label") {
            "SELECT * FROM t".to_string()
        } else {
            "SELECT t.*, CAST(NULL AS VARCHAR) AS label, CAST(NULL AS DOUBLE) AS label_value FROM t".to_string()
        };
        let df = ctx.sql(&sql).await.map_err(qerr)?;
        let vschema = Arc::new(df.schema().as_arrow().clone());
        ctx.register_table("v", df.into_view()).map_err(qerr)?;
        // the monitored columns exist and have usable types
        self.layout(vschema, true)?;
        let plan = |sql: String, what: String| {
            let ctx = ctx.clone();
            async move {
                match ctx.sql(&sql).await {
                    Ok(df) => df
                        .create_physical_plan()
                        .await
                        .map(|_| ())
                        .map_err(|e| MonitorError::Config(format!("{what}: {e}"))),
                    Err(e) => Err(MonitorError::Config(format!("{what}: {e}"))),
                }
            }
        };
        let s = &self.spec;
        plan(
            format!("SELECT CAST(({}) AS VARCHAR) FROM v", s.model_id_col),
            format!("model_id_col '{}'", s.model_id_col),
        )
        .await?;
        plan(format!("SELECT * FROM v WHERE {}", s.filter), format!("filter '{}'", s.filter)).await?;
        for e in &s.slicing_exprs {
            plan(format!("SELECT CAST(({e}) AS VARCHAR) FROM v"), format!("slicing expression '{e}'")).await?;
        }
        for m in &s.custom_metrics {
            let what = format!("custom metric '{}'", m.name);
            match m.kind {
                CustomKind::Aggregate => {
                    // as the refresh runs it: grouped, so a non-aggregate expression is refused
                    let w = format!("(CAST({} AS BIGINT) / 1000000)", q(&s.timestamp_col));
                    for (expr, _) in self.aggregate_exprs(m) {
                        plan(format!("SELECT {w}, CAST(({expr}) AS DOUBLE) FROM v GROUP BY {w}"), what.clone()).await?;
                    }
                }
                CustomKind::Derived | CustomKind::Drift => {}
            }
        }
        // derived and drift metrics: plan over a one-row table of metric columns
        let metrics = super::custom::metric_schema(&self.custom_names(&[CustomKind::Aggregate]));
        let mctx = new_ctx();
        for n in ["m", "current_df", "base_df"] {
            let t = MemTable::try_new(metrics.clone(), vec![vec![]]).map_err(qerr)?;
            mctx.register_table(n, Arc::new(t)).map_err(qerr)?;
        }
        for m in &s.custom_metrics {
            let sql = match m.kind {
                CustomKind::Derived => format!("SELECT CAST(({}) AS DOUBLE) FROM m", m.definition),
                CustomKind::Drift => format!(
                    "SELECT CAST(({}) AS DOUBLE) FROM current_df, base_df",
                    super::custom::drift_sql(&m.definition)
                ),
                CustomKind::Aggregate => continue,
            };
            let what = format!("custom metric '{}'", m.name);
            let r = match mctx.sql(&sql).await {
                Ok(df) => df.create_physical_plan().await.map(|_| ()),
                Err(e) => Err(e),
            };
            r.map_err(|e| MonitorError::Config(format!("{what}: {e}")))?;
        }
        Ok(())
    }

    /// (SQL expression, column it belongs to; None = `:table`) for an aggregate metric.
    fn aggregate_exprs(&self, m: &super::spec::CustomMetric) -> Vec<(String, Option<String>)> {
        let fill = |col: Option<&str>| {
            let mut d = m.definition.replace("{{prediction_col}}", &q(&self.spec.prediction_col));
            d = d.replace("{{label_col}}", &q(&self.spec.label_col));
            if let Some(c) = col {
                d = d.replace("{{input_column}}", &q(c));
            }
            d
        };
        if m.input_columns.is_empty() {
            vec![(fill(None), None)]
        } else {
            m.input_columns.iter().map(|c| (fill(Some(c)), Some(c.clone()))).collect()
        }
    }

    /// One incremental refresh; see the module docs.
    pub async fn refresh(&mut self) -> Result<RefreshReport, MonitorError> {
        let started = Instant::now();
        let mut report = RefreshReport::default();
        let ts_col = self.spec.timestamp_col.clone();
        let mut files = usable_files(&self.table_dir);
        // footers of files not seen yet; a file that cannot be placed in time is skipped too
        let mut fresh: HashMap<PathBuf, FileInfo> = HashMap::new();
        files.retain(|p| {
            let k = p.strip_prefix(&self.table_dir).unwrap_or(p).display().to_string();
            let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            if self.state.files.get(&k).is_some_and(|i| i.size == size) {
                return true;
            }
            match file_info(p, &ts_col) {
                Ok(i) => {
                    fresh.insert(p.clone(), i);
                    true
                }
                Err((reason, e)) => {
                    report_skip(&self.table_dir, p, reason, &e);
                    false
                }
            }
        });
        if files.is_empty() {
            report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            return Ok(report);
        }
        let labels = self.label_files();
        // nothing new and the same spec: nothing to read (no footers, no schema inference)
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let same_files = files.len() == self.state.files.len()
            && files.iter().all(|p| {
                let k = p.strip_prefix(&self.table_dir).unwrap_or(p).display().to_string();
                self.state.files.get(&k).is_some_and(|i| i.size == size(p))
            });
        let same_labels = labels.len() == self.state.label_files.len()
            && labels.iter().all(|p| self.state.label_files.get(&p.display().to_string()) == Some(&size(p)));
        let same_spec = self.state.fingerprint.starts_with(&format!("v1|{:?}|", self.spec_for_fingerprint()));
        if same_files && same_labels && same_spec {
            self.state.refreshes += 1;
            self.state.last_refresh_us = Some(now_us());
            self.save_state()?;
            report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            return Ok(report);
        }
        // layout and fingerprint from the current schema
        let ctx = new_ctx();
        self.view(&ctx, &files, &labels).await?;
        let vschema: SchemaRef = Arc::new(ctx.table("v").await.map_err(qerr)?.schema().as_arrow().clone());
        let tschema: SchemaRef = Arc::new(ctx.table("t").await.map_err(qerr)?.schema().as_arrow().clone());
        self.resolve_problem_type(&tschema);
        self.check(tschema).await?;
        let layout = self.layout(vschema, !labels.is_empty())?;
        let fp = self.fingerprint(&layout);
        if self.state.fingerprint != fp {
            let alerts = std::mem::take(&mut self.state.alerts);
            self.state = State { fingerprint: fp, alerts, ..State::default() };
            for d in [self.profile_dir(), self.drift_dir()] {
                if d.exists() {
                    std::fs::remove_dir_all(&d).map_err(|e| ioerr("cannot clear", &d, e))?;
                }
            }
        }

        // which files are new, changed or gone
        let key = |p: &Path| p.strip_prefix(&self.table_dir).unwrap_or(p).display().to_string();
        let mut changed: Vec<FileInfo> = Vec::new();
        let mut all: BTreeMap<String, (PathBuf, FileInfo)> = BTreeMap::new();
        for p in &files {
            let k = key(p);
            let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let info = match self.state.files.get(&k) {
                Some(i) if i.size == size => i.clone(),
                _ => {
                    let i = match fresh.remove(p).map_or_else(|| file_info(p, &ts_col), Ok) {
                        Ok(i) => i,
                        Err((reason, e)) => {
                            report_skip(&self.table_dir, p, reason, &e);
                            continue;
                        }
                    };
                    changed.push(i.clone());
                    report.new_files += 1;
                    i
                }
            };
            all.insert(k, (p.clone(), info));
        }
        for (k, info) in &self.state.files {
            if !all.contains_key(k) {
                changed.push(info.clone());
                report.removed_files += 1;
            }
        }
        let lkey = |p: &Path| p.display().to_string();
        let new_labels: Vec<PathBuf> = labels
            .iter()
            .filter(|p| {
                let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                self.state.label_files.get(&lkey(p)) != Some(&size)
            })
            .cloned()
            .collect();
        report.new_label_files = new_labels.len();

        let baseline = self.baseline_groups(&layout).await?;
        let mut profile_rows_total = 0;
        let mut drift_rows_total = 0;
        for g in self.spec.granularities.clone() {
            let mut touched: BTreeSet<i64> = BTreeSet::new();
            for f in &changed {
                if f.max_ts < f.min_ts {
                    continue;
                }
                let mut w = g.window_of(f.min_ts);
                while w <= f.max_ts {
                    touched.insert(w);
                    w += g.width_us;
                }
            }
            if !new_labels.is_empty() {
                touched.extend(self.labeled_windows(&files, &new_labels, &g).await?);
            }
            if touched.is_empty() {
                continue;
            }
            let overlaps = |w: i64| {
                all.values().filter(move |(_, i)| i.max_ts >= w && i.min_ts < w + g.width_us).map(|(p, i)| (p, i))
            };
            // successors need new consecutive drift rows
            let succ: Vec<i64> =
                touched.iter().map(|w| w + g.width_us).filter(|w| overlaps(*w).next().is_some()).collect();
            touched.extend(succ);
            let mut needed: BTreeSet<i64> = touched.clone();
            needed.extend(touched.iter().map(|w| w - g.width_us));
            // chunks of windows, in time order
            let estimate = |w: i64| -> u64 {
                overlaps(w)
                    .map(|(_, i)| {
                        let span = (i.max_ts - i.min_ts + 1).max(1) as f64;
                        let ov = ((i.max_ts + 1).min(w + g.width_us) - i.min_ts.max(w)).max(0) as f64;
                        (i.rows as f64 * (ov / span).min(1.0)).ceil() as u64
                    })
                    .sum()
            };
            let mut chunks: Vec<Vec<i64>> = Vec::new();
            let mut cur: Vec<i64> = Vec::new();
            let mut cur_rows = 0u64;
            for w in needed {
                let e = estimate(w);
                if !cur.is_empty() && cur_rows + e > CHUNK_ROWS {
                    chunks.push(std::mem::take(&mut cur));
                    cur_rows = 0;
                }
                cur.push(w);
                cur_rows += e;
            }
            if !cur.is_empty() {
                chunks.push(cur);
            }
            let mut carried: HashMap<GroupKey, GroupAcc> = HashMap::new();
            let mut latest: Option<(Vec<ProfileRow>, Vec<DriftRow>)> = None;
            for chunk in chunks {
                let chunk_files: Vec<PathBuf> = {
                    let mut s: BTreeSet<PathBuf> = BTreeSet::new();
                    for w in &chunk {
                        s.extend(overlaps(*w).map(|(p, _)| p.clone()));
                    }
                    s.into_iter().collect()
                };
                let mut groups = if chunk_files.is_empty() {
                    HashMap::new()
                } else {
                    let (groups, rows) = self.accumulate(&chunk_files, &labels, &layout, &g, &chunk).await?;
                    report.rows_read += rows;
                    groups
                };
                for a in groups.values_mut() {
                    a.finish();
                }
                let custom = if chunk_files.is_empty() {
                    HashMap::new()
                } else {
                    self.custom_aggregates(&chunk_files, &labels, &g, &chunk, &groups).await?
                };
                let first = chunk.first().copied().unwrap_or(0);
                for (k, a) in carried.drain() {
                    if k.window + g.width_us == first {
                        groups.insert(k, a);
                    }
                }
                for &w in &chunk {
                    if !touched.contains(&w) {
                        continue;
                    }
                    let (p, d) = self.window_rows(&g, w, &groups, &custom, &layout, baseline.as_deref()).await?;
                    profile_rows_total += p.len();
                    drift_rows_total += d.len();
                    let custom_profile = self.custom_names(&[CustomKind::Aggregate, CustomKind::Derived]);
                    let custom_drift = self.custom_names(&[CustomKind::Drift]);
                    let pb = output::profile_batch(&p, &custom_profile).map_err(qerr)?;
                    let db = output::drift_batch(&d, &custom_drift).map_err(qerr)?;
                    let pf = output::window_file(&self.profile_dir(), &g.tag, w);
                    let df = output::window_file(&self.drift_dir(), &g.tag, w);
                    output::write_file(&pf, &pb).map_err(|e| ioerr("cannot write", &pf, e))?;
                    output::write_file(&df, &db).map_err(|e| ioerr("cannot write", &df, e))?;
                    report.windows_recomputed += 1;
                    if !p.is_empty() {
                        latest = Some((p, d));
                    }
                }
                let last = chunk.last().copied().unwrap_or(0);
                carried = groups.into_iter().filter(|(k, _)| k.window == last).collect();
            }
            if let Some((p, d)) = latest {
                report.latest_profile.extend(p);
                report.latest_drift.extend(d);
            }
        }
        report.profile_rows = profile_rows_total;
        report.drift_rows = drift_rows_total;
        self.state.files = all.into_iter().map(|(k, (_, i))| (k, i)).collect();
        for p in &labels {
            let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            self.state.label_files.insert(lkey(p), size);
        }
        self.state.refreshes += 1;
        self.state.last_refresh_us = Some(now_us());
        self.save_state()?;
        report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(report)
    }

    /// Windows of granularity `g` holding rows that the new label files label.
    async fn labeled_windows(
        &self,
        files: &[PathBuf],
        new_labels: &[PathBuf],
        g: &Granularity,
    ) -> Result<BTreeSet<i64>, MonitorError> {
        let ctx = new_ctx();
        register_files(&ctx, "t", files).await?;
        register_files(&ctx, "nl", new_labels).await?;
        let ts = q(&self.spec.timestamp_col);
        let w = format!("(CAST(t.{ts} AS BIGINT) - {off}) / {width}", off = g.offset_us, width = g.width_us);
        let t_schema = ctx.table("t").await.map_err(qerr)?.schema().as_arrow().clone();
        let client = if t_schema.field_with_name("client_request_id").is_ok() {
            format!(" UNION SELECT DISTINCT {w} AS w FROM t JOIN nl ON t.client_request_id = nl.client_request_id")
        } else {
            String::new()
        };
        let sql = format!("SELECT DISTINCT {w} AS w FROM t JOIN nl ON t.request_id = nl.request_id{client}");
        let batches = ctx.sql(&sql).await.map_err(qerr)?.collect().await.map_err(qerr)?;
        let mut out = BTreeSet::new();
        for b in batches {
            let a = cast(b.column(0), &DataType::Int64).map_err(qerr)?;
            for v in a.as_primitive::<Int64Type>().iter().flatten() {
                out.insert(v * g.width_us + g.offset_us);
            }
        }
        Ok(out)
    }

    fn ranges_sql(&self, g: &Granularity, windows: &[i64]) -> String {
        let ts = format!("CAST({} AS BIGINT)", q(&self.spec.timestamp_col));
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for &w in windows {
            match ranges.last_mut() {
                Some(r) if r.1 == w => r.1 = w + g.width_us,
                _ => ranges.push((w, w + g.width_us)),
            }
        }
        let parts: Vec<String> = ranges.iter().map(|(a, b)| format!("({ts} >= {a} AND {ts} < {b})")).collect();
        if parts.is_empty() { "FALSE".into() } else { parts.join(" OR ") }
    }

    fn window_expr(&self, g: &Granularity) -> String {
        format!("((CAST({} AS BIGINT) - {}) / {})", q(&self.spec.timestamp_col), g.offset_us, g.width_us)
    }

    /// Top slice values per window and slicing expression.
    async fn top_slices(
        &self,
        ctx: &SessionContext,
        g: &Granularity,
        windows: &[i64],
    ) -> Result<HashMap<(i64, usize), BTreeSet<Arc<str>>>, MonitorError> {
        let mut out: HashMap<(i64, usize), BTreeSet<Arc<str>>> = HashMap::new();
        for (j, e) in self.spec.slicing_exprs.iter().enumerate() {
            let sql = format!(
                "SELECT __w, __s, count(*) AS __c FROM (SELECT {w} AS __w, CAST(({e}) AS VARCHAR) AS __s FROM v WHERE ({f}) AND ({r})) \
                 WHERE __s IS NOT NULL GROUP BY __w, __s",
                w = self.window_expr(g),
                f = self.spec.filter,
                r = self.ranges_sql(g, windows)
            );
            let batches = ctx.sql(&sql).await.map_err(qerr)?.collect().await.map_err(qerr)?;
            let mut per: HashMap<i64, Vec<(i64, Arc<str>)>> = HashMap::new();
            for b in batches {
                let w = cast(b.column(0), &DataType::Int64).map_err(qerr)?;
                let s = cast(b.column(1), &DataType::Utf8).map_err(qerr)?;
                let c = cast(b.column(2), &DataType::Int64).map_err(qerr)?;
                let (w, s, c) = (w.as_primitive::<Int64Type>(), s.as_string::<i32>(), c.as_primitive::<Int64Type>());
                for i in 0..b.num_rows() {
                    per.entry(w.value(i) * g.width_us + g.offset_us)
                        .or_default()
                        .push((c.value(i), Arc::from(s.value(i))));
                }
            }
            for (w, mut v) in per {
                v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                v.truncate(MAX_SLICE_VALUES);
                out.insert((w, j), v.into_iter().map(|(_, s)| s).collect());
            }
        }
        Ok(out)
    }

    /// Streams the rows of `windows` into per-group accumulators.
    async fn accumulate(
        &self,
        files: &[PathBuf],
        labels: &[PathBuf],
        layout: &Layout,
        g: &Granularity,
        windows: &[i64],
    ) -> Result<(HashMap<GroupKey, GroupAcc>, u64), MonitorError> {
        let ctx = new_ctx();
        self.view(&ctx, files, labels).await?;
        let tops = self.top_slices(&ctx, g, windows).await?;
        let s = &self.spec;
        let mut select = vec![
            format!("CAST({} AS BIGINT) AS __ts", q(&s.timestamp_col)),
            format!("CAST(({}) AS VARCHAR) AS __model", s.model_id_col),
            if layout.view_schema.field_with_name("is_shadow").is_ok() {
                "coalesce(is_shadow, FALSE) AS __shadow".to_string()
            } else {
                "FALSE AS __shadow".to_string()
            },
        ];
        for (i, n) in layout.names.iter().enumerate() {
            let ty = if layout.numeric.get(i).copied().unwrap_or(false) { "DOUBLE" } else { "VARCHAR" };
            select.push(format!("CAST({} AS {ty}) AS __c{i}", q(n)));
        }
        match s.problem_type {
            ProblemType::Classification => {
                select.push(format!("CAST({} AS VARCHAR) AS __label", q(&s.label_col)));
                select.push(format!("CAST({} AS VARCHAR) AS __pred", q(&s.prediction_col)));
            }
            ProblemType::Regression => {
                let label = if s.label_col == "label" { "label_value".to_string() } else { q(&s.label_col) };
                select.push(format!("TRY_CAST({label} AS DOUBLE) AS __label"));
                select.push(format!("TRY_CAST({} AS DOUBLE) AS __pred", q(&s.prediction_col)));
            }
        }
        if layout.has_proba {
            select.push("probabilities AS __proba".into());
        }
        for (j, e) in s.slicing_exprs.iter().enumerate() {
            select.push(format!("CAST(({e}) AS VARCHAR) AS __s{j}"));
        }
        let sql =
            format!("SELECT {} FROM v WHERE ({}) AND ({})", select.join(", "), s.filter, self.ranges_sql(g, windows));
        let mut stream = ctx.sql(&sql).await.map_err(qerr)?.execute_stream().await.map_err(qerr)?;
        let mut groups: HashMap<GroupKey, GroupAcc> = HashMap::new();
        let mut models: HashMap<String, Arc<str>> = HashMap::new();
        let mut rows = 0u64;
        let cap = s.max_exact_values;
        let ncols = layout.names.len();
        let nslices = s.slicing_exprs.len();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(qerr)?;
            rows += batch.num_rows() as u64;
            let b = Columns::new(&batch, ncols, nslices, layout)?;
            for r in 0..batch.num_rows() {
                let Some(ts) = b.ts.get(r).copied().flatten() else { continue };
                let w = g.window_of(ts);
                let model: Option<Arc<str>> =
                    b.model.get(r).map(|m| models.entry(m.to_string()).or_insert_with(|| Arc::from(m)).clone());
                let mut slices: Vec<Option<(usize, Arc<str>)>> = vec![None];
                for j in 0..nslices {
                    if let Some(v) = b.slice(j, r)
                        && let Some(top) = tops.get(&(w, j))
                        && let Some(v) = top.get(v)
                    {
                        slices.push(Some((j, v.clone())));
                    }
                }
                let mut model_keys: Vec<Option<Arc<str>>> = vec![model.clone()];
                if !b.shadow(r) {
                    model_keys.push(None);
                }
                let proba = b.proba(r);
                for m in &model_keys {
                    for sl in &slices {
                        let key = GroupKey { window: w, model: m.clone(), slice: sl.clone() };
                        let acc = groups.entry(key).or_insert_with(|| GroupAcc::new(&layout.numeric));
                        acc.rows += 1;
                        for (i, c) in acc.cols.iter_mut().enumerate() {
                            match c {
                                ColAcc::Num(a) => a.push(b.num(i, r), cap),
                                ColAcc::Str(a) => a.push(b.str(i, r)),
                            }
                        }
                        match s.problem_type {
                            ProblemType::Classification => {
                                if let (Some(t), Some(p)) = (b.label_str(r), b.pred_str(r)) {
                                    acc.quality.push_class(t, p, proba.clone(), cap);
                                }
                            }
                            ProblemType::Regression => {
                                if let (Some(t), Some(p)) = (b.label_num(r), b.pred_num(r))
                                    && t.is_finite()
                                    && p.is_finite()
                                {
                                    acc.quality.push_value(t, p);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok((groups, rows))
    }

    /// Custom aggregate metrics per group: (group, column or None) -> values in metric order.
    async fn custom_aggregates(
        &self,
        files: &[PathBuf],
        labels: &[PathBuf],
        g: &Granularity,
        windows: &[i64],
        groups: &HashMap<GroupKey, GroupAcc>,
    ) -> Result<HashMap<(GroupKey, Option<String>), Vec<Option<f64>>>, MonitorError> {
        let aggs: Vec<&super::spec::CustomMetric> =
            self.spec.custom_metrics.iter().filter(|m| m.kind == CustomKind::Aggregate).collect();
        let mut out: HashMap<(GroupKey, Option<String>), Vec<Option<f64>>> = HashMap::new();
        if aggs.is_empty() {
            return Ok(out);
        }
        let ctx = new_ctx();
        self.view(&ctx, files, labels).await?;
        // every (metric index, expression, column)
        let mut exprs: Vec<(usize, String, Option<String>)> = Vec::new();
        for (i, m) in aggs.iter().enumerate() {
            for (e, c) in self.aggregate_exprs(m) {
                exprs.push((i, e, c));
            }
        }
        let s = &self.spec;
        let has_shadow = layout_has_shadow(&ctx).await;
        let variants: Vec<(bool, Option<usize>)> = [true, false]
            .into_iter()
            .flat_map(|per_model| {
                std::iter::once((per_model, None)).chain((0..s.slicing_exprs.len()).map(move |j| (per_model, Some(j))))
            })
            .collect();
        for (per_model, slice) in variants {
            let model = if per_model {
                format!("CAST(({}) AS VARCHAR)", s.model_id_col)
            } else {
                "CAST(NULL AS VARCHAR)".into()
            };
            let sl = match slice {
                Some(j) => {
                    format!("CAST(({}) AS VARCHAR)", s.slicing_exprs.get(j).map(String::as_str).unwrap_or("NULL"))
                }
                None => "CAST(NULL AS VARCHAR)".into(),
            };
            let shadow = if per_model || !has_shadow { "TRUE" } else { "NOT coalesce(is_shadow, FALSE)" };
            let cols: Vec<String> =
                exprs.iter().enumerate().map(|(k, (_, e, _))| format!("CAST(({e}) AS DOUBLE) AS __m{k}")).collect();
            let sql = format!(
                "SELECT {w} AS __w, {model} AS __model, {sl} AS __s, {cols} FROM v WHERE ({f}) AND ({r}) AND {shadow} \
                 GROUP BY {w}, {model}, {sl}",
                w = self.window_expr(g),
                cols = cols.join(", "),
                f = s.filter,
                r = self.ranges_sql(g, windows),
            );
            let batches = ctx
                .sql(&sql)
                .await
                .map_err(|e| MonitorError::Config(format!("custom metrics: {e}")))?
                .collect()
                .await
                .map_err(qerr)?;
            for b in batches {
                let w = cast(b.column(0), &DataType::Int64).map_err(qerr)?;
                let m = cast(b.column(1), &DataType::Utf8).map_err(qerr)?;
                let sv = cast(b.column(2), &DataType::Utf8).map_err(qerr)?;
                let (w, m, sv) = (w.as_primitive::<Int64Type>(), m.as_string::<i32>(), sv.as_string::<i32>());
                for r in 0..b.num_rows() {
                    if (slice.is_some() && sv.is_null(r)) || (per_model && m.is_null(r)) {
                        continue;
                    }
                    let key = GroupKey {
                        window: w.value(r) * g.width_us + g.offset_us,
                        model: per_model.then(|| Arc::from(m.value(r))),
                        slice: slice.map(|j| (j, Arc::from(sv.value(r)))),
                    };
                    if !groups.contains_key(&key) {
                        continue;
                    }
                    for (k, (i, _, c)) in exprs.iter().enumerate() {
                        let v = b.column(3 + k);
                        let v = cast(v, &DataType::Float64).map_err(qerr)?;
                        let v = v.as_primitive::<Float64Type>();
                        let val = (!v.is_null(r)).then(|| v.value(r));
                        let slot = out.entry((key.clone(), c.clone())).or_insert_with(|| vec![None; aggs.len()]);
                        if let Some(x) = slot.get_mut(*i) {
                            *x = val;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Profile and drift rows of window `w`.
    async fn window_rows(
        &self,
        g: &Granularity,
        w: i64,
        groups: &HashMap<GroupKey, GroupAcc>,
        custom: &HashMap<(GroupKey, Option<String>), Vec<Option<f64>>>,
        layout: &Layout,
        baseline: Option<&BaselineGroups>,
    ) -> Result<(Vec<ProfileRow>, Vec<DriftRow>), MonitorError> {
        let gran: Arc<str> = Arc::from(g.name.as_str());
        let mut keys: Vec<&GroupKey> = groups.keys().filter(|k| k.window == w).collect();
        keys.sort();
        let mut profile = Vec::new();
        let mut drift = Vec::new();
        // for each drift row, its comparison profile row (only custom drift metrics read them)
        let want_refs = self.spec.custom_metrics.iter().any(|m| m.kind == CustomKind::Drift);
        let mut refs: Vec<ProfileRow> = Vec::new();
        let mut cur_for_drift: Vec<usize> = Vec::new();
        for k in keys {
            let Some(acc) = groups.get(k) else { continue };
            let row_key = |start: i64| RowKey {
                window_start: start,
                window_end: start + g.width_us,
                granularity: gran.clone(),
                model_id: k.model.clone(),
                slice_key: k
                    .slice
                    .as_ref()
                    .and_then(|(j, _)| self.spec.slicing_exprs.get(*j).map(|e| Arc::from(e.as_str()))),
                slice_value: k.slice.as_ref().map(|(_, v)| v.clone()),
            };
            let key = row_key(w);
            let mut p = rows::profile(&key, &layout.names, acc, self.spec.problem_type);
            self.fill_custom(&mut p, k, custom);
            let first = profile.len();
            profile.extend(p);
            let prev_key = GroupKey { window: w - g.width_us, model: k.model.clone(), slice: k.slice.clone() };
            if let Some(prev) = groups.get(&prev_key) {
                let d = rows::drift(&key, &layout.names, acc, prev, "CONSECUTIVE", Some((w - g.width_us, w)));
                let mut pp = Vec::new();
                if want_refs {
                    pp = rows::profile(&row_key(w - g.width_us), &layout.names, prev, self.spec.problem_type);
                    self.fill_custom(&mut pp, &prev_key, custom);
                }
                for (i, r) in d.into_iter().enumerate() {
                    drift.push(r);
                    cur_for_drift.push(first + i);
                    if let Some(p) = pp.get(i).or(pp.first()) {
                        refs.push(p.clone());
                    }
                }
            }
            if let Some(b) = baseline {
                let bkey = match &k.slice {
                    Some((j, v)) if !b.unsliced.get(*j).copied().unwrap_or(true) => Some((*j, v.clone())),
                    _ => None,
                };
                let (bacc, bprof) = match (b.groups.get(&bkey), b.profile.get(&bkey)) {
                    (Some(a), Some(p)) => (Some(a), Some(p)),
                    _ if bkey.is_some() => (None, None),
                    _ => (b.groups.get(&None), b.profile.get(&None)),
                };
                if let (Some(bacc), Some(bprof)) = (bacc, bprof) {
                    let d = rows::drift(&key, &layout.names, acc, bacc, "BASELINE", None);
                    for (i, r) in d.into_iter().enumerate() {
                        drift.push(r);
                        cur_for_drift.push(first + i);
                        if let Some(p) = bprof.get(i).or(bprof.first()) {
                            refs.push(p.clone());
                        }
                    }
                }
            }
        }
        // derived metrics over profile rows, then drift metrics over (current, reference) pairs
        super::custom::derived(&self.spec.custom_metrics, &mut profile).await?;
        super::custom::drift_metrics(&self.spec.custom_metrics, &profile, &cur_for_drift, &refs, &mut drift).await?;
        Ok((profile, drift))
    }

    fn fill_custom(
        &self,
        rows: &mut [ProfileRow],
        k: &GroupKey,
        custom: &HashMap<(GroupKey, Option<String>), Vec<Option<f64>>>,
    ) {
        let naggs = self.spec.custom_metrics.iter().filter(|m| m.kind == CustomKind::Aggregate).count();
        for r in rows.iter_mut() {
            let col = (r.column_name != ":table").then(|| r.column_name.clone());
            r.custom = custom.get(&(k.clone(), col)).cloned().unwrap_or_else(|| vec![None; naggs]);
        }
    }

    /// Baseline accumulators, computed once per layout.
    async fn baseline_groups(&mut self, layout: &Layout) -> Result<Option<Arc<BaselineGroups>>, MonitorError> {
        let Some(path) = self.spec.baseline.clone() else { return Ok(None) };
        let fp = format!("{:?}|{:?}", layout.names, layout.numeric);
        if let Some((f, b)) = &self.baseline
            && *f == fp
        {
            return Ok(Some(b.clone()));
        }
        if !path.is_file() {
            return Err(MonitorError::Config(format!("baseline {} is not a file", path.display())));
        }
        let ctx = new_ctx();
        register_files(&ctx, "b", std::slice::from_ref(&path)).await?;
        let schema = ctx.table("b").await.map_err(qerr)?.schema().as_arrow().clone();
        let mut select = Vec::new();
        for (i, n) in layout.names.iter().enumerate() {
            let ty = if layout.numeric.get(i).copied().unwrap_or(false) { "DOUBLE" } else { "VARCHAR" };
            if schema.field_with_name(n).is_ok() {
                select.push(format!("CAST({} AS {ty}) AS __c{i}", q(n)));
            } else {
                select.push(format!("CAST(NULL AS {ty}) AS __c{i}"));
            }
        }
        let mut unsliced = Vec::new();
        for (j, e) in self.spec.slicing_exprs.iter().enumerate() {
            let ok = ctx.sql(&format!("SELECT CAST(({e}) AS VARCHAR) FROM b")).await.is_ok();
            unsliced.push(!ok);
            select.push(if ok {
                format!("CAST(({e}) AS VARCHAR) AS __s{j}")
            } else {
                format!("CAST(NULL AS VARCHAR) AS __s{j}")
            });
        }
        let sql = format!("SELECT {} FROM b", select.join(", "));
        let mut stream = ctx.sql(&sql).await.map_err(qerr)?.execute_stream().await.map_err(qerr)?;
        let mut groups: HashMap<Option<(usize, Arc<str>)>, GroupAcc> = HashMap::new();
        let ncols = layout.names.len();
        let nslices = self.spec.slicing_exprs.len();
        let cap = self.spec.max_exact_values;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(qerr)?;
            let b = Columns::baseline(&batch, ncols, nslices, layout)?;
            for r in 0..batch.num_rows() {
                let mut keys: Vec<Option<(usize, Arc<str>)>> = vec![None];
                for j in 0..nslices {
                    if let Some(v) = b.slice(j, r) {
                        keys.push(Some((j, Arc::from(v))));
                    }
                }
                for k in keys {
                    let acc = groups.entry(k).or_insert_with(|| GroupAcc::new(&layout.numeric));
                    acc.rows += 1;
                    for (i, c) in acc.cols.iter_mut().enumerate() {
                        match c {
                            ColAcc::Num(a) => a.push(b.num(i, r), cap),
                            ColAcc::Str(a) => a.push(b.str(i, r)),
                        }
                    }
                }
            }
        }
        let mut profile = HashMap::new();
        for (k, a) in groups.iter_mut() {
            a.finish();
            let key = RowKey {
                window_start: 0,
                window_end: 0,
                granularity: Arc::from(""),
                model_id: None,
                slice_key: None,
                slice_value: k.as_ref().map(|(_, v)| v.clone()),
            };
            let mut rows = rows::profile(&key, &layout.names, a, self.spec.problem_type);
            let naggs = self.spec.custom_metrics.iter().filter(|m| m.kind == CustomKind::Aggregate).count();
            for r in rows.iter_mut() {
                r.custom = vec![None; naggs];
            }
            super::custom::derived(&self.spec.custom_metrics, &mut rows).await?;
            profile.insert(k.clone(), rows);
        }
        let b = Arc::new(BaselineGroups { groups, unsliced, profile });
        self.baseline = Some((fp, b.clone()));
        Ok(Some(b))
    }
}

async fn layout_has_shadow(ctx: &SessionContext) -> bool {
    match ctx.table("v").await {
        Ok(df) => df.schema().as_arrow().field_with_name("is_shadow").is_ok(),
        Err(_) => false,
    }
}

fn column_list(schema: &Schema) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupKey {
    window: i64,
    model: Option<Arc<str>>,
    slice: Option<(usize, Arc<str>)>,
}

/// Monitored columns of a batch: numeric ones as f64, the others as strings.
type TypedColumns = (Vec<Option<datafusion::arrow::array::Float64Array>>, Vec<Option<StrCol>>);

/// Typed views of one batch of the main query.
struct Columns {
    ts: Vec<Option<i64>>,
    model: StrCol,
    shadow: Option<datafusion::arrow::array::BooleanArray>,
    nums: Vec<Option<datafusion::arrow::array::Float64Array>>,
    strs: Vec<Option<StrCol>>,
    label: Option<datafusion::arrow::array::ArrayRef>,
    pred: Option<datafusion::arrow::array::ArrayRef>,
    proba: Option<datafusion::arrow::array::MapArray>,
    slices: Vec<StrCol>,
}

struct StrCol(datafusion::arrow::array::StringArray);

impl StrCol {
    fn new(a: &datafusion::arrow::array::ArrayRef) -> Result<StrCol, MonitorError> {
        let c = cast(a, &DataType::Utf8).map_err(qerr)?;
        Ok(StrCol(c.as_string::<i32>().clone()))
    }
    fn get(&self, r: usize) -> Option<&str> {
        (r < self.0.len() && !self.0.is_null(r)).then(|| self.0.value(r))
    }
}

impl Columns {
    fn typed(batch: &RecordBatch, first: usize, ncols: usize, layout: &Layout) -> Result<TypedColumns, MonitorError> {
        let mut nums = Vec::with_capacity(ncols);
        let mut strs = Vec::with_capacity(ncols);
        for i in 0..ncols {
            let a = batch.column(first + i);
            if layout.numeric.get(i).copied().unwrap_or(false) {
                let c = cast(a, &DataType::Float64).map_err(qerr)?;
                nums.push(Some(c.as_primitive::<Float64Type>().clone()));
                strs.push(None);
            } else {
                nums.push(None);
                strs.push(Some(StrCol::new(a)?));
            }
        }
        Ok((nums, strs))
    }

    fn new(batch: &RecordBatch, ncols: usize, nslices: usize, layout: &Layout) -> Result<Columns, MonitorError> {
        let ts = cast(batch.column(0), &DataType::Int64).map_err(qerr)?;
        let ts: Vec<Option<i64>> = ts.as_primitive::<Int64Type>().iter().collect();
        let model = StrCol::new(batch.column(1))?;
        let shadow = batch.column(2).as_boolean_opt().cloned();
        let (nums, strs) = Self::typed(batch, 3, ncols, layout)?;
        let norm = |a: &datafusion::arrow::array::ArrayRef| {
            let to = if is_stringish(a.data_type()) { DataType::Utf8 } else { DataType::Float64 };
            cast(a, &to).map_err(qerr)
        };
        let label = Some(norm(batch.column(3 + ncols))?);
        let pred = Some(norm(batch.column(4 + ncols))?);
        let mut next = 5 + ncols;
        let proba = if layout.has_proba {
            next += 1;
            batch.column(next - 1).as_map_opt().cloned()
        } else {
            None
        };
        let mut slices = Vec::new();
        for j in 0..nslices {
            slices.push(StrCol::new(batch.column(next + j))?);
        }
        Ok(Columns { ts, model, shadow, nums, strs, label, pred, proba, slices })
    }

    fn baseline(batch: &RecordBatch, ncols: usize, nslices: usize, layout: &Layout) -> Result<Columns, MonitorError> {
        let (nums, strs) = Self::typed(batch, 0, ncols, layout)?;
        let mut slices = Vec::new();
        for j in 0..nslices {
            slices.push(StrCol::new(batch.column(ncols + j))?);
        }
        let empty: datafusion::arrow::array::ArrayRef =
            Arc::new(datafusion::arrow::array::StringArray::from(Vec::<Option<&str>>::new()));
        Ok(Columns {
            ts: Vec::new(),
            model: StrCol::new(&empty)?,
            shadow: None,
            nums,
            strs,
            label: None,
            pred: None,
            proba: None,
            slices,
        })
    }

    fn shadow(&self, r: usize) -> bool {
        self.shadow.as_ref().is_some_and(|s| r < s.len() && !s.is_null(r) && s.value(r))
    }
    fn num(&self, i: usize, r: usize) -> Option<f64> {
        let a = self.nums.get(i)?.as_ref()?;
        (r < a.len() && !a.is_null(r)).then(|| a.value(r))
    }
    fn str(&self, i: usize, r: usize) -> Option<&str> {
        self.strs.get(i)?.as_ref()?.get(r)
    }
    fn slice(&self, j: usize, r: usize) -> Option<&str> {
        self.slices.get(j)?.get(r)
    }
    fn label_str(&self, r: usize) -> Option<&str> {
        let a = self.label.as_ref()?.as_string_opt::<i32>()?;
        (r < a.len() && !a.is_null(r)).then(|| a.value(r))
    }
    fn pred_str(&self, r: usize) -> Option<&str> {
        let a = self.pred.as_ref()?.as_string_opt::<i32>()?;
        (r < a.len() && !a.is_null(r)).then(|| a.value(r))
    }
    fn label_num(&self, r: usize) -> Option<f64> {
        let a = self.label.as_ref()?.as_primitive_opt::<Float64Type>()?;
        (r < a.len() && !a.is_null(r)).then(|| a.value(r))
    }
    fn pred_num(&self, r: usize) -> Option<f64> {
        let a = self.pred.as_ref()?.as_primitive_opt::<Float64Type>()?;
        (r < a.len() && !a.is_null(r)).then(|| a.value(r))
    }
    fn proba(&self, r: usize) -> Option<Vec<(String, f64)>> {
        let m = self.proba.as_ref()?;
        if r >= m.len() || m.is_null(r) {
            return None;
        }
        let entries = m.value(r);
        let keys = cast(entries.column(0), &DataType::Utf8).ok()?;
        let vals = cast(entries.column(1), &DataType::Float64).ok()?;
        let (k, v) = (keys.as_string::<i32>(), vals.as_primitive::<Float64Type>());
        let mut out = Vec::with_capacity(k.len());
        for i in 0..k.len() {
            if !k.is_null(i) && !v.is_null(i) {
                out.push((k.value(i).to_string(), v.value(i)));
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests;
