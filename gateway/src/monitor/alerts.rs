//! Alert rules over the metric tables, evaluated after every refresh. A rule fires when its
//! metric breaches the threshold in each of the latest `consecutive_windows` windows of its
//! series, and clears when that stops being true. Each transition sends one JSON webhook
//! (retried with backoff) and is persisted, so a restart neither repeats nor loses one.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use serde::Serialize;

use super::engine::{AlertState, Monitor};
use super::error::MonitorError;
use super::output::rfc3339;
use super::spec::AlertRule;
use crate::inference_log::now_us;

/// A rule's state changed.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    pub alert: String,
    /// `triggered` or `cleared`.
    pub state: &'static str,
    pub table: String,
    pub metric: String,
    pub column: String,
    pub granularity: String,
    pub drift_type: Option<String>,
    pub model_id: Option<String>,
    pub slice_key: Option<String>,
    pub slice_value: Option<String>,
    pub op: super::spec::Comparison,
    pub threshold: f64,
    pub consecutive_windows: u64,
    pub value: Option<f64>,
    pub window_start: Option<String>,
    pub at: String,
    #[serde(skip)]
    pub webhook_url: Option<String>,
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn metric_expr(metric: &str) -> String {
    match metric.split_once('.') {
        Some((a, b)) => format!("\"{a}\"['{b}']"),
        None => format!("\"{metric}\""),
    }
}

/// The latest `n` (window start, value) points of a rule's series, newest first.
async fn series(monitor: &Monitor, rule: &AlertRule) -> Result<Vec<(i64, Option<f64>)>, MonitorError> {
    let Some(g) = monitor.spec.granularities.iter().find(|g| g.name == rule.granularity) else {
        return Ok(Vec::new());
    };
    let dir = if rule.table == "drift" { monitor.drift_dir() } else { monitor.profile_dir() };
    // One file per window: the newest `consecutive_windows` of them.
    let n = rule.consecutive_windows as usize;
    let files = super::view::newest(&dir, &g.name, n);
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = crate::inference_log::read::new_ctx();
    crate::inference_log::read::register_files(&ctx, "m", &files)
        .await
        .map_err(|e| MonitorError::Query(e.to_string()))?;
    let mut cond = vec![format!("column_name = {}", sql_str(&rule.column))];
    cond.push(match &rule.model_id {
        Some(m) => format!("model_id = {}", sql_str(m)),
        None => "model_id IS NULL".into(),
    });
    cond.push(match (&rule.slice_key, &rule.slice_value) {
        (Some(k), Some(v)) => format!("slice_key = {} AND slice_value = {}", sql_str(k), sql_str(v)),
        _ => "slice_key IS NULL".into(),
    });
    if let Some(d) = &rule.drift_type {
        cond.push(format!("drift_type = {}", sql_str(d)));
    }
    if rule.table != "drift" {
        // the monitored table's rows, not the baseline's written beside them
        cond.push("log_type = 'INPUT'".into());
    }
    let sql = format!(
        "SELECT CAST(\"window\"['start'] AS BIGINT) AS ws, CAST({} AS DOUBLE) AS v FROM m WHERE {} ORDER BY ws DESC",
        metric_expr(&rule.metric),
        cond.join(" AND ")
    );
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(|e| MonitorError::Config(format!("alert '{}': {e}", rule.name)))?
        .collect()
        .await
        .map_err(|e| MonitorError::Query(e.to_string()))?;
    let mut out = Vec::new();
    for b in batches {
        let ws = cast(b.column(0), &DataType::Int64).map_err(|e| MonitorError::Query(e.to_string()))?;
        let v = cast(b.column(1), &DataType::Float64).map_err(|e| MonitorError::Query(e.to_string()))?;
        let (ws, v) = (ws.as_primitive::<Int64Type>(), v.as_primitive::<Float64Type>());
        for r in 0..b.num_rows() {
            out.push((ws.value(r), (!v.is_null(r)).then(|| v.value(r))));
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.0));
    out.truncate(n);
    Ok(out)
}

/// Evaluates every rule, updates the monitor's alert state and returns the transitions.
pub async fn evaluate(monitor: &mut Monitor) -> Result<Vec<Transition>, MonitorError> {
    let rules = monitor.spec.alerts.clone();
    let mut out = Vec::new();
    for rule in rules {
        let points = series(monitor, &rule).await?;
        let breach = points.len() as u64 >= rule.consecutive_windows
            && points.iter().all(|(_, v)| v.is_some_and(|v| rule.op.holds(v, rule.threshold)));
        let latest = points.first().copied();
        let st = monitor.state_mut().alerts.entry(rule.name.clone()).or_default();
        st.value = latest.and_then(|p| p.1);
        st.window_start = latest.map(|p| p.0);
        if breach == st.firing {
            continue;
        }
        st.firing = breach;
        st.since_us = Some(now_us());
        out.push(Transition {
            alert: rule.name.clone(),
            state: if breach { "triggered" } else { "cleared" },
            table: monitor.table.clone(),
            metric: rule.metric.clone(),
            column: rule.column.clone(),
            granularity: rule.granularity.clone(),
            drift_type: rule.drift_type.clone(),
            model_id: rule.model_id.clone(),
            slice_key: rule.slice_key.clone(),
            slice_value: rule.slice_value.clone(),
            op: rule.op,
            threshold: rule.threshold,
            consecutive_windows: rule.consecutive_windows,
            value: latest.and_then(|p| p.1),
            window_start: latest.map(|p| rfc3339(p.0)),
            at: rfc3339(now_us()),
            webhook_url: rule.webhook_url.clone(),
        });
    }
    Ok(out)
}

/// Posts `t` to its webhook (see [`crate::webhook::post_json`]). Returns whether it was
/// delivered (a 2xx answer).
pub async fn notify(t: &Transition) -> bool {
    let Some(url) = &t.webhook_url else { return true };
    let Ok(body) = serde_json::to_vec(t) else { return false };
    crate::webhook::post_json(url, body, "monitor").await
}

/// Counts the webhooks answered since the last call into the alerts' state.
pub fn count_deliveries(monitor: &mut Monitor) {
    let done: Vec<(String, bool)> = std::mem::take(&mut *monitor.deliveries.lock().unwrap_or_else(|e| e.into_inner()));
    for (alert, ok) in done {
        let st: &mut AlertState = monitor.state_mut().alerts.entry(alert).or_default();
        if ok {
            st.notifications_sent += 1;
        } else {
            st.notifications_failed += 1;
        }
    }
}

/// Sends every transition in the background (a slow or dead webhook never holds up a refresh)
/// and counts the outcomes of earlier sends into the alerts' state.
pub async fn deliver(monitor: &mut Monitor, endpoint: &str, transitions: &[Transition]) {
    count_deliveries(monitor);
    for t in transitions {
        tracing::info!(alert = %t.alert, state = t.state, value = ?t.value, "monitor alert");
        let (t, endpoint, outcomes) = (t.clone(), endpoint.to_string(), monitor.deliveries.clone());
        tokio::spawn(async move {
            let ok = notify(&t).await;
            let result = if ok { "delivered" } else { "failed" };
            metrics::counter!(crate::metrics::MONITOR_NOTIFICATIONS_TOTAL, "endpoint" => endpoint, "alert" => t.alert.clone(), "result" => result)
                .increment(1);
            tracing::info!(alert = %t.alert, delivered = ok, "monitor alert webhook");
            outcomes.lock().unwrap_or_else(|e| e.into_inner()).push((t.alert, ok));
        });
    }
}
