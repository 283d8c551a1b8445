//! Monitors inside the gateway: one task per monitored endpoint, all on the analysis runtime
//! ([`crate::analysis`], shared with the other table reads), so refreshes never take CPU time
//! from the serving runtime's worker threads. Each task refreshes every `refresh_interval` and on demand (admin API),
//! evaluates alerts, sends notifications and publishes gauges and a status for the admin API.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::MonitorError;
use super::engine::{Monitor, RefreshReport};
use super::rows::{DriftRow, ProfileRow};
use super::spec::MonitorSpec;
use crate::config::Config;

/// Status of one monitor, as the admin API shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub endpoint: String,
    pub table: String,
    pub table_dir: String,
    pub profile_metrics: String,
    pub drift_metrics: String,
    pub granularities: Vec<String>,
    pub refresh_interval_s: f64,
    pub baseline: Option<String>,
    pub refreshes: u64,
    pub refreshing: bool,
    pub last_refresh: Option<String>,
    pub last_report: Option<RefreshReport>,
    pub last_error: Option<String>,
    /// Drift rows of the newest window (whole table slice) per granularity, model and column.
    pub latest_drift: Vec<Value>,
    /// Profile rows of the newest window (whole table slice).
    pub latest_profile: Vec<Value>,
    pub alerts: Vec<Value>,
}

enum Cmd {
    Refresh(oneshot::Sender<Result<Value, MonitorError>>),
}

struct Handle {
    key: String,
    tx: mpsc::Sender<Cmd>,
    status: Arc<Mutex<Status>>,
    /// Webhook outcomes not yet counted by a refresh (the status adds them).
    deliveries: Arc<Mutex<Vec<(String, bool)>>>,
    cancel: CancellationToken,
}

/// Every monitor of the running gateway.
pub struct Monitors {
    runtime: tokio::runtime::Handle,
    /// Of replicas sharing a config store, only the leader refreshes (scheduled or asked).
    leadership: Arc<crate::control::lease::Leadership>,
    handles: Mutex<HashMap<String, Handle>>,
    stop: CancellationToken,
    /// The monitor tasks, so that [`Monitors::stop`] can wait for them.
    tasks: TaskTracker,
}

impl std::fmt::Debug for Monitors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitors").finish_non_exhaustive()
    }
}

/// Why a monitor call failed.
#[derive(Debug, thiserror::Error)]
pub enum MonitorCallError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
    /// This replica does not lead its fleet: the leader refreshes.
    #[error("{0}")]
    NotLeader(String),
}

fn opt_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn window_json(start: i64, end: i64) -> Value {
    json!({"start": super::output::rfc3339(start), "end": super::output::rfc3339(end)})
}

fn drift_json(d: &DriftRow) -> Value {
    json!({
        "window": window_json(d.key.window_start, d.key.window_end),
        "granularity": &*d.key.granularity,
        "drift_type": d.drift_type,
        "model_id": d.key.model_id.as_deref(),
        "column_name": d.column_name,
        "count_delta": d.count_delta,
        "avg_delta": d.avg_delta,
        "ks_test": d.ks_test.map(|(s, p)| json!({"statistic": s, "pvalue": p})),
        "wasserstein_distance": d.wasserstein_distance,
        "population_stability_index": d.population_stability_index,
        "js_distance": d.js_distance,
        "chi_squared_test": d.chi_squared_test.map(|(s, p)| json!({"statistic": s, "pvalue": p})),
        "tv_distance": d.tv_distance,
        "l_infinity_distance": d.l_infinity_distance,
    })
}

fn profile_json(p: &ProfileRow) -> Value {
    let q = &p.quality;
    json!({
        "window": window_json(p.key.window_start, p.key.window_end),
        "granularity": &*p.key.granularity,
        "model_id": p.key.model_id.as_deref(),
        "column_name": p.column_name,
        "count": p.count,
        "percent_null": p.percent_null,
        "avg": p.avg,
        "stddev": p.stddev,
        "min": p.min,
        "max": p.max,
        "median": p.median,
        "distinct_count": p.distinct_count,
        "accuracy_score": q.accuracy,
        "f1_score": q.f1.map(|(m, w)| json!({"macro": m, "weighted": w})),
        "roc_auc_score": q.roc_auc,
        "mean_absolute_error": q.mae,
        "r2_score": q.r2,
    })
}

