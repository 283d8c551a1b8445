//! Guardrails: the candidate against the incumbent over one step's window of the inference
//! table. A step is judged only once it has enough candidate requests (and, for shadow
//! agreement, enough paired answers); then every guardrail must pass.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sluice_stats::descriptive::quantile_sorted;
use sluice_stats::drift::{chi2_contingency, decile_counts, js_distance, psi, psi_counts};
use sluice_stats::ks::ks_2samp;

use super::spec::{DriftMetric, RolloutSpec};
use crate::experiment::report::merge_pairings;
use crate::experiment::scan::{Arm, Prediction, Scan};

/// One guardrail's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    pub name: String,
    /// The measured value (absent when it could not be measured).
    pub value: Option<f64>,
    pub threshold: f64,
    pub passed: bool,
    pub detail: String,
}

/// The verdict on a step's window.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Not enough data yet: why.
    Waiting(String),
    /// Every guardrail was evaluated (see [`Check::passed`]).
    Judged(Vec<Check>),
}

fn p99(arm: &Arm) -> Option<f64> {
    let mut v = arm.latencies_ms.clone();
    v.sort_by(f64::total_cmp);
    quantile_sorted(&v, 0.99)
}

/// Drift of the candidate's predictions from the incumbent's, and the p-value of the test that
/// they come from one distribution (chi-squared on predicted labels, KS on numbers).
pub fn prediction_drift(inc: &Arm, cand: &Arm, prediction: Prediction, metric: DriftMetric) -> Option<(f64, f64)> {
    match prediction {
        Prediction::Label => {
            let labels: BTreeSet<&String> = inc.label_counts.keys().chain(cand.label_counts.keys()).collect();
            let p: Vec<f64> = labels.iter().map(|l| inc.label_counts.get(*l).copied().unwrap_or(0) as f64).collect();
            let q: Vec<f64> = labels.iter().map(|l| cand.label_counts.get(*l).copied().unwrap_or(0) as f64).collect();
            let d = match metric {
                DriftMetric::Psi => psi_counts(&p, &q),
                DriftMetric::Js => js_distance(&p, &q),
            }?;
            Some((d, chi2_contingency(&p, &q)?.1))
        }
        Prediction::Value => {
            if inc.values.is_empty() || cand.values.is_empty() {
                return None;
            }
            let d = match metric {
                DriftMetric::Psi => psi(&inc.values, &cand.values)?,
                DriftMetric::Js => {
                    js_distance(&decile_counts(&inc.values, &inc.values)?, &decile_counts(&inc.values, &cand.values)?)?
                }
            };
            Some((d, ks_2samp(&inc.values, &cand.values)?.1))
        }
        Prediction::None => None,
    }
}

fn check(name: &str, value: Option<f64>, threshold: f64, passed: bool, detail: String) -> Check {
    Check { name: name.into(), value, threshold, passed, detail }
}

