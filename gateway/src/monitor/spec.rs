//! Monitor configuration: the TOML shape (`monitor = {...}` on an endpoint, or a file for
//! `sluice monitor run --config`) and its validated form.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A monitor as written. Every field is optional; defaults follow Lakehouse Monitoring's
/// InferenceLog profile.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawMonitor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `classification` or `regression`; default from the served models' manifests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    /// Window sizes, e.g. `["5 minutes", "1 hour", "1 day"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub granularities: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_col: Option<String>,
    /// SQL expression giving the model id of a row (default `served_model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id_col: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction_col: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_col: Option<String>,
    /// Columns to profile; default: the feature columns, the prediction and (with labels) the label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Columns (one slice per value, top 100) or predicates (`true`/`false` slices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slicing_exprs: Vec<String>,
    /// SQL predicate selecting the rows to monitor (default `status_code = 200`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Parquet file with a training sample (the columns to compare must exist in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// How often the gateway refreshes (default `1m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
    /// Values kept per window, group and column for quantiles, KS and Wasserstein; above this a
    /// seeded uniform sample of this size is used (default 100000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_exact_values: Option<u64>,
    /// Where the metric tables go (default: beside the inference table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<String>,
    /// Default webhook for alerts that name none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_metrics: Vec<RawCustomMetric>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<RawAlert>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawCustomMetric {
    /// `aggregate`, `derived` or `drift`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    /// `[":table"]` (default) or column names substituted for `{{input_column}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_columns: Option<Vec<String>>,
    pub definition: String,
    /// Only `double` is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_data_type: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawAlert {
    pub name: String,
    /// A metric column, e.g. `js_distance`, `ks_test.pvalue`, `percent_null`, or a custom metric.
    pub metric: String,
    /// Column whose row is checked (default `:table`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// `BASELINE` (default) or `CONSECUTIVE`, for drift metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_type: Option<String>,
    /// Default: the monitor's first granularity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub granularity: Option<String>,
    /// Default: all models (model_id NULL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice_value: Option<String>,
    /// `>`, `>=`, `<`, `<=`.
    pub op: String,
    pub threshold: f64,
    /// Windows in a row that must breach before the alert triggers (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_windows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

/// A window size. Fixed-width windows are aligned to the Unix epoch (weeks to Monday).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Granularity {
    /// As written in the output tables, e.g. `1 hour`.
    pub name: String,
    pub width_us: i64,
    /// Window starts are `offset_us + k * width_us`.
    pub offset_us: i64,
}

/// Why a granularity such as `5 minutes` was refused; each names the text as written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GranularityError {
    #[error("granularity '{text}' must look like '5 minutes'")]
    Shape { text: String },
    #[error("granularity '{text}': '{count}' is not a whole number")]
    NotWhole { text: String, count: String },
    #[error("granularity '{text}' must be positive")]
    NotPositive { text: String },
    #[error("granularity '{text}': unknown unit '{unit}'; use seconds, minutes, hours, days or weeks")]
    UnknownUnit { text: String, unit: String },
    #[error("granularity '{text}' is too large")]
    TooLarge { text: String },
}

impl Granularity {
    /// Parses `<n> <unit>` (seconds to weeks, singular or plural, any case).
    pub fn parse(s: &str) -> Result<Granularity, GranularityError> {
        let text = || s.to_string();
        let t = s.trim().to_ascii_lowercase();
        let (n, unit) = t.split_once(' ').ok_or_else(|| GranularityError::Shape { text: text() })?;
        let n: i64 = n.trim().parse().map_err(|_| GranularityError::NotWhole { text: text(), count: n.to_string() })?;
        if n <= 0 {
            return Err(GranularityError::NotPositive { text: text() });
        }
        let (unit_us, singular) = match unit.trim() {
            "second" | "seconds" => (1_000_000, "second"),
            "minute" | "minutes" => (60_000_000, "minute"),
            "hour" | "hours" => (3_600_000_000, "hour"),
            "day" | "days" => (86_400_000_000, "day"),
            "week" | "weeks" => (7 * 86_400_000_000, "week"),
            other => return Err(GranularityError::UnknownUnit { text: text(), unit: other.to_string() }),
        };
        let width_us = n.checked_mul(unit_us).ok_or_else(|| GranularityError::TooLarge { text: text() })?;
        // 1970-01-05 was a Monday: weeks start on Mondays, like Spark's date_trunc('week').
        let offset_us = if singular == "week" { 4 * 86_400_000_000 } else { 0 };
        let name = if n == 1 { format!("1 {singular}") } else { format!("{n} {singular}s") };
        Ok(Granularity { name, width_us, offset_us })
    }