/// Gauges for the latest drift values (whole-table slice) of a refresh.
fn publish_gauges(endpoint: &str, drift: &[DriftRow]) {
    for d in drift.iter().filter(|d| d.key.slice_key.is_none() && d.column_name != ":table") {
        let model = d.key.model_id.as_deref().unwrap_or(":all").to_string();
        let labels = [
            ("endpoint", endpoint.to_string()),
            ("granularity", d.key.granularity.to_string()),
            ("drift_type", d.drift_type.to_string()),
            ("model_id", model),
            ("column", d.column_name.clone()),
        ];
        let set = |name: &'static str, kind: (&'static str, &'static str), v: Option<f64>| {
            if let Some(v) = v {
                let mut l = labels.to_vec();
                l.push((kind.0, kind.1.to_string()));
                metrics::gauge!(name, &l).set(v);
            }
        };
        use crate::metrics::{MONITOR_DRIFT, MONITOR_DRIFT_DISTANCE, MONITOR_DRIFT_PVALUE, MONITOR_DRIFT_STATISTIC};
        for (test, t) in [("ks", d.ks_test), ("chi_squared", d.chi_squared_test)] {
            set(MONITOR_DRIFT_STATISTIC, ("test", test), t.map(|t| t.0));
            set(MONITOR_DRIFT_PVALUE, ("test", test), t.map(|t| t.1));
        }
        for (metric, v) in [
            ("wasserstein_distance", d.wasserstein_distance),
            ("population_stability_index", d.population_stability_index),
            ("js_distance", d.js_distance),
            ("tv_distance", d.tv_distance),
            ("l_infinity_distance", d.l_infinity_distance),
        ] {
            set(MONITOR_DRIFT_DISTANCE, ("metric", metric), v);
        }
        // the deprecated single gauge, as before
        for (metric, v) in [
            ("ks_statistic", d.ks_test.map(|t| t.0)),
            ("ks_pvalue", d.ks_test.map(|t| t.1)),
            ("wasserstein_distance", d.wasserstein_distance),
            ("population_stability_index", d.population_stability_index),
            ("js_distance", d.js_distance),
            ("chi_squared_statistic", d.chi_squared_test.map(|t| t.0)),
            ("chi_squared_pvalue", d.chi_squared_test.map(|t| t.1)),
            ("tv_distance", d.tv_distance),
            ("l_infinity_distance", d.l_infinity_distance),
        ] {
            set(MONITOR_DRIFT, ("metric", metric), v);
        }
    }
}

