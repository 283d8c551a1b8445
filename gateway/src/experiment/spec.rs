//! `[endpoints.experiment]`: how an endpoint's A/B test is analysed (which served model is the
//! champion, which label-based metric decides, the significance level, the data a verdict needs).

use serde::{Deserialize, Serialize};

/// The analysis settings as written; every field optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawExperiment {
    /// The served model candidates are compared with; default: the incumbent of a running
    /// rollout, else the route with the most traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub champion: Option<String>,
    /// `accuracy` (classification, default), `mean_absolute_error` (regression, default) or
    /// `outcome` (the mean of a numeric label, e.g. revenue or a 0/1 conversion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// For `outcome`: whether a larger mean is better (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub higher_is_better: Option<bool>,
    /// Significance level of the tests and 1 - confidence of the intervals (default 0.05).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Labelled rows each arm needs before a verdict (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
}

/// The label-based metric an experiment is decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Share of labelled rows whose predicted label equals the label (a rate: z-test).
    Accuracy,
    /// Mean of |prediction - label| (a mean: Welch's t-test; lower is better).
    MeanAbsoluteError,
    /// Mean of the numeric label itself (a mean: Welch's t-test).
    Outcome,
}

impl Metric {
    pub fn parse(s: &str) -> Option<Metric> {
        match s {
            "accuracy" => Some(Metric::Accuracy),
            "mean_absolute_error" | "mae" => Some(Metric::MeanAbsoluteError),
            "outcome" => Some(Metric::Outcome),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::MeanAbsoluteError => "mean_absolute_error",
            Metric::Outcome => "outcome",
        }
    }

    /// Whether it is a proportion (two-proportion z-test) rather than a mean (Welch's t-test).
    pub fn is_rate(self) -> bool {
        self == Metric::Accuracy
    }
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSpec {
    pub champion: Option<String>,
    /// `None`: chosen from the table (accuracy for classification, MAE for regression).
    pub metric: Option<Metric>,
    pub higher_is_better: Option<bool>,
    pub alpha: f64,
    pub min_samples: u64,
}

impl Default for ExperimentSpec {
    fn default() -> ExperimentSpec {
        ExperimentSpec { champion: None, metric: None, higher_is_better: None, alpha: 0.05, min_samples: 100 }
    }
}

/// Checks `raw`; errors are `(field, message)` under `field`.
pub fn validate(raw: &RawExperiment, field: &str, served: &[String]) -> Result<ExperimentSpec, Vec<(String, String)>> {
    let mut errs = Vec::new();
    if let Some(c) = &raw.champion
        && !served.contains(c)
    {
        errs.push((
            format!("{field}.champion"),
            format!("'{c}' is not a served model of this endpoint; use one of {served:?}"),
        ));
    }
    let metric = match raw.metric.as_deref() {
        None => None,
        Some(m) => match Metric::parse(m) {
            Some(m) => Some(m),
            None => {
                errs.push((
                    format!("{field}.metric"),
                    format!("unknown metric '{m}'; use accuracy, mean_absolute_error or outcome"),
                ));
                None
            }
        },
    };
    if raw.higher_is_better.is_some() && metric != Some(Metric::Outcome) {
        errs.push((format!("{field}.higher_is_better"), "only applies to metric = \"outcome\"".into()));
    }
    let alpha = raw.alpha.unwrap_or(0.05);
    if !(alpha > 0.0 && alpha < 0.5) {
        errs.push((format!("{field}.alpha"), format!("{alpha} is out of range; use a level in (0, 0.5), e.g. 0.05")));
    }
    let min_samples = raw.min_samples.unwrap_or(100);
    if min_samples < 2 {
        errs.push((format!("{field}.min_samples"), "use at least 2 (default 100)".into()));
    }
    if errs.is_empty() {
        Ok(ExperimentSpec {
            champion: raw.champion.clone(),
            metric,
            higher_is_better: raw.higher_is_better,
            alpha,
            min_samples,
        })
    } else {
        Err(errs)
    }
}
