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
    /// A local directory or `s3://bucket/prefix/table`.
    pub table: String,
    pub labels: Option<PathBuf>,
    pub baseline: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub out: Option<PathBuf>,
}

/// An `s3://` table of an offline run: it is read through copies of its files under
/// `<out>/_table_cache/<table>` (as a gateway reads one), and so is its `<table>_labels` table
/// when it exists and `--labels` names no local one. Returns (copy dir, labels dir, out).
async fn remote_table(
    run: &OfflineRun,
    spec: &MonitorSpec,
) -> Result<(PathBuf, Option<PathBuf>, PathBuf), MonitorError> {
    let location = sluice_tables::Location::parse(&run.table, &sluice_tables::S3Options::default())
        .map_err(|e| MonitorError::Config(e.to_string()))?;
    let name = run.table.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string();
    let Some(out) = run.out.clone().or_else(|| spec.output_dir.clone()) else {
        return Err(MonitorError::Config(format!(
            "{}: an s3:// table needs --out (or the monitor's output_dir): where the metric tables go",
            run.table
        )));
    };
    // the table must exist: a missing one is an error, not an empty monitor
    sluice_tables::Table::open(&location).await.map_err(|e| MonitorError::Config(e.to_string()))?;
    let cache = out.join("_table_cache").join(&name);
    crate::inference_log::read::mirror(&cache, location.clone());
    let labels = match &run.labels {
        Some(l) => Some(l.clone()),
        None => {
            let remote = location.sibling(&format!("{name}_labels"));
            match sluice_tables::Table::open(&remote).await {
                Ok(_) => {
                    let dir = crate::inference_log::labels::dir_of(&cache);
                    crate::inference_log::read::mirror(&dir, remote);
                    Some(dir)
                }
                Err(_) => None,
            }
        }
    };
    Ok((cache, labels, out))
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
    let (table, labels, out) = if run.table.starts_with("s3://") {
        remote_table(run, &spec).await?
    } else {
        let table = PathBuf::from(&run.table);
        if !table.is_dir() {
            return Err(MonitorError::Config(format!("no table directory at {}", table.display())));
        }
        let labels = run.labels.clone().or_else(|| {
            let l = crate::inference_log::labels::dir_of(&table);
            l.is_dir().then_some(l)
        });
        let out = run
            .out
            .clone()
            .or_else(|| spec.output_dir.clone())
            .unwrap_or_else(|| table.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")));
        (table, labels, out)
    };
    let name = table.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut monitor = Monitor::new(spec, table, labels, out);
    let report = monitor.refresh().await?;
    let transitions = alerts::evaluate(&mut monitor).await?;
    alerts::deliver(&mut monitor, &name, &transitions).await;
    monitor.save_state()?;
    Ok((report, transitions))
}

#[cfg(test)]
mod offline_tests {
    use super::*;

    fn run(table: &str, out: Option<PathBuf>) -> OfflineRun {
        let baseline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fraud_classifier/1/baseline.parquet");
        OfflineRun { table: table.to_string(), labels: None, baseline: Some(baseline), config: None, out }
    }

    async fn error_of(r: &OfflineRun) -> String {
        match run_offline(r).await {
            Ok(_) => panic!("{} ran", r.table),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn bad_tables_are_refused_by_name_before_any_request() {
        let dir = tempfile::tempdir().unwrap();
        let e = error_of(&run("s3://bucket/prefix/fraud", None)).await;
        assert!(e.contains("needs --out"), "{e}");
        let e = error_of(&run("s3://Bad_Bucket/fraud", Some(dir.path().to_path_buf()))).await;
        assert!(e.contains("not an S3 bucket name"), "{e}");
        let e = error_of(&run("s3://bucket/../fraud", Some(dir.path().to_path_buf()))).await;
        assert!(e.contains("'..'"), "{e}");
        let missing = dir.path().join("no-such-table");
        let e = error_of(&run(&missing.display().to_string(), None)).await;
        assert!(e.contains("no table directory"), "{e}");
    }
}
