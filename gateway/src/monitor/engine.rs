//! One monitor over one inference table: incremental refresh.
//!
//! A refresh lists the table's files at its latest version, reads the Parquet footers of the
//! files it has not seen (timestamp range, row count), and works out per granularity which
//! windows the new and removed files (and new label files) touch; the Delta log's commits since
//! the version last processed tell rewrites (optimize), which recompute nothing, from appends
//! and deletes. It re-reads only the files overlapping those windows (plus the window
//! before each, for consecutive drift), in time-ordered chunks of about [`windows::CHUNK_ROWS`]
//! rows, streaming record batches through DataFusion (one partition, so the row order and every
//! float sum are reproducible) into bounded accumulators. Each recomputed window's profile and
//! drift rows replace that window's files. The list of files seen is persisted after the outputs,
//! so a restart resumes where the last refresh ended, and a crash in between only repeats work.
//!
//! Files, one step each: [`state`] (what is persisted and reported), [`files`] (footers, what is
//! new, changed or gone), [`layout`] (the monitored columns and the spec's fingerprint),
//! [`check`] (every expression planned before any work), [`windows`] (which windows to
//! recompute, in which chunks), [`accumulate`] and [`columns`] (streaming rows into
//! accumulators), [`aggregates`] (custom aggregate metrics), [`baseline`] (the baseline's
//! accumulators), [`window`] (one window's metric rows and files).

mod accumulate;
mod aggregates;
mod baseline;
mod check;
mod columns;
mod files;
mod layout;
mod state;
mod window;
mod windows;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::prelude::SessionContext;

use self::accumulate::GroupKey;
use self::baseline::BaselineGroups;
use self::files::FileDiff;
use self::layout::Layout;
pub use self::state::{AlertState, FileInfo, RefreshReport, State};
use super::accum::GroupAcc;
use super::error::{MonitorError, ioerr, qerr};
use super::output::MetricTables;
use super::rows::{DriftRow, ProfileRow};
use super::spec::{CustomKind, Granularity, MonitorSpec};
use crate::inference_log::now_us;

/// An object in object storage: its store and path.
type SharedObject = (Arc<dyn object_store::ObjectStore>, object_store::path::Path);

/// Largest shared state read (the files seen of a big table are megabytes).
const MAX_SHARED_STATE_BYTES: u64 = 256 << 20;

pub struct Monitor {
    pub spec: MonitorSpec,
    pub table: String,
    table_dir: PathBuf,
    labels_dir: Option<PathBuf>,
    pub out_dir: PathBuf,
    /// The inference table's location in object storage, when the monitor's outputs live
    /// beside it there ([`Monitor::share`]).
    shared: Option<sluice_tables::Location>,
    state: State,
    baseline: Option<(String, Arc<BaselineGroups>)>,
    /// The metric tables, open once the first refresh writes.
    tables: Option<MetricTables>,
    /// Outcomes of alert webhooks sent in the background (alert, delivered), counted into the
    /// state at the next refresh.
    pub(super) deliveries: Arc<std::sync::Mutex<Vec<(String, bool)>>>,
}

/// A column name quoted for SQL.
fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn register_files(ctx: &SessionContext, name: &str, files: &[PathBuf]) -> Result<(), MonitorError> {
    crate::inference_log::read::register_files(ctx, name, files).await.map_err(qerr)
}

/// What every granularity of one refresh reads.
struct Pass<'a> {
    diff: &'a FileDiff,
    labels: &'a [PathBuf],
    /// The label files that are new since the last refresh.
    new_labels: &'a [PathBuf],
    layout: &'a Layout,
    baseline: Option<&'a BaselineGroups>,
}

fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

impl Monitor {
    /// A monitor over `table_dir`, writing to `out_dir`; resumes from its state file if any.
    pub fn new(spec: MonitorSpec, table_dir: PathBuf, labels_dir: Option<PathBuf>, out_dir: PathBuf) -> Monitor {
        let table = table_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "table".into());
        let mut m = Monitor {
            spec,
            table,
            table_dir,
            labels_dir,
            out_dir,
            shared: None,
            state: State::default(),
            baseline: None,
            tables: None,
            deliveries: Arc::default(),
        };
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

    /// The profile metric table's directory: the table, or with shared outputs the readers'
    /// copy of it (beside the inference table's copy, in the table cache).
    pub fn profile_dir(&self) -> PathBuf {
        self.metrics_dir().join(format!("{}_profile_metrics", self.table))
    }

