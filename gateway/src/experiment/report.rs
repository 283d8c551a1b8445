//! The A/B report of an endpoint (`GET /experiments/{endpoint}`, `sluice experiment report`):
//! per served model, traffic against the configured split with a sample-ratio-mismatch check,
//! latency and errors, the label-based metric with its interval and its test against the
//! champion, a verdict; and the agreement of each shadow with the primary answers.

use std::collections::BTreeMap;

use serde::Serialize;
use sluice_stats::descriptive::quantile_sorted;
use sluice_stats::means::{mean_ci, welch_diff_ci, welch_ttest};
use sluice_stats::proportions::{proportion_ci, proportion_diff_ci, two_proportion_ztest};
use sluice_stats::srm::srm_test;

use super::scan::{Arm, Pairing, Prediction, Scan};
use super::spec::{ExperimentSpec, Metric};

/// Sample-ratio mismatch is flagged below this p-value (the usual SRM threshold).
pub const SRM_ALPHA: f64 = 0.001;

/// The traffic split in force from `start_us` on.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    pub start_us: i64,
    /// Served model -> traffic percentage.
    pub weights: BTreeMap<String, u32>,
}

/// What the report covers.
#[derive(Debug, Clone)]
pub struct Scope {
    pub endpoint: String,
    pub from_us: i64,
    pub to_us: i64,
    /// Splits in force over the window (the first starts at or before `from_us`).
    pub periods: Vec<Period>,
    pub champion: String,
    pub metric: Metric,
    pub higher_is_better: bool,
    pub alpha: f64,
    pub min_samples: u64,
}