async fn refresh_once(
    endpoint: &str,
    monitor: &mut Monitor,
    status: &Mutex<Status>,
    leadership: &crate::control::lease::Leadership,
) -> Result<Value, MonitorError> {
    if let Ok(mut s) = status.lock() {
        s.refreshing = true;
    }
    let result = async {
        // in a fleet, resume where the last leader's refresh ended
        monitor.load_shared_state().await?;
        let report = monitor.refresh().await?;
        let transitions = super::alerts::evaluate(monitor).await?;
        super::alerts::deliver(monitor, endpoint, &transitions).await;
        monitor.save_state()?;
        // a replica that lost the lease during the refresh leaves the shared state to the new
        // leader (its metric-table commits were whole windows, which the new leader redoes)
        if leadership.is_leader() {
            monitor.save_shared_state().await?;
        }
        Ok::<_, MonitorError>((report, transitions))
    }
    .await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!(crate::metrics::MONITOR_REFRESHES_TOTAL, "endpoint" => endpoint.to_string(), "result" => outcome)
        .increment(1);
    let alerts = alert_values(monitor);
    for a in &alerts {
        if let (Some(name), Some(firing)) =
            (a.get("name").and_then(Value::as_str), a.get("firing").and_then(Value::as_bool))
        {
            metrics::gauge!(crate::metrics::MONITOR_ALERT_FIRING, "endpoint" => endpoint.to_string(), "alert" => name.to_string())
                .set(f64::from(u8::from(firing)));
        }
    }
    let Ok(mut s) = status.lock() else { return Err(MonitorError::Poisoned) };
    s.refreshing = false;
    s.refreshes = monitor.state().refreshes;
    s.last_refresh = monitor.state().last_refresh_us.map(super::output::rfc3339);
    s.alerts = alerts;
    match result {
        Ok((report, transitions)) => {
            metrics::histogram!(crate::metrics::MONITOR_REFRESH_DURATION, "endpoint" => endpoint.to_string())
                .record(report.duration_ms / 1000.0);
            metrics::counter!(crate::metrics::MONITOR_ROWS_READ_TOTAL, "endpoint" => endpoint.to_string())
                .increment(report.rows_read);
            publish_gauges(endpoint, &report.latest_drift);
            if !report.latest_drift.is_empty() || !report.latest_profile.is_empty() {
                s.latest_drift =
                    report.latest_drift.iter().filter(|d| d.key.slice_key.is_none()).map(drift_json).collect();
                s.latest_profile = report
                    .latest_profile
                    .iter()
                    .filter(|p| p.key.slice_key.is_none() && p.log_type == "INPUT")
                    .map(profile_json)
                    .collect();
            }
            s.last_error = None;
            let body = json!({"report": opt_json(&report), "transitions": opt_json(&transitions)});
            s.last_report = Some(report);
            Ok(body)
        }
        Err(e) => {
            tracing::warn!(endpoint, "monitor refresh failed: {e}");
            s.last_error = Some(e.to_string());
            Err(e)
        }
    }
}

fn alert_values(monitor: &Monitor) -> Vec<Value> {
    monitor
        .spec
        .alerts
        .iter()
        .map(|rule| {
            let st = monitor.state().alerts.get(&rule.name).cloned().unwrap_or_default();
            json!({
                "name": rule.name,
                "rule": opt_json(rule),
                "firing": st.firing,
                "value": st.value,
                "window_start": st.window_start.map(super::output::rfc3339),
                "since": st.since_us.map(super::output::rfc3339),
                "notifications_sent": st.notifications_sent,
                "notifications_failed": st.notifications_failed,
            })
        })
        .collect()
}

