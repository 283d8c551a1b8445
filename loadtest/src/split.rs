//! The served-model split: expected weights (from `--expect-split` or a Sluice admin API), the
//! observed share of each served model, and a chi-squared goodness-of-fit test of the counts
//! against the weights (`scipy.stats.chisquare(observed, expected)`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sluice_stats::srm::srm_test;

use crate::error::Error;

/// Expected weights per served model and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub source: String,
    pub weights: Vec<(String, f64)>,
}

/// Parses `champion=90,challenger=10` (weights need not sum to 100; they are normalised).
pub fn parse_weights(text: &str) -> Result<Vec<(String, f64)>, Error> {
    let bad =
        |why: String| Error::usage(format!("--expect-split '{text}': {why}; write it like champion=90,challenger=10"));
    let mut out: Vec<(String, f64)> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, w) = part.split_once('=').ok_or_else(|| bad(format!("'{part}' has no '='")))?;
        let name = name.trim();
        let w: f64 = w.trim().parse().map_err(|_| bad(format!("'{}' is not a number", w.trim())))?;
        if name.is_empty() || !(w.is_finite() && w >= 0.0) {
            return Err(bad(format!("'{part}' needs a name and a weight >= 0")));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(bad(format!("'{name}' appears twice")));
        }
        out.push((name.to_string(), w));
    }
    check_weights(out).map_err(|e| bad(e.to_string()))
}

/// Weights that cannot describe a split.
#[derive(Debug, thiserror::Error)]
#[error("the weights sum to 0")]
struct ZeroWeights;

fn check_weights(w: Vec<(String, f64)>) -> Result<Vec<(String, f64)>, ZeroWeights> {
    if w.iter().map(|(_, x)| x).sum::<f64>() <= 0.0 {
        return Err(ZeroWeights);
    }
    Ok(w)
}

/// Weights from a Sluice admin `GET /admin/endpoints/{name}` answer: each served model's
/// `traffic_percentage`; shadows (`mirror_percent` set) never answer and are left out.
pub fn weights_from_admin(view: &Value) -> Result<Vec<(String, f64)>, Error> {
    let models = view
        .get("served_models")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::connect("the admin answer has no served_models list"))?;
    let mut out = Vec::new();
    for m in models {
        let name = m.get("name").and_then(Value::as_str);
        let pct = m.get("traffic_percentage").and_then(Value::as_f64);
        let (Some(name), Some(pct)) = (name, pct) else {
            return Err(Error::connect(format!("admin served model without name or traffic_percentage: {m}")));
        };
        if m.get("mirror_percent").is_some_and(|v| !v.is_null()) {
            continue;
        }
        out.push((name.to_string(), pct));
    }
    check_weights(out).map_err(|e| Error::connect(format!("admin endpoint weights: {e}")))
}

/// A chi-squared goodness-of-fit result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChiSquared {
    /// Infinite (null in JSON) when a model with expected weight 0 answered.
    pub statistic: f64,
    pub dof: usize,
    pub p_value: f64,
}

/// Chi-squared goodness of fit of `observed` counts against `weights` (same order), as
/// `scipy.stats.chisquare(observed, sum(observed) * weights / sum(weights))`. Categories with
/// weight 0 are left out, unless they were observed: then the statistic is infinite and p is 0.
/// `None` with no observations or fewer than two categories of positive weight.
///
/// Unlike the gateway's sample-ratio-mismatch check ([`srm_test`], which computes the rest), an
/// answer from a model that should get no traffic is a mismatch here: the load tester checks a
/// split, and nothing should reach a model at weight 0.
pub fn goodness_of_fit(observed: &[u64], weights: &[f64]) -> Option<ChiSquared> {
    let n: u64 = observed.iter().sum();
    let positive = weights.iter().filter(|&&w| w > 0.0).count();
    if n == 0 || observed.len() != weights.len() || positive < 2 {
        return None;
    }
    if observed.iter().zip(weights).any(|(&o, &w)| w <= 0.0 && o > 0) {
        return Some(ChiSquared { statistic: f64::INFINITY, dof: positive - 1, p_value: 0.0 });
    }
    let srm = srm_test(observed, weights)?;
    Some(ChiSquared { statistic: srm.statistic, dof: srm.dof as usize, p_value: srm.p_value })
}

/// One served model's observed and expected share.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelShare {
    pub name: String,
    pub observed: u64,
    pub observed_pct: f64,
    pub expected_pct: f64,
    /// observed_pct - expected_pct, in percentage points.
    pub deviation_pp: f64,
}

/// The observed split against the expected one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitResult {
    /// Where the expected weights came from.
    pub expected_from: String,
    /// Where the served model of each answer was read.
    pub observed_from: String,
    /// Expected models first (in the order given), then any other model that answered.
    pub models: Vec<ModelShare>,
    /// Successful answers that named no served model (left out of the shares and the test).
    pub unreported: u64,
    pub chi_squared: Option<ChiSquared>,
    /// Largest |deviation_pp|.
    pub max_deviation_pp: Option<f64>,
    pub note: Option<String>,
}

/// Compares the served counts with the expected weights.
pub fn compare(
    served: &BTreeMap<String, u64>,
    unreported: u64,
    expected: &Expected,
    observed_from: &str,
) -> SplitResult {
    let mut names: Vec<(String, f64)> = expected.weights.clone();
    for name in served.keys() {
        if !names.iter().any(|(n, _)| n == name) {
            names.push((name.clone(), 0.0));
        }
    }
    let counts: Vec<u64> = names.iter().map(|(n, _)| served.get(n).copied().unwrap_or(0)).collect();
    let weights: Vec<f64> = names.iter().map(|(_, w)| *w).collect();
    let n: u64 = counts.iter().sum();
    let total_w: f64 = weights.iter().sum();
    let note = if n == 0 {
        Some(if unreported > 0 {
            format!("no answer named its served model ({observed_from} was absent); the split cannot be checked")
        } else {
            "no successful answer; the split cannot be checked".to_string()
        })
    } else {
        None
    };
    let models: Vec<ModelShare> = if n == 0 {
        Vec::new()
    } else {
        names
            .iter()
            .zip(&counts)
            .map(|((name, w), &o)| {
                let observed_pct = 100.0 * o as f64 / n as f64;
                let expected_pct = 100.0 * w / total_w;
                ModelShare {
                    name: name.clone(),
                    observed: o,
                    observed_pct,
                    expected_pct,
                    deviation_pp: observed_pct - expected_pct,
                }
            })
            .collect()
    };
    let max_deviation_pp = models.iter().map(|m| m.deviation_pp.abs()).reduce(f64::max);
    SplitResult {
        expected_from: expected.source.clone(),
        observed_from: observed_from.to_string(),
        chi_squared: goodness_of_fit(&counts, &weights),
        models,
        unreported,
        max_deviation_pp,
        note,
    }
}
