//! Experiment analysis (A/B tests between served models): [`scan`] reads a window of an
//! endpoint's inference table (and labels), [`report`] turns it into per-model traffic, errors,
//! latency and label-based metrics with intervals, the tests of each candidate against the
//! champion, the sample-ratio-mismatch check and shadow agreement. The statistics come from the
//! `sluice-stats` crate, checked against scipy and statsmodels.

pub mod report;
pub mod scan;
pub mod spec;

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use crate::config::EndpointConfig;
use crate::config::history::HistoryEntry;
use report::{Period, Report, Scope};

/// What `GET /experiments/{endpoint}` was asked.
#[derive(Debug, Clone, Default)]
pub struct ReportRequest {
    /// RFC 3339, or a duration back from now ("24h"); default: the endpoint's first config
    /// version in this gateway's history (its start).
    pub since: Option<String>,
    /// RFC 3339, or a duration back from now; default: now.
    pub until: Option<String>,
    /// Width of the shadow-agreement windows (default "1h").
    pub window: Option<String>,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// The request does not fit the endpoint (no table, a bad time or window).
    #[error("{0}")]
    Invalid(String),
    /// Reading the table failed.
    #[error("{0}")]
    Failed(String),
}

impl From<scan::ScanError> for ExperimentError {
    fn from(e: scan::ScanError) -> ExperimentError {
        ExperimentError::Failed(e.to_string())
    }
}

fn micros(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// RFC 3339 or a duration before `now_us`.
fn parse_time(s: &str, now_us: i64, what: &str) -> Result<i64, ExperimentError> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s.trim()) {
        return Ok(micros(t));
    }
    if let Ok(d) = humantime::parse_duration(s.trim()) {
        return Ok(now_us - d.as_micros() as i64);
    }
    Err(ExperimentError::Invalid(format!(
        "{what} '{s}' is neither an RFC 3339 time (2026-11-26T10:00:00Z) nor a duration back from now (24h)"
    )))
}

/// The A/B report of endpoint `e` over the requested window, from its config `history` (the
/// traffic split of each version). `champion_hint` is the incumbent of a running rollout, used
/// when the config names no champion.
pub async fn endpoint_report(
    e: &EndpointConfig,
    history: &[HistoryEntry],
    req: &ReportRequest,
    champion_hint: Option<String>,
) -> Result<Report, ExperimentError> {
    let endpoint = e.name.as_str();
    let table = e.table.as_ref().ok_or_else(|| {
        ExperimentError::Invalid(format!(
            "endpoint '{endpoint}' has no inference table; the analysis reads it, so enable inference_table"
        ))
    })?;
    let now = crate::inference_log::now_us();
    let mut periods: Vec<Period> = history
        .iter()
        .filter_map(|h| {
            let start = micros(humantime::parse_rfc3339_weak(&h.time).ok()?);
            let routes = h.config.as_ref()?.traffic_config.as_ref().map(|t| t.routes.clone());
            let weights: BTreeMap<String, u32> = match routes {
                Some(r) => {
                    r.iter().map(|r| (r.served_model_name.clone(), r.traffic_percentage.clamp(0, 100) as u32)).collect()
                }
                // A single served entity without traffic_config takes all traffic.
                None => e.routes.iter().map(|r| (r.served_model_name.clone(), r.traffic_percentage)).collect(),
            };
            Some(Period { start_us: start, weights })
        })
        .collect();
    let from = match &req.since {
        Some(s) => parse_time(s, now, "since")?,
        None => periods.first().map(|p| p.start_us).unwrap_or(now),
    };
    let to = match &req.until {
        Some(s) => parse_time(s, now, "until")?,
        None => now + 1,
    };
    if to <= from {
        return Err(ExperimentError::Invalid("until must be after since".into()));
    }
    let bucket = match &req.window {
        Some(w) => humantime::parse_duration(w.trim())
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ExperimentError::Invalid(format!("window '{w}' is not a duration such as 1h or 15m")))?,
        None => Duration::from_secs(3600),
    };
    // Splits in force over [from, to): the last one that began at or before `from`, then later ones.
    if let Some(first) = periods.first_mut()
        && first.start_us > from
    {
        first.start_us = from;
    }
    let before = periods.iter().rposition(|p| p.start_us <= from).unwrap_or(0);
    let mut periods: Vec<Period> = periods.split_off(before).into_iter().filter(|p| p.start_us < to).collect();
    if let Some(first) = periods.first_mut() {
        first.start_us = from;
    }
    let configured: BTreeMap<String, u32> =
        e.routes.iter().map(|r| (r.served_model_name.clone(), r.traffic_percentage)).collect();
    let champion = e
        .experiment
        .champion
        .clone()
        .or(champion_hint)
        .or_else(|| {
            // The route with the most traffic; the first listed of equals.
            let top = e.routes.iter().map(|r| r.traffic_percentage).max()?;
            e.routes.iter().find(|r| r.traffic_percentage == top).map(|r| r.served_model_name.clone())
        })
        .unwrap_or_default();
    let q = scan::Query {
        table_dir: table.dir.clone(),
        labels_dir: Some(crate::inference_log::labels::dir_of(&table.dir)),
        from_us: from,
        to_us: to,
        metric: e.experiment.metric,
        periods: periods.iter().map(|p| p.start_us).collect(),
        bucket_us: bucket.as_micros() as i64,
    };
    // On the analysis runtime: this handler's thread serves requests.
    let query = q.clone();
    let data = crate::analysis::run("experiment_report", async move { scan::scan(&query).await })
        .await
        .map_err(|e| ExperimentError::Failed(e.to_string()))??;
    let (metric, higher_is_better) = Scope::metric_for(&e.experiment, data.prediction);
    let scope = Scope {
        endpoint: endpoint.to_string(),
        from_us: from,
        to_us: to,
        periods,
        champion,
        metric: data.metric.unwrap_or(metric),
        higher_is_better,
        alpha: e.experiment.alpha,
        min_samples: e.experiment.min_samples,
    };
    Ok(report::build(&scope, &data, &configured, q.bucket_us))
}