async fn run_monitor(
    endpoint: String,
    mut monitor: Monitor,
    mut rx: mpsc::Receiver<Cmd>,
    status: Arc<Mutex<Status>>,
    cancel: CancellationToken,
    leadership: Arc<crate::control::lease::Leadership>,
) {
    let mut tick = tokio::time::interval(monitor.spec.refresh_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // stopping between refreshes: what the background webhooks answered is kept
    let stop = |monitor: &mut Monitor| {
        super::alerts::count_deliveries(monitor);
        if let Err(e) = monitor.save_state() {
            tracing::warn!(%endpoint, "monitor state not saved at stop: {e}");
        }
    };
    loop {
        let reply = tokio::select! {
            _ = cancel.cancelled() => return stop(&mut monitor),
            _ = tick.tick() => None,
            cmd = rx.recv() => match cmd {
                Some(Cmd::Refresh(tx)) => Some(tx),
                None => return stop(&mut monitor),
            },
        };
        // one replica of a fleet writes the metric tables: the leader
        if !leadership.is_leader() {
            if let Some(tx) = reply {
                let leader = leadership.leader_id().unwrap_or_else(|| "none yet".into());
                let _ = tx.send(Err(MonitorError::NotLeader(format!(
                    "this replica ({}) does not lead the fleet, so it does not refresh monitors; the leader \
                     (replica {leader}) does: ask it, or wait for its next refresh",
                    leadership.id
                ))));
            }
            continue;
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = refresh_once(&endpoint, &mut monitor, &status, &leadership) => r,
        };
        if let Some(tx) = reply {
            let _ = tx.send(result);
        }
    }
}

/// The monitors `config` asks for: endpoint, spec, table directory, labels directory, output
/// directory, and the inference table's location in object storage when the outputs live
/// beside it (an inference table there and no `output_dir`).
type Wanted = (String, MonitorSpec, PathBuf, PathBuf, PathBuf, Option<sluice_tables::Location>);

fn wanted(config: &Config) -> Vec<Wanted> {
    config
        .endpoints
        .iter()
        .filter_map(|e| {
            let spec = e.monitor.clone()?;
            let table = e.table.as_ref()?;
            let labels = crate::inference_log::labels::dir_of(&table.dir);
            let shared = table.remote.clone().filter(|_| spec.output_dir.is_none());
            let out = spec.output_dir.clone().unwrap_or_else(|| config.server.data_dir.clone());
            Some((e.name.clone(), spec, table.dir.clone(), labels, out, shared))
        })
        .collect()
}

impl Monitors {
    /// Sets the analysis memory limit (`server.analysis_memory_bytes`) and starts the monitors
    /// of `config` on the analysis runtime.
    pub fn start(
        config: &Config,
        leadership: Arc<crate::control::lease::Leadership>,
    ) -> Result<Arc<Monitors>, MonitorError> {
        crate::analysis::set_memory_limit(config.server.analysis_memory_bytes);
        let runtime = crate::analysis::handle()?;
        let stop = CancellationToken::new();
        let m = Arc::new(Monitors {
            runtime,
            leadership,
            handles: Mutex::new(HashMap::new()),
            stop,
            tasks: TaskTracker::new(),
        });
        m.reconcile(config);
        Ok(m)
    }

    /// Starts, restarts or stops monitors so that they match `config`.
    pub fn reconcile(&self, config: &Config) {
        let Ok(mut handles) = self.handles.lock() else { return };
        let wanted = wanted(config);
        handles.retain(|name, h| {
            let keep = wanted.iter().any(|(n, spec, dir, _, out, _)| n == name && h.key == key(spec, dir, out));
            if !keep {
                h.cancel.cancel();
            }
            keep
        });
        for (name, spec, dir, labels, out, shared) in wanted {
            if handles.contains_key(&name) {
                continue;
            }
            let k = key(&spec, &dir, &out);
            let mut monitor = Monitor::new(spec.clone(), dir.clone(), Some(labels), out);
            if let Some(remote) = shared {
                monitor.share(remote);
            }
            let status = Arc::new(Mutex::new(Status {
                endpoint: name.clone(),
                table: monitor.table.clone(),
                table_dir: dir.display().to_string(),
                profile_metrics: monitor.profile_dir().display().to_string(),
                drift_metrics: monitor.drift_dir().display().to_string(),
                granularities: spec.granularities.iter().map(|g| g.name.clone()).collect(),
                refresh_interval_s: spec.refresh_interval.as_secs_f64(),
                baseline: spec.baseline.as_ref().map(|b| b.display().to_string()),
                refreshes: monitor.state().refreshes,
                alerts: alert_values(&monitor),
                ..Status::default()
            }));
            let (tx, rx) = mpsc::channel(16);
            let cancel = self.stop.child_token();
            let deliveries = monitor.deliveries.clone();
            let leads = self.leadership.clone();
            self.tasks
                .spawn_on(run_monitor(name.clone(), monitor, rx, status.clone(), cancel.clone(), leads), &self.runtime);
            handles.insert(name, Handle { key: k, tx, status, deliveries, cancel });
        }
    }

    /// Names of the monitored endpoints.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.handles.lock().map(|h| h.keys().cloned().collect()).unwrap_or_default();
        v.sort();
        v
    }

    pub fn status(&self, endpoint: &str) -> Result<Status, MonitorCallError> {
        let handles = self.handles.lock().map_err(|_| MonitorCallError::Failed("monitor lock poisoned".into()))?;
        let h = handles.get(endpoint).ok_or_else(|| not_found(endpoint))?;
        let mut status = h
            .status
            .lock()
            .map(|s| s.clone())
            .map_err(|_| MonitorCallError::Failed("monitor status lock poisoned".into()))?;
        // webhooks answered since the last refresh count too
        let pending: Vec<(String, bool)> = h.deliveries.lock().map(|d| d.clone()).unwrap_or_default();
        for a in &mut status.alerts {
            let name = a.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            for (_, ok) in pending.iter().filter(|(alert, _)| *alert == name) {
                let key = if *ok { "notifications_sent" } else { "notifications_failed" };
                let n = a.get(key).and_then(Value::as_u64).unwrap_or(0);
                a[key] = Value::from(n + 1);
            }
        }
        Ok(status)
    }

    /// Runs a refresh now and waits for it (at most `timeout`).
    pub async fn refresh(&self, endpoint: &str, timeout: Duration) -> Result<Value, MonitorCallError> {
        let tx = {
            let handles = self.handles.lock().map_err(|_| MonitorCallError::Failed("monitor lock poisoned".into()))?;
            handles.get(endpoint).ok_or_else(|| not_found(endpoint))?.tx.clone()
        };
        let (reply, rx) = oneshot::channel();
        tx.send(Cmd::Refresh(reply)).await.map_err(|_| MonitorCallError::Failed("the monitor has stopped".into()))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r.map_err(|e| match e {
                MonitorError::NotLeader(m) => MonitorCallError::NotLeader(m),
                e => MonitorCallError::Failed(e.to_string()),
            }),
            Ok(Err(_)) => Err(MonitorCallError::Failed("the monitor stopped during the refresh".into())),
            Err(_) => Err(MonitorCallError::Failed(format!("the refresh took longer than {timeout:?}; it goes on"))),
        }
    }

    /// Stops every monitor and waits until their tasks have ended (a refresh in progress is
    /// abandoned at its next await; it is redone from the persisted state on the next start).
    /// Blocks: call it from a blocking thread.
    pub fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        futures::executor::block_on(self.tasks.wait());
    }
}