    pub fn drift_dir(&self) -> PathBuf {
        self.metrics_dir().join(format!("{}_drift_metrics", self.table))
    }

    fn metrics_dir(&self) -> PathBuf {
        match (&self.shared, self.table_dir.parent()) {
            (Some(_), Some(cache)) => cache.to_path_buf(),
            _ => self.out_dir.clone(),
        }
    }

    /// Writes the state durably, keeping the version it replaces as `<state>.prev`.
    pub fn save_state(&self) -> Result<(), MonitorError> {
        let path = self.state_path();
        crate::durable::save_json(&path, &self.state).map_err(|e| ioerr("cannot write", &path, e))
    }

    /// Puts the metric tables and the state beside the inference table at `remote` (object
    /// storage), for a fleet: whichever replica leads refreshes them, resuming from the state
    /// the previous leader left. `profile_dir`/`drift_dir` become the readers' local copies.
    pub fn share(&mut self, remote: sluice_tables::Location) {
        self.shared = Some(remote);
        for kind in ["profile", "drift"] {
            let copy = self.metrics_dir().join(format!("{}_{kind}_metrics", self.table));
            crate::inference_log::read::mirror(&copy, self.metric_location(kind));
        }
    }

    /// Where the metric table `kind` (`profile` or `drift`) is written.
    pub fn metric_location(&self, kind: &str) -> sluice_tables::Location {
        let name = format!("{}_{kind}_metrics", self.table);
        match &self.shared {
            Some(remote) => remote.sibling(&name),
            None => sluice_tables::Location::Local(self.out_dir.join(name)),
        }
    }

    /// The shared state object, when the outputs are shared.
    fn shared_state(&self) -> Option<Result<SharedObject, MonitorError>> {
        let remote = self.shared.as_ref()?;
        let at = remote.sibling(&format!("{}_monitor_state.json", self.table));
        Some(at.object_store().map_err(|e| MonitorError::Io(format!("monitor state at {at}: {e}"))))
    }

    /// With shared outputs, takes the state the last refresh left in object storage (written
    /// by whichever replica led then); none there yet keeps this one's. Before each refresh.
    pub async fn load_shared_state(&mut self) -> Result<(), MonitorError> {
        use object_store::ObjectStoreExt as _;
        let Some(at) = self.shared_state() else { return Ok(()) };
        let (store, path) = at?;
        let err = |e: &dyn std::fmt::Display| MonitorError::Io(format!("monitor state {path} in object storage: {e}"));
        let got = match store.get(&path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(err(&e)),
        };
        if got.meta.size > MAX_SHARED_STATE_BYTES {
            return Err(err(&format!("{} bytes, more than the {MAX_SHARED_STATE_BYTES} read", got.meta.size)));
        }
        let bytes = got.bytes().await.map_err(|e| err(&e))?;
        let state: State = serde_json::from_slice(&bytes).map_err(|e| err(&e))?;
        // the shared state is the truth: only the leader writes it, after each refresh
        self.state = state;
        Ok(())
    }

