//! Service-level objectives checked after the run. Any failed check makes the exit code 2.

use serde::Serialize;

use crate::recorder::Tally;
use crate::split::SplitResult;

/// The limits asked for (each optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SloLimits {
    pub max_p99_ms: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub min_rps: Option<f64>,
    pub max_split_deviation: Option<f64>,
    pub min_split_pvalue: Option<f64>,
}

impl SloLimits {
    /// Whether a split check is asked for (it needs expected weights).
    pub fn needs_split(&self) -> bool {
        self.max_split_deviation.is_some() || self.min_split_pvalue.is_some()
    }
}

/// One check: the value measured (`None` when it could not be measured, which fails) against its limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloCheck {
    /// The flag's name without dashes, e.g. `max_p99_ms`.
    pub name: &'static str,
    pub limit: f64,
    pub value: Option<f64>,
    pub passed: bool,
    /// A sentence for the table: what was compared and why it failed.
    pub message: String,
}

fn check(name: &'static str, what: &str, unit: &str, value: Option<f64>, limit: f64, upper: bool) -> SloCheck {
    let passed = value.is_some_and(|v| if upper { v <= limit } else { v >= limit });
    let op = if upper { "<=" } else { ">=" };
    let message = match value {
        Some(v) => format!("{what} {v:.4}{unit} {op} {limit}{unit}"),
        None => format!("{what} not available (limit {op} {limit}{unit})"),
    };
    SloCheck { name, limit, value, passed, message }
}

/// Evaluates every limit against the whole run (`measured_secs` of measured time).
pub fn evaluate(limits: &SloLimits, all: &Tally, measured_secs: f64, split: Option<&SplitResult>) -> Vec<SloCheck> {
    let mut out = Vec::new();
    if let Some(l) = limits.max_p99_ms {
        out.push(check("max_p99_ms", "p99 latency", " ms", all.quantile_ms(0.99), l, true));
    }
    if let Some(l) = limits.max_error_rate {
        let rate = (all.total > 0).then(|| all.error_rate());
        out.push(check("max_error_rate", "error rate", "", rate, l, true));
    }
    if let Some(l) = limits.min_rps {
        let rps = (measured_secs > 0.0).then(|| all.ok as f64 / measured_secs);
        out.push(check("min_rps", "throughput (successful req/s)", "", rps, l, false));
    }
    if let Some(l) = limits.max_split_deviation {
        let dev = split.and_then(|s| s.max_deviation_pp);
        out.push(check("max_split_deviation", "largest split deviation", " pp", dev, l, true));
    }
    if let Some(l) = limits.min_split_pvalue {
        let p = split.and_then(|s| s.chi_squared).map(|c| c.p_value);
        out.push(check("min_split_pvalue", "split chi-squared p-value", "", p, l, false));
    }
    out
}