fn not_found(endpoint: &str) -> MonitorCallError {
    MonitorCallError::NotFound(format!(
        "endpoint '{endpoint}' has no monitor; add `monitor = {{...}}` (and an inference table) to it"
    ))
}

fn key(spec: &MonitorSpec, dir: &std::path::Path, out: &std::path::Path) -> String {
    format!("{spec:?}|{}|{}", dir.display(), out.display())
}

/// `sluice validate`: checks every monitor's expressions without loading any model, against the
/// table schema its endpoint's first served model's manifest implies (features, prediction).
pub async fn check_offline(config: &Config) -> Result<(), MonitorError> {
    use crate::inference_log::{FeatureColumn, InputColumns, PredictionKind, TableLayout};
    use crate::registry::manifest::{Manifest, ProblemType as P};
    let mut schemas = HashMap::new();
    for e in &config.endpoints {
        let (Some(_), Some(entity)) = (&e.monitor, e.served_entities.first()) else { continue };
        let manifest = Manifest::load(&config.runtime.model_repository.join(&entity.model))?;
        let features = manifest.features.clone().unwrap_or_default();
        let width = features.len();
        let layout = TableLayout {
            inputs: InputColumns::Features(
                features
                    .into_iter()
                    .enumerate()
                    .map(|(offset, name)| FeatureColumn { name, input: 0, offset, width })
                    .collect(),
            ),
            prediction: match manifest.problem_type {
                P::Classification => PredictionKind::Classification,
                P::Regression => PredictionKind::Regression,
                P::Tensor => PredictionKind::Tensor,
            },
        };
        schemas.insert(e.name.clone(), crate::inference_log::schema_of(&layout)?);
    }
    check(config, &schemas).await
}

/// Checks the monitors of `config` against the tables its endpoints will write (schemas from
/// `schemas`), so a bad expression is refused with the config, naming the metric.
pub async fn check(
    config: &Config,
    schemas: &HashMap<String, datafusion::arrow::datatypes::SchemaRef>,
) -> Result<(), MonitorError> {
    for (name, spec, dir, labels, out, _) in wanted(config) {
        let Some(schema) = schemas.get(&name) else { continue };
        let mut m = Monitor::new(spec, dir, Some(labels), out);
        m.resolve_problem_type(schema);
        m.check(schema.clone())
            .await
            .map_err(|e| MonitorError::Endpoint { endpoint: name.clone(), source: Box::new(e) })?;
    }
    Ok(())
}