    /// Start of the window holding `ts_us`.
    pub fn window_of(&self, ts_us: i64) -> i64 {
        (ts_us - self.offset_us).div_euclid(self.width_us) * self.width_us + self.offset_us
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProblemType {
    Classification,
    Regression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomKind {
    Aggregate,
    Derived,
    Drift,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CustomMetric {
    pub kind: CustomKind,
    pub name: String,
    /// Empty = `:table`.
    pub input_columns: Vec<String>,
    pub definition: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Comparison {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Comparison {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Gt => value > threshold,
            Comparison::Ge => value >= threshold,
            Comparison::Lt => value < threshold,
            Comparison::Le => value <= threshold,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRule {
    pub name: String,
    pub metric: String,
    /// `drift` or `profile`.
    pub table: &'static str,
    pub column: String,
    pub drift_type: Option<String>,
    pub granularity: String,
    pub model_id: Option<String>,
    pub slice_key: Option<String>,
    pub slice_value: Option<String>,
    pub op: Comparison,
    pub threshold: f64,
    pub consecutive_windows: u64,
    pub webhook_url: Option<String>,
}

/// A validated monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSpec {
    pub problem_type: ProblemType,
    /// No problem type was given: the engine takes it from the prediction column's type.
    pub infer_problem_type: bool,
    pub granularities: Vec<Granularity>,
    pub timestamp_col: String,
    pub model_id_col: String,
    pub prediction_col: String,
    pub label_col: String,
    pub columns: Option<Vec<String>>,
    pub slicing_exprs: Vec<String>,
    pub filter: String,
    pub baseline: Option<PathBuf>,
    pub refresh_interval: Duration,
    pub max_exact_values: usize,
    pub output_dir: Option<PathBuf>,
    pub custom_metrics: Vec<CustomMetric>,
    pub alerts: Vec<AlertRule>,
}

/// Metrics stored in the drift table (alerts on these read it).
pub const DRIFT_METRICS: &[&str] = &[
    "count_delta",
    "avg_delta",
    "percent_null_delta",
    "percent_zeros_delta",
    "percent_distinct_delta",
    "ks_test.statistic",
    "ks_test.pvalue",
    "wasserstein_distance",
    "population_stability_index",
    "js_distance",
    "chi_squared_test.statistic",
    "chi_squared_test.pvalue",
    "tv_distance",
    "l_infinity_distance",
];

/// Numeric metrics stored in the profile table.
pub const PROFILE_METRICS: &[&str] = &[
    "count",
    "num_nulls",
    "num_nan",
    "num_zeros",
    "distinct_count",
    "percent_null",
    "percent_nan",
    "percent_zeros",
    "percent_distinct",
    "min",
    "max",
    "avg",
    "stddev",
    "median",
    "min_length",
    "max_length",
    "avg_length",
    "accuracy_score",
    "precision.macro",
    "precision.weighted",
    "recall.macro",
    "recall.weighted",
    "f1_score.macro",
    "f1_score.weighted",
    "roc_auc_score",
    "mean_squared_error",
    "root_mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "r2_score",
];

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Validates a monitor; `field` prefixes error messages (e.g. `endpoints[0].monitor`), `base`
/// resolves relative paths, `problem_default` comes from the models' manifests.
pub fn validate(
    raw: &RawMonitor,
    field: &str,
    base: &Path,
    problem_default: Option<ProblemType>,
) -> Result<MonitorSpec, Vec<(String, String)>> {
    let mut errs: Vec<(String, String)> = Vec::new();
    let mut err = |f: &str, m: String| errs.push((format!("{field}.{f}"), m));
    let problem_type = match raw.problem_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("classification" | "problem_type_classification") => ProblemType::Classification,
        Some("regression" | "problem_type_regression") => ProblemType::Regression,
        Some(other) => {
            err("problem_type", format!("'{other}' is not a problem type; use classification or regression"));
            ProblemType::Classification
        }
        None => problem_default.unwrap_or(ProblemType::Classification),
    };
    let mut granularities = Vec::new();
    for g in raw.granularities.clone().unwrap_or_else(|| vec!["1 hour".into(), "1 day".into()]) {
        match Granularity::parse(&g) {
            Ok(g) if granularities.iter().any(|x: &Granularity| x.width_us == g.width_us) => {
                err("granularities", format!("'{}' is listed twice", g.name))
            }
            Ok(g) => granularities.push(g),
            Err(e) => err("granularities", e.to_string()),
        }
    }
    if granularities.is_empty() && raw.granularities.is_some() {
        err("granularities", "list at least one granularity, e.g. [\"1 hour\"]".into());
    }
    let refresh_interval = match raw.refresh_interval.as_deref() {
        None => Duration::from_secs(60),
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) if d >= Duration::from_millis(100) => d,
            Ok(_) => {
                err("refresh_interval", format!("'{s}' is too short; use at least 100ms"));
                Duration::from_secs(60)
            }
            Err(e) => {
                err("refresh_interval", format!("'{s}' is not a duration ({e}); e.g. \"1m\""));
                Duration::from_secs(60)
            }
        },
    };
    let max_exact_values = match raw.max_exact_values {
        None => 100_000,
        Some(n) if (100..=50_000_000).contains(&n) => n as usize,
        Some(n) => {
            err("max_exact_values", format!("{n} is out of range; use 100 to 50000000"));
            100_000
        }
    };
    let mut names = std::collections::HashSet::new();
    let mut custom_metrics = Vec::new();
    for (i, m) in raw.custom_metrics.iter().enumerate() {
        let f = format!("custom_metrics[{i}]");
        let kind = match m.kind.to_ascii_lowercase().trim_start_matches("custom_metric_type_") {
            "aggregate" => CustomKind::Aggregate,
            "derived" => CustomKind::Derived,
            "drift" => CustomKind::Drift,
            other => {
                err(
                    &format!("{f}.type"),
                    format!("custom metric '{}': '{other}' is not aggregate, derived or drift", m.name),
                );
                continue;
            }
        };
        if !is_identifier(&m.name) {
            err(
                &format!("{f}.name"),
                format!("custom metric name '{}' must be a SQL identifier (letters, digits, _)", m.name),
            );
        } else if PROFILE_METRICS.contains(&m.name.as_str())
            || DRIFT_METRICS.contains(&m.name.as_str())
            || !names.insert(m.name.clone())
        {
            err(&format!("{f}.name"), format!("custom metric '{}' clashes with another metric", m.name));
        }
        if let Some(t) = m.output_data_type.as_deref()
            && !t.eq_ignore_ascii_case("double")
            && !t.contains("\"double\"")
        {
            err(
                &format!("{f}.output_data_type"),
                format!("custom metric '{}': only double outputs are supported", m.name),
            );
        }
        if m.definition.trim().is_empty() {
            err(&format!("{f}.definition"), format!("custom metric '{}' has an empty definition", m.name));
        }
        let input_columns: Vec<String> =
            m.input_columns.clone().unwrap_or_default().into_iter().filter(|c| c != ":table").collect();
        custom_metrics.push(CustomMetric {
            kind,
            name: m.name.clone(),
            input_columns,
            definition: m.definition.clone(),
        });
    }
    let mut alerts = Vec::new();
    let mut alert_names = std::collections::HashSet::new();
    for (i, a) in raw.alerts.iter().enumerate() {
        let f = format!("alerts[{i}]");
        if a.name.trim().is_empty() || !alert_names.insert(a.name.clone()) {
            err(&format!("{f}.name"), format!("alert name '{}' is empty or used twice", a.name));
        }
        let custom = custom_metrics.iter().find(|c| c.name == a.metric);
        let table = if DRIFT_METRICS.contains(&a.metric.as_str()) || custom.is_some_and(|c| c.kind == CustomKind::Drift)
        {
            "drift"
        } else if PROFILE_METRICS.contains(&a.metric.as_str()) || custom.is_some() {
            "profile"
        } else {
            err(
                &format!("{f}.metric"),
                format!("alert '{}': unknown metric '{}'; use a profile or drift metric name", a.name, a.metric),
            );
            "profile"
        };
        let op = match a.op.trim() {
            ">" => Comparison::Gt,
            ">=" => Comparison::Ge,
            "<" => Comparison::Lt,
            "<=" => Comparison::Le,
            other => {
                err(&format!("{f}.op"), format!("alert '{}': '{other}' is not one of >, >=, <, <=", a.name));
                Comparison::Gt
            }
        };
        if !a.threshold.is_finite() {
            err(&format!("{f}.threshold"), format!("alert '{}': threshold must be a finite number", a.name));
        }
        let drift_type = if table == "drift" {
            match a.drift_type.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("BASELINE") => Some("BASELINE".to_string()),
                Some("CONSECUTIVE") => Some("CONSECUTIVE".to_string()),
                Some(other) => {
                    err(
                        &format!("{f}.drift_type"),
                        format!("alert '{}': '{other}' is not BASELINE or CONSECUTIVE", a.name),
                    );
                    None
                }
            }
        } else {
            None
        };
        if drift_type.as_deref() == Some("BASELINE") && raw.baseline.is_none() {
            err(&format!("{f}.drift_type"), format!("alert '{}' needs a baseline; set monitor.baseline", a.name));
        }
        let granularity = match a.granularity.as_deref() {
            None => granularities.first().map(|g| g.name.clone()).unwrap_or_default(),
            Some(g) => match Granularity::parse(g) {
                Ok(g) if granularities.iter().any(|x| x.name == g.name) => g.name,
                Ok(g) => {
                    err(
                        &format!("{f}.granularity"),
                        format!("alert '{}': '{}' is not one of the monitor's granularities", a.name, g.name),
                    );
                    g.name
                }
                Err(e) => {
                    err(&format!("{f}.granularity"), e.to_string());
                    String::new()
                }
            },
        };
        if a.slice_key.is_some() != a.slice_value.is_some() {
            err(
                &format!("{f}.slice_key"),
                format!("alert '{}': give both slice_key and slice_value, or neither", a.name),
            );
        }
        let consecutive_windows = a.consecutive_windows.unwrap_or(1);
        if !(1..=1000).contains(&consecutive_windows) {
            err(&format!("{f}.consecutive_windows"), format!("alert '{}': use 1 to 1000", a.name));
        }
        let webhook_url = a.webhook_url.clone().or_else(|| raw.webhook_url.clone());
        if let Some(u) = &webhook_url
            && !crate::webhook::valid_url(u)
        {
            err(
                &format!("{f}.webhook_url"),
                format!("alert '{}': webhook '{u}' must be an http:// or https:// URL", a.name),
            );
        }
        alerts.push(AlertRule {
            name: a.name.clone(),
            metric: a.metric.clone(),
            table,
            column: a.column.clone().unwrap_or_else(|| ":table".into()),
            drift_type,
            granularity,
            model_id: a.model_id.clone(),
            slice_key: a.slice_key.clone(),
            slice_value: a.slice_value.clone(),
            op,
            threshold: a.threshold,
            consecutive_windows,
            webhook_url,
        });
    }
    if let Some(u) = &raw.webhook_url
        && !crate::webhook::valid_url(u)
    {
        err("webhook_url", format!("'{u}' must be an http:// or https:// URL"));
    }
    let non_empty =
        |s: &Option<String>, default: &str| s.clone().filter(|s| !s.trim().is_empty()).unwrap_or(default.into());
    let spec = MonitorSpec {
        problem_type,
        infer_problem_type: raw.problem_type.is_none() && problem_default.is_none(),
        granularities,
        timestamp_col: non_empty(&raw.timestamp_col, "timestamp"),
        model_id_col: non_empty(&raw.model_id_col, "served_model"),
        prediction_col: non_empty(&raw.prediction_col, "prediction"),
        label_col: non_empty(&raw.label_col, "label"),
        columns: raw.columns.clone(),
        slicing_exprs: raw.slicing_exprs.clone(),
        filter: non_empty(&raw.filter, "status_code = 200"),
        baseline: raw.baseline.as_ref().map(|b| base.join(b)),
        refresh_interval,
        max_exact_values,
        output_dir: raw.output_dir.as_ref().map(|d| base.join(d)),
        custom_metrics,
        alerts,
    };
    if errs.is_empty() { Ok(spec) } else { Err(errs) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granularities_parse_and_align() {
        let h = Granularity::parse("1 hour").unwrap();
        assert_eq!((h.name.as_str(), h.width_us), ("1 hour", 3_600_000_000));
        assert_eq!(h.window_of(3_600_000_001), 3_600_000_000);
        assert_eq!(h.window_of(-1), -3_600_000_000);
        let w = Granularity::parse("1 week").unwrap();
        // 2026-11-26 (a Thursday) falls in the week starting Monday 2026-11-23
        let thu = 1_795_651_200_000_000; // 2026-11-26T00:00:00Z
        assert_eq!(w.window_of(thu), thu - 3 * 86_400_000_000);
        assert_eq!(Granularity::parse("5 MINUTES").unwrap().name, "5 minutes");
        assert_eq!(
            Granularity::parse("1 month").unwrap_err().to_string(),
            "granularity '1 month': unknown unit 'month'; use seconds, minutes, hours, days or weeks"
        );
        assert_eq!(
            Granularity::parse("x hours").unwrap_err().to_string(),
            "granularity 'x hours': 'x' is not a whole number"
        );
        assert!(Granularity::parse("hour").is_err());
        assert!(Granularity::parse("0 hours").is_err());
    }

    #[test]
    fn validation_names_fields() {
        let raw: RawMonitor = toml::from_str(
            r#"
            granularities = ["1 hour", "60 minutes"]
            problem_type = "ranking"
            [[custom_metrics]]
            type = "weird"
            name = "x"
            definition = "avg(1)"
            [[alerts]]
            name = "a"
            metric = "nope"
            op = "!="
            threshold = 1
            "#,
        )
        .unwrap();
        let errs = validate(&raw, "m", Path::new("."), None).unwrap_err();
        let text = format!("{errs:?}");
        for needle in ["listed twice", "ranking", "'weird'", "unknown metric 'nope'", "'!='"] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }
}