    /// With shared outputs, writes the state there (after a refresh's outputs are committed).
    pub async fn save_shared_state(&self) -> Result<(), MonitorError> {
        use object_store::ObjectStoreExt as _;
        let Some(at) = self.shared_state() else { return Ok(()) };
        let (store, path) = at?;
        let body = serde_json::to_vec(&self.state).map_err(|e| MonitorError::Io(e.to_string()))?;
        store
            .put(&path, object_store::PutPayload::from(body))
            .await
            .map_err(|e| MonitorError::Io(format!("monitor state {path} in object storage: {e}")))?;
        Ok(())
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

    /// One incremental refresh; see the module docs.
    pub async fn refresh(&mut self) -> Result<RefreshReport, MonitorError> {
        let started = Instant::now();
        let mut report = RefreshReport::default();
        let scan = self.scan_files();
        if scan.files().is_empty() {
            report.duration_ms = elapsed_ms(started);
            return Ok(report);
        }
        let labels = self.label_files();
        // nothing new and the same spec: nothing to read (no footers, no schema inference)
        if self.unchanged(scan.files(), &labels.files) {
            self.remember_versions(&scan, &labels);
            self.count_refresh()?;
            report.duration_ms = elapsed_ms(started);
            return Ok(report);
        }
        let layout = self.prepare_layout(scan.files(), &labels.files).await?;
        let diff = self.diff_files(scan, &mut report);
        let new_labels = self.new_label_files(&labels);
        report.new_label_files = new_labels.len();
        let baseline = self.baseline_groups(&layout).await?;
        let pass = Pass {
            diff: &diff,
            labels: &labels.files,
            new_labels: &new_labels,
            layout: &layout,
            baseline: baseline.as_deref(),
        };
        let mut tables = match self.tables.take() {
            Some(t) => t,
            None => self.open_tables().await?,
        };
        for g in &self.spec.granularities {
            // on an error the tables are dropped and reopened at the next refresh (what it left
            // staged is never committed; the windows are recomputed)
            let latest = self.refresh_granularity(g, &pass, &mut tables, &mut report).await?;
            if let Some((p, d)) = latest {
                report.latest_profile.extend(p);
                report.latest_drift.extend(d);
            }
        }
        self.tables = Some(tables);
        self.remember_files(diff, &labels);
        self.count_refresh()?;
        report.duration_ms = elapsed_ms(started);
        Ok(report)
    }

    async fn open_tables(&self) -> Result<MetricTables, MonitorError> {
        let custom_profile = self.custom_names(&[CustomKind::Aggregate, CustomKind::Derived]);
        let custom_drift = self.custom_names(&[CustomKind::Drift]);
        let (profile, drift) = (self.metric_location("profile"), self.metric_location("drift"));
        MetricTables::open(&profile, &drift, &custom_profile, &custom_drift).await
    }

    /// Recomputes the windows of granularity `g` that the changed files and new labels touch,
    /// chunk by chunk, and replaces them in the metric tables (one commit per table); answers
    /// the rows of the newest recomputed window that has any.
    async fn refresh_granularity(
        &self,
        g: &Granularity,
        pass: &Pass<'_>,
        tables: &mut MetricTables,
        report: &mut RefreshReport,
    ) -> Result<Option<(Vec<ProfileRow>, Vec<DriftRow>)>, MonitorError> {
        let Pass { diff, labels, new_labels, layout, baseline } = *pass;
        let mut touched = windows::touched(g, &diff.changed);
        if !new_labels.is_empty() {
            touched.extend(self.labeled_windows(&diff.files, new_labels, g).await?);
        }
        if touched.is_empty() {
            return Ok(None);
        }
        // successors need new consecutive drift rows
        let succ: Vec<i64> = touched
            .iter()
            .map(|w| w + g.width_us)
            .filter(|w| windows::overlapping(&diff.all, g, *w).next().is_some())
            .collect();
        touched.extend(succ);
        let mut needed = touched.clone();
        needed.extend(touched.iter().map(|w| w - g.width_us));
        let chunks = windows::chunks(needed, |w| windows::estimate_rows(&diff.all, g, w));
        let mut carried: HashMap<GroupKey, GroupAcc> = HashMap::new();
        let mut latest: Option<(Vec<ProfileRow>, Vec<DriftRow>)> = None;
        let mut pending = tables.pending(&g.name).await?;
        for chunk in chunks {
            let chunk_files = windows::files_of(&diff.all, g, &chunk);
            let (mut groups, custom) = self.chunk_groups(&chunk_files, labels, layout, g, &chunk, report).await?;
            // the window before the chunk, carried over from the previous one
            let first = chunk.first().copied().unwrap_or(0);
            for (k, a) in carried.drain() {
                if k.window + g.width_us == first {
                    groups.insert(k, a);
                }
            }
            for &w in chunk.iter().filter(|w| touched.contains(w)) {
                let (p, d) = self.window_rows(g, w, &groups, &custom, layout, baseline).await?;
                self.stage_window(tables, &mut pending, w, &p, &d).await?;
                report.profile_rows += p.len();
                report.drift_rows += d.len();
                report.windows_recomputed += 1;
                if !p.is_empty() {
                    latest = Some((p, d));
                }
            }
            let last = chunk.last().copied().unwrap_or(0);
            carried = groups.into_iter().filter(|(k, _)| k.window == last).collect();
        }
        tables.commit(pending).await?;
        Ok(latest)
    }

    /// Counts a refresh and saves the state (the outputs are written by then).
    fn count_refresh(&mut self) -> Result<(), MonitorError> {
        self.state.refreshes += 1;
        self.state.last_refresh_us = Some(now_us());
        self.save_state()
    }
}

#[cfg(test)]
mod tests;