impl Scope {
    /// The metric and direction: the spec's, else accuracy for label predictions and mean
    /// absolute error for numeric ones.
    pub fn metric_for(spec: &ExperimentSpec, prediction: Option<Prediction>) -> (Metric, bool) {
        let metric = spec.metric.unwrap_or(match prediction {
            Some(Prediction::Value) => Metric::MeanAbsoluteError,
            _ => Metric::Accuracy,
        });
        let higher = match metric {
            Metric::Accuracy => true,
            Metric::MeanAbsoluteError => false,
            Metric::Outcome => spec.higher_is_better.unwrap_or(true),
        };
        (metric, higher)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub endpoint: String,
    pub from: String,
    pub to: String,
    pub champion: String,
    pub metric: MetricInfo,
    pub alpha: f64,
    pub min_samples: u64,
    pub requests: u64,
    pub arms: Vec<ArmReport>,
    pub srm: SrmReport,
    pub shadows: Vec<ShadowReport>,
    /// Problems that make the numbers less trustworthy.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricInfo {
    pub name: &'static str,
    /// `two-proportion z-test` or `Welch's t-test`.
    pub test: &'static str,
    pub higher_is_better: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArmReport {
    pub served_model: String,
    pub is_champion: bool,
    pub requests: u64,
    /// Observed share of the window's requests.
    pub share: f64,
    /// Share expected from the traffic split(s) in force over the window.
    pub expected_share: f64,
    /// Traffic percentage configured now.
    pub configured_percent: u32,
    pub errors: u64,
    pub error_rate: Option<f64>,
    /// Wilson interval of the error rate.
    pub error_rate_ci: Option<(f64, f64)>,
    pub latency_ms: Option<Latency>,
    pub metric: MetricValue,
    /// The test against the champion (absent for the champion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_champion: Option<Comparison>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricValue {
    /// Labelled rows.
    pub n: u64,
    pub value: Option<f64>,
    /// Wilson (rates) or t (means) interval.
    pub ci: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Candidate minus champion.
    pub diff: Option<f64>,
    pub diff_ci: Option<(f64, f64)>,
    /// z or t.
    pub statistic: Option<f64>,
    /// Welch's degrees of freedom (means only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dof: Option<f64>,
    pub p_value: Option<f64>,
    /// `not enough data`, `no detectable difference`, `candidate better`, `candidate worse`.
    pub verdict: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct SrmReport {
    pub statistic: Option<f64>,
    pub dof: Option<u64>,
    pub p_value: Option<f64>,
    pub threshold: f64,
    /// p < threshold: the split is not what was configured.
    pub flagged: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    pub shadow: String,
    pub primary: String,
    pub overall: Agreement,
    pub windows: Vec<Agreement>,
    /// Rows of this shadow left out because their request id is not unique in the window.
    pub unpaired_rows: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Agreement {
    /// Start of the bucket (RFC 3339); for `overall`, the window's start.
    pub start: String,
    pub rows: u64,
    /// Share of rows with the same label (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement_rate: Option<f64>,
    /// Primary label -> shadow label -> rows (classification).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub confusion: BTreeMap<String, BTreeMap<String, u64>>,
    /// Mean |primary - shadow| (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_abs_diff: Option<f64>,
}

/// RFC 3339 (UTC, milliseconds) of microseconds since the epoch.
pub fn rfc3339(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    quantile_sorted(sorted, p).unwrap_or(f64::NAN)
}

/// Latency summary of `values` (unsorted).
pub fn latency(values: &[f64]) -> Option<Latency> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    Some(Latency { mean, p50: percentile(&v, 0.5), p90: percentile(&v, 0.9), p99: percentile(&v, 0.99) })
}

/// Agreement of one pairing.
pub fn agreement(start_us: i64, p: &Pairing, prediction: Prediction) -> Agreement {
    let mut confusion: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((a, b), n) in p.confusion.to_map() {
        *confusion.entry(a).or_default().entry(b).or_default() += n;
    }
    let label = prediction == Prediction::Label;
    Agreement {
        start: rfc3339(start_us),
        rows: p.rows,
        agreement_rate: (label && p.rows > 0).then(|| p.agree as f64 / p.rows as f64),
        confusion,
        mean_abs_diff: (!label && p.abs_diff.n > 0).then_some(p.abs_diff.mean),
    }
}

/// Sums pairings.
pub fn merge_pairings<'a>(items: impl Iterator<Item = &'a Pairing>) -> Pairing {
    let mut out = Pairing::default();
    let mut sum = 0.0;
    for p in items {
        out.rows += p.rows;
        out.agree += p.agree;
        out.confusion.merge(&p.confusion);
        sum += p.abs_diff.mean * p.abs_diff.n as f64;
        out.abs_diff.n += p.abs_diff.n;
    }
    if out.abs_diff.n > 0 {
        out.abs_diff.mean = sum / out.abs_diff.n as f64;
    }
    out
}

fn metric_value(arm: &Arm, metric: Metric, alpha: f64) -> MetricValue {
    let n = arm.metric.n;
    if n == 0 {
        return MetricValue { n, value: None, ci: None };
    }
    let ci = if metric.is_rate() {
        proportion_ci(arm.correct, n, alpha)
    } else {
        arm.metric.summary().and_then(|s| mean_ci(&s, alpha))
    };
    MetricValue { n, value: Some(arm.metric.mean), ci }
}

fn compare(champion: &Arm, arm: &Arm, scope: &Scope) -> Comparison {
    let enough = champion.metric.n >= scope.min_samples && arm.metric.n >= scope.min_samples;
    let (diff, diff_ci, statistic, dof, p_value) = if scope.metric.is_rate() {
        let z = two_proportion_ztest(champion.correct, champion.metric.n, arm.correct, arm.metric.n);
        let ci = proportion_diff_ci(champion.correct, champion.metric.n, arm.correct, arm.metric.n, scope.alpha);
        let diff = (champion.metric.n > 0 && arm.metric.n > 0).then_some(arm.metric.mean - champion.metric.mean);
        (diff, ci, z.map(|z| z.z), None, z.map(|z| z.p_value))
    } else {
        match (champion.metric.summary(), arm.metric.summary()) {
            (Some(a), Some(b)) => {
                let t = welch_ttest(&a, &b);
                (
                    Some(b.mean - a.mean),
                    welch_diff_ci(&a, &b, scope.alpha),
                    t.map(|t| t.t),
                    t.map(|t| t.dof),
                    t.map(|t| t.p_value),
                )
            }
            _ => (None, None, None, None, None),
        }
    };
    let verdict = match (enough, p_value, diff) {
        (false, _, _) | (_, None, _) | (_, _, None) => {
            // Identical, degenerate samples (e.g. every row correct in both arms) have no test.
            if enough && diff == Some(0.0) { "no detectable difference" } else { "not enough data" }
        }
        (true, Some(p), Some(d)) if p < scope.alpha && d != 0.0 => {
            if (d > 0.0) == scope.higher_is_better {
                "candidate better"
            } else {
                "candidate worse"
            }
        }
        _ => "no detectable difference",
    };
    Comparison { diff, diff_ci, statistic, dof, p_value, verdict }
}

/// Builds the report from a scan of the window.
pub fn build(scope: &Scope, scan: &Scan, configured: &BTreeMap<String, u32>, bucket_us: i64) -> Report {
    let mut warnings = Vec::new();
    // Every served model that is configured now, routed in the window, or seen.
    let mut names: Vec<String> = configured.keys().cloned().collect();
    for p in &scope.periods {
        names.extend(p.weights.keys().cloned());
    }
    names.extend(scan.arms.keys().cloned());
    names.sort();
    names.dedup();
    let empty = Arm { requests_by_period: vec![0; scope.periods.len().max(1)], ..Arm::default() };
    let arm_of = |n: &str| scan.arms.get(n).unwrap_or(&empty);
    let total: u64 = names.iter().map(|n| arm_of(n).requests).sum();
    // Expected share: the weight in force in each period, weighted by the period's requests.
    let period_total: Vec<u64> = (0..scope.periods.len().max(1))
        .map(|p| names.iter().map(|n| arm_of(n).requests_by_period.get(p).copied().unwrap_or(0)).sum())
        .collect();
    let expected: Vec<f64> = names
        .iter()
        .map(|n| {
            scope
                .periods
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let sum: u32 = p.weights.values().sum();
                    let w = p.weights.get(n).copied().unwrap_or(0);
                    if sum == 0 {
                        0.0
                    } else {
                        period_total.get(i).copied().unwrap_or(0) as f64 * f64::from(w) / f64::from(sum)
                    }
                })
                .sum::<f64>()
        })
        .collect();
    let observed: Vec<u64> = names.iter().map(|n| arm_of(n).requests).collect();
    let srm = if total == 0 { None } else { srm_test(&observed, &expected) };
    let flagged = srm.is_some_and(|s| s.p_value < SRM_ALPHA);
    if flagged {
        warnings.push(format!(
            "sample ratio mismatch (p = {:.3e} < {SRM_ALPHA}): traffic did not follow the configured split, so the \
             comparison may be biased; look for pinned requests (x-sluice-served-model), errors that were not logged, \
             or sampling",
            srm.map(|s| s.p_value).unwrap_or(0.0)
        ));
    }
    for (n, e) in names.iter().zip(&expected) {
        if *e == 0.0 && arm_of(n).requests > 0 {
            warnings.push(format!("'{n}' answered {} requests while its configured weight was 0", arm_of(n).requests));
        }
    }
    for (shadow, n) in scan.pairs_skipped.iter().filter(|(_, n)| **n > 0) {
        warnings.push(format!(
            "{n} rows of shadow '{shadow}' were not compared: their request id (x-request-id, which clients choose) \
             is not unique in the window, so their primary answer is ambiguous"
        ));
    }
    let champion = arm_of(&scope.champion);
    let arms = names
        .iter()
        .zip(&expected)
        .map(|(n, e)| {
            let a = arm_of(n);
            let is_champion = *n == scope.champion;
            ArmReport {
                served_model: n.clone(),
                is_champion,
                requests: a.requests,
                share: if total > 0 { a.requests as f64 / total as f64 } else { 0.0 },
                expected_share: if total > 0 { e / total as f64 } else { 0.0 },
                configured_percent: configured.get(n).copied().unwrap_or(0),
                errors: a.errors,
                error_rate: (a.requests > 0).then(|| a.errors as f64 / a.requests as f64),
                error_rate_ci: proportion_ci(a.errors, a.requests, scope.alpha),
                latency_ms: latency(&a.latencies_ms),
                metric: metric_value(a, scope.metric, scope.alpha),
                vs_champion: (!is_champion).then(|| compare(champion, a, scope)),
            }
        })
        .collect();
    let prediction = scan.prediction.unwrap_or(Prediction::None);
    let mut by_pair: BTreeMap<(String, String), Vec<(i64, &Pairing)>> = BTreeMap::new();
    for ((b, p, s), v) in &scan.pairs {
        by_pair.entry((s.clone(), p.clone())).or_default().push((*b, v));
    }
    let shadows = by_pair
        .into_iter()
        .map(|((shadow, primary), v)| {
            let overall = agreement(scope.from_us, &merge_pairings(v.iter().map(|(_, p)| *p)), prediction);
            let windows =
                if bucket_us > 0 { v.iter().map(|(b, p)| agreement(*b, p, prediction)).collect() } else { vec![] };
            let unpaired_rows = scan.pairs_skipped.get(&shadow).copied().unwrap_or(0);
            ShadowReport { shadow, primary, overall, windows, unpaired_rows }
        })
        .collect();
    Report {
        endpoint: scope.endpoint.clone(),
        from: rfc3339(scope.from_us),
        to: rfc3339(scope.to_us),
        champion: scope.champion.clone(),
        metric: MetricInfo {
            name: scope.metric.name(),
            test: if scope.metric.is_rate() { "two-proportion z-test" } else { "Welch's t-test" },
            higher_is_better: scope.higher_is_better,
        },
        alpha: scope.alpha,
        min_samples: scope.min_samples,
        requests: total,
        arms,
        srm: SrmReport {
            statistic: srm.map(|s| s.statistic),
            dof: srm.map(|s| s.dof),
            p_value: srm.map(|s| s.p_value),
            threshold: SRM_ALPHA,
            flagged,
        },
        shadows,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(requests_by_period: Vec<u64>, correct: u64, labelled: u64) -> Arm {
        let mut a = Arm { requests: requests_by_period.iter().sum(), requests_by_period, ..Arm::default() };
        for i in 0..labelled {
            let x = if i < correct { 1.0 } else { 0.0 };
            a.metric.push(x);
            a.correct += u64::from(x == 1.0);
        }
        a
    }

    fn scope(periods: Vec<Period>) -> Scope {
        Scope {
            endpoint: "e".into(),
            from_us: 0,
            to_us: 10,
            periods,
            champion: "a".into(),
            metric: Metric::Accuracy,
            higher_is_better: true,
            alpha: 0.05,
            min_samples: 100,
        }
    }

    fn weights(a: u32, b: u32) -> BTreeMap<String, u32> {
        [("a".to_string(), a), ("b".to_string(), b)].into_iter().collect()
    }

    #[test]
    fn expected_shares_follow_each_period_split() {
        // 100 requests under 50/50, then 100 under 90/10: expected a = 50 + 90 = 140 of 200
        let periods =
            vec![Period { start_us: 0, weights: weights(50, 50) }, Period { start_us: 5, weights: weights(90, 10) }];
        let mut scan = Scan::default();
        scan.arms.insert("a".into(), arm(vec![50, 90], 0, 0));
        scan.arms.insert("b".into(), arm(vec![50, 10], 0, 0));
        let r = build(&scope(periods), &scan, &weights(90, 10), 0);
        assert!((r.arms[0].expected_share - 0.7).abs() < 1e-12);
        assert_eq!(r.srm.statistic, Some(0.0));
        assert!(!r.srm.flagged);
        // the same counts judged against the final split alone would be a mismatch
        let r = build(&scope(vec![Period { start_us: 0, weights: weights(90, 10) }]), &scan, &weights(90, 10), 0);
        assert!(r.srm.flagged, "{:?}", r.srm);
        assert!(!r.warnings.is_empty());
    }

    #[test]
    fn verdicts() {
        let p = vec![Period { start_us: 0, weights: weights(50, 50) }];
        let verdict = |a: Arm, b: Arm| {
            let mut scan = Scan::default();
            scan.arms.insert("a".into(), a);
            scan.arms.insert("b".into(), b);
            let r = build(&scope(p.clone()), &scan, &weights(50, 50), 0);
            r.arms[1].vs_champion.as_ref().map(|c| c.verdict).unwrap_or("")
        };
        assert_eq!(verdict(arm(vec![500], 400, 500), arm(vec![500], 450, 500)), "candidate better");
        assert_eq!(verdict(arm(vec![500], 450, 500), arm(vec![500], 400, 500)), "candidate worse");
        assert_eq!(verdict(arm(vec![500], 400, 500), arm(vec![500], 404, 500)), "no detectable difference");
        assert_eq!(verdict(arm(vec![500], 40, 50), arm(vec![500], 50, 50)), "not enough data");
        assert_eq!(verdict(arm(vec![500], 200, 200), arm(vec![500], 200, 200)), "no detectable difference");
    }
}