/// Judges the candidate against the incumbent on `scan` (one step's window). In the shadow step
/// (the candidate only gets mirrored copies) only shadow agreement is judged.
pub fn judge(spec: &RolloutSpec, incumbent: &str, scan: &Scan, shadow_step: bool) -> Judgement {
    let empty = Arm::default();
    let inc = scan.arms.get(incumbent).unwrap_or(&empty);
    let cand = scan.arms.get(&spec.candidate).unwrap_or(&empty);
    let g = &spec.guardrails;
    let pairing = merge_pairings(
        scan.pairs.iter().filter(|((_, p, s), _)| p == incumbent && *s == spec.candidate).map(|(_, v)| v),
    );
    if shadow_step {
        if pairing.rows < spec.min_requests {
            return Judgement::Waiting(format!(
                "{} of {} answers of the candidate's shadow paired with the incumbent's",
                pairing.rows, spec.min_requests
            ));
        }
        return Judgement::Judged(shadow_checks(spec, &pairing));
    }
    if cand.requests < spec.min_requests || inc.requests < spec.min_requests {
        return Judgement::Waiting(format!(
            "{} candidate and {} incumbent requests in this step's window; {} needed on each side",
            cand.requests, inc.requests, spec.min_requests
        ));
    }
    let prediction = scan.prediction.unwrap_or(Prediction::None);
    let rate = |a: &Arm| if a.requests == 0 { 0.0 } else { a.errors as f64 / a.requests as f64 };
    let (ci, cc) = (rate(inc), rate(cand));
    let mut checks = vec![
        check(
            "error_rate",
            Some(cc),
            g.max_error_rate,
            cc <= g.max_error_rate,
            format!("candidate {} errors in {} requests", cand.errors, cand.requests),
        ),
        check(
            "error_rate_increase",
            Some(cc - ci),
            g.max_error_rate_increase,
            cc - ci <= g.max_error_rate_increase,
            format!("candidate {cc:.4} vs incumbent {ci:.4} ({} requests)", inc.requests),
        ),
    ];
    match (p99(inc), p99(cand)) {
        (Some(a), Some(b)) => {
            let ratio = if a > 0.0 { b / a } else { f64::INFINITY };
            let passed = ratio <= g.max_p99_latency_ratio || b - a <= g.p99_latency_slack_ms;
            checks.push(check(
                "p99_latency_ratio",
                Some(ratio),
                g.max_p99_latency_ratio,
                passed,
                format!("p99 candidate {b:.3} ms vs incumbent {a:.3} ms (slack {} ms)", g.p99_latency_slack_ms),
            ));
        }
        _ => checks.push(check(
            "p99_latency_ratio",
            None,
            g.max_p99_latency_ratio,
            true,
            "skipped: no latencies in this window".into(),
        )),
    }
    let metric_name = match g.drift_metric {
        DriftMetric::Psi => "psi",
        DriftMetric::Js => "js",
    };
    match prediction_drift(inc, cand, prediction, g.drift_metric) {
        Some((d, p)) => checks.push(check(
            "prediction_drift",
            Some(d),
            g.max_prediction_drift,
            d <= g.max_prediction_drift || p >= g.drift_significance,
            format!(
                "{metric_name} of candidate predictions against the incumbent's; {} p = {p:.3e} (significant below {})",
                if prediction == Prediction::Value { "KS" } else { "chi-squared" },
                g.drift_significance
            ),
        )),
        None => checks.push(check(
            "prediction_drift",
            None,
            g.max_prediction_drift,
            true,
            "skipped: no comparable predictions on both sides".into(),
        )),
    }
    if inc.metric.n >= g.min_labels && cand.metric.n >= g.min_labels {
        // Accuracy for label predictions (higher is better), MAE for numbers (lower is better).
        let (a, b) = (inc.metric.mean, cand.metric.mean);
        let (name, passed, drop) = if prediction == Prediction::Value {
            ("quality_mae", b <= a * (1.0 + g.max_quality_drop), if a > 0.0 { b / a - 1.0 } else { 0.0 })
        } else {
            ("quality_accuracy", b >= a * (1.0 - g.max_quality_drop), if a > 0.0 { 1.0 - b / a } else { 0.0 })
        };
        checks.push(check(
            name,
            Some(drop),
            g.max_quality_drop,
            passed,
            format!("candidate {b:.4} vs incumbent {a:.4} on {} / {} labelled rows", cand.metric.n, inc.metric.n),
        ));
    } else {
        checks.push(check(
            "quality",
            None,
            g.max_quality_drop,
            true,
            format!(
                "skipped: {} / {} labelled rows (candidate / incumbent), {} needed on each side",
                cand.metric.n, inc.metric.n, g.min_labels
            ),
        ));
    }
    Judgement::Judged(checks)
}

