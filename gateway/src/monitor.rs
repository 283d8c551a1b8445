//! The embedded drift and monitoring engine, modelled on Lakehouse Monitoring's InferenceLog
//! monitor: it reads an inference table (and its labels), and writes `<table>_profile_metrics`
//! and `<table>_drift_metrics` Parquet tables per time window, granularity, model id and slice,
//! incrementally. Custom metrics are SQL (DataFusion); alerts are rules over the metric tables
//! that notify webhooks. It runs inside the gateway ([`service`]) or offline
//! (`sluice monitor run`, [`run_offline`]).
//!
//! Layout: [`spec`] (config) -> [`engine`] (files, windows, streaming, state) -> [`accum`]
//! (bounded per-group accumulators) -> [`rows`] (metric rows; the statistics come from the
//! `sluice-stats` crate) -> [`output`] (Parquet); [`custom`] and [`alerts`] work on the rows and
//! tables; [`error`] is the leaf every one of them returns.

pub mod accum;
pub mod alerts;
pub mod custom;
pub mod engine;
pub mod error;
pub mod output;
pub mod rows;
pub mod service;
pub mod spec;
pub mod view;

use std::path::{Path, PathBuf};

pub use engine::{Monitor, RefreshReport};
pub use error::MonitorError;
pub use spec::{MonitorSpec, RawMonitor};

/// What `sluice monitor run` was asked to do.
#[derive(Debug, Clone)]
pub struct OfflineRun {
    pub table: PathBuf,
    pub labels: Option<PathBuf>,
    pub baseline: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub out: Option<PathBuf>,
}

/// Reads a monitor config file (the keys of an endpoint's `monitor` table, at top level).
pub fn load_spec(path: Option<&Path>, baseline: Option<&Path>) -> Result<MonitorSpec, MonitorError> {
    let (raw, base) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| MonitorError::Config(format!("cannot read {}: {e}", p.display())))?;
            let raw: RawMonitor =
                toml::from_str(&text).map_err(|e| MonitorError::Config(format!("{}: {e}", p.display())))?;
            (raw, p.parent().unwrap_or(Path::new(".")).to_path_buf())
        }
        None => (RawMonitor::default(), PathBuf::from(".")),
    };
    let mut spec = spec::validate(&raw, "monitor", &base, None).map_err(|errs| {
        MonitorError::Config(errs.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))
    })?;
    if let Some(b) = baseline {
        spec.baseline = Some(b.to_path_buf());
    }
    Ok(spec)
}

/// `sluice monitor run`: one refresh of the metric tables of `run.table` (incremental when the
/// output directory already holds a state file), then the alert rules.
pub async fn run_offline(run: &OfflineRun) -> Result<(RefreshReport, Vec<alerts::Transition>), MonitorError> {
    let spec = load_spec(run.config.as_deref(), run.baseline.as_deref())?;
    if !run.table.is_dir() {
        return Err(MonitorError::Config(format!("no table directory at {}", run.table.display())));
    }
    let name = run.table.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let labels = run.labels.clone().or_else(|| {
        let l = crate::inference_log::labels::dir_of(&run.table);
        l.is_dir().then_some(l)
    });
    let out = run
        .out
        .clone()
        .or_else(|| spec.output_dir.clone())
        .unwrap_or_else(|| run.table.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")));
    let mut monitor = Monitor::new(spec, run.table.clone(), labels, out);
    let report = monitor.refresh().await?;
    let transitions = alerts::evaluate(&mut monitor).await?;
    alerts::deliver(&mut monitor, &name, &transitions).await;
    monitor.save_state()?;
    Ok((report, transitions))
}