/// Agreement of the candidate's shadow answers with the incumbent's.
fn shadow_checks(spec: &RolloutSpec, pairing: &crate::experiment::scan::Pairing) -> Vec<Check> {
    let g = &spec.guardrails;
    let mut checks = Vec::new();
    if let Some(min) = g.min_shadow_agreement {
        let rate = if pairing.rows > 0 { pairing.agree as f64 / pairing.rows as f64 } else { 0.0 };
        checks.push(check(
            "shadow_agreement",
            Some(rate),
            min,
            rate >= min,
            format!("{} of {} shadow answers agree with the incumbent", pairing.agree, pairing.rows),
        ));
    }
    if let Some(max) = g.max_shadow_mean_abs_diff {
        let d = pairing.abs_diff.mean;
        checks.push(check(
            "shadow_mean_abs_diff",
            Some(d),
            max,
            pairing.abs_diff.n > 0 && d <= max,
            format!("mean |incumbent - candidate shadow| over {} rows", pairing.abs_diff.n),
        ));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::spec::{RawRollout, parse};

    fn spec() -> RolloutSpec {
        let raw = RawRollout {
            candidate: "b".into(),
            incumbent: Some("a".into()),
            steps: vec![50],
            interval: "1m".into(),
            min_requests: Some(100),
            guardrails: None,
            webhook_url: None,
        };
        parse(&raw, "r").unwrap()
    }

    fn arm(requests: u64, errors: u64, fraud: u64) -> Arm {
        let mut a = Arm { requests, errors, latencies_ms: vec![1.0; requests as usize], ..Arm::default() };
        a.label_counts.insert("fraud".into(), fraud);
        a.label_counts.insert("legit".into(), requests - errors - fraud);
        a
    }

    fn scan(a: Arm, b: Arm) -> Scan {
        let mut s = Scan { prediction: Some(Prediction::Label), ..Scan::default() };
        s.arms.insert("a".into(), a);
        s.arms.insert("b".into(), b);
        s
    }

    fn failed(j: Judgement) -> Vec<String> {
        match j {
            Judgement::Judged(c) => c.into_iter().filter(|c| !c.passed).map(|c| c.name).collect(),
            Judgement::Waiting(w) => vec![format!("waiting: {w}")],
        }
    }

    #[test]
    fn judged_only_with_enough_requests_on_both_sides() {
        assert!(matches!(judge(&spec(), "a", &scan(arm(1000, 0, 100), arm(99, 0, 10)), false), Judgement::Waiting(_)));
        assert!(matches!(judge(&spec(), "a", &scan(arm(99, 0, 10), arm(1000, 0, 100)), false), Judgement::Waiting(_)));
        assert!(failed(judge(&spec(), "a", &scan(arm(1000, 0, 100), arm(200, 0, 20)), false)).is_empty());
    }

    #[test]
    fn p99_latency_fails_only_when_both_slower_by_the_ratio_and_the_slack() {
        let with_latency = |ms: f64| Arm { latencies_ms: vec![ms; 200], ..arm(200, 0, 20) };
        let judge_ms = |a: f64, b: f64| failed(judge(&spec(), "a", &scan(with_latency(a), with_latency(b)), false));
        assert_eq!(judge_ms(10.0, 30.0), vec!["p99_latency_ratio"]);
        assert!(judge_ms(1.0, 4.0).is_empty(), "3 ms slower is within the 5 ms slack");
        assert!(judge_ms(10.0, 19.0).is_empty(), "1.9x is within the 2x ratio");
    }

    #[test]
    fn errors_and_significant_drift_fail() {
        assert_eq!(
            failed(judge(&spec(), "a", &scan(arm(1000, 0, 100), arm(200, 10, 19)), false)),
            vec!["error_rate", "error_rate_increase"]
        );
        // a large PSI on few rows is not significant; the same shift on many rows is
        assert!(
            prediction_drift(&arm(100, 0, 1), &arm(100, 0, 10), Prediction::Label, DriftMetric::Psi).unwrap().0 > 0.2
        );
        assert!(failed(judge(&spec(), "a", &scan(arm(100, 0, 1), arm(100, 0, 10)), false)).is_empty());
        assert_eq!(
            failed(judge(&spec(), "a", &scan(arm(1000, 0, 50), arm(1000, 0, 200)), false)),
            vec!["prediction_drift"]
        );
    }
}
