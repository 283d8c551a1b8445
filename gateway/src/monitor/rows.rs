//! Metric rows from accumulators: one profile row per column (and `:table`) of a group, and
//! drift rows comparing a group with the previous window or the baseline.

use std::sync::Arc;

use sluice_stats::classification::{roc_auc_binary, roc_auc_ovr_macro};
use sluice_stats::descriptive::quantile_sorted;
use sluice_stats::drift::{chi2_contingency, js_distance, linf_distance, psi, tv_distance, wasserstein};
use sluice_stats::ks::ks_2samp;

use super::accum::{ColAcc, GroupAcc, NumAcc, QualityAcc, StrAcc};
use super::spec::ProblemType;

/// Where a row sits: window, granularity, model and slice.
#[derive(Debug, Clone, PartialEq)]
pub struct RowKey {
    pub window_start: i64,
    pub window_end: i64,
    pub granularity: Arc<str>,
    pub model_id: Option<Arc<str>>,
    pub slice_key: Option<Arc<str>>,
    pub slice_value: Option<Arc<str>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quality {
    pub accuracy: Option<f64>,
    pub precision: Option<(f64, f64)>,
    pub recall: Option<(f64, f64)>,
    pub f1: Option<(f64, f64)>,
    pub confusion: Option<(Vec<String>, Vec<Vec<i64>>)>,
    pub roc_auc: Option<f64>,
    pub mse: Option<f64>,
    pub rmse: Option<f64>,
    pub mae: Option<f64>,
    pub mape: Option<f64>,
    pub r2: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    pub key: RowKey,
    /// `INPUT` (the monitored table) or `BASELINE` (the baseline, beside each window's rows).
    pub log_type: &'static str,
    pub column_name: String,
    pub data_type: &'static str,
    pub count: i64,
    pub num_nulls: Option<i64>,
    pub num_nan: Option<i64>,
    pub num_zeros: Option<i64>,
    pub distinct_count: Option<i64>,
    pub percent_null: Option<f64>,
    pub percent_nan: Option<f64>,
    pub percent_zeros: Option<f64>,
    pub percent_distinct: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub avg: Option<f64>,
    pub stddev: Option<f64>,
    pub median: Option<f64>,
    pub quantiles: Option<Vec<f64>>,
    pub min_length: Option<f64>,
    pub max_length: Option<f64>,
    pub avg_length: Option<f64>,
    pub frequent_items: Option<Vec<(String, i64)>>,
    pub non_null_columns: Option<Vec<String>>,
    pub quality: Quality,
    /// Custom aggregate and derived metrics, in config order.
    pub custom: Vec<Option<f64>>,
}

impl ProfileRow {
    /// A built-in numeric metric by name (for derived metrics, alerts and gauges).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let q = &self.quality;
        match name {
            "count" => Some(self.count as f64),
            "num_nulls" => self.num_nulls.map(|v| v as f64),
            "num_nan" => self.num_nan.map(|v| v as f64),
            "num_zeros" => self.num_zeros.map(|v| v as f64),
            "distinct_count" => self.distinct_count.map(|v| v as f64),
            "percent_null" => self.percent_null,
            "percent_nan" => self.percent_nan,
            "percent_zeros" => self.percent_zeros,
            "percent_distinct" => self.percent_distinct,
            "min" => self.min,
            "max" => self.max,
            "avg" => self.avg,
            "stddev" => self.stddev,
            "median" => self.median,
            "min_length" => self.min_length,
            "max_length" => self.max_length,
            "avg_length" => self.avg_length,
            "accuracy_score" => q.accuracy,
            "precision.macro" => q.precision.map(|p| p.0),
            "precision.weighted" => q.precision.map(|p| p.1),
            "recall.macro" => q.recall.map(|p| p.0),
            "recall.weighted" => q.recall.map(|p| p.1),
            "f1_score.macro" => q.f1.map(|p| p.0),
            "f1_score.weighted" => q.f1.map(|p| p.1),
            "roc_auc_score" => q.roc_auc,
            "mean_squared_error" => q.mse,
            "root_mean_squared_error" => q.rmse,
            "mean_absolute_error" => q.mae,
            "mean_absolute_percentage_error" => q.mape,
            "r2_score" => q.r2,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DriftRow {
    pub key: RowKey,
    /// The comparison window (CONSECUTIVE); None for BASELINE.
    pub window_cmp: Option<(i64, i64)>,
    pub drift_type: &'static str,
    pub column_name: String,
    pub data_type: &'static str,
    pub count_delta: i64,
    pub avg_delta: Option<f64>,
    pub percent_null_delta: Option<f64>,
    pub percent_zeros_delta: Option<f64>,
    pub percent_distinct_delta: Option<f64>,
    pub ks_test: Option<(f64, f64)>,
    pub wasserstein_distance: Option<f64>,
    pub population_stability_index: Option<f64>,
    pub js_distance: Option<f64>,
    pub chi_squared_test: Option<(f64, f64)>,
    pub tv_distance: Option<f64>,
    pub l_infinity_distance: Option<f64>,
    pub custom: Vec<Option<f64>>,
}

impl DriftRow {
    pub fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "count_delta" => Some(self.count_delta as f64),
            "avg_delta" => self.avg_delta,
            "percent_null_delta" => self.percent_null_delta,
            "percent_zeros_delta" => self.percent_zeros_delta,
            "percent_distinct_delta" => self.percent_distinct_delta,
            "ks_test.statistic" => self.ks_test.map(|t| t.0),
            "ks_test.pvalue" => self.ks_test.map(|t| t.1),
            "wasserstein_distance" => self.wasserstein_distance,
            "population_stability_index" => self.population_stability_index,
            "js_distance" => self.js_distance,
            "chi_squared_test.statistic" => self.chi_squared_test.map(|t| t.0),
            "chi_squared_test.pvalue" => self.chi_squared_test.map(|t| t.1),
            "tv_distance" => self.tv_distance,
            "l_infinity_distance" => self.l_infinity_distance,
            _ => None,
        }
    }
}

fn pct(x: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| 100.0 * x as f64 / of as f64)
}

const QUANTILES: usize = 101;

impl ProfileRow {
    /// A row with every metric unset.
    fn empty(key: &RowKey, column_name: &str, data_type: &'static str, count: u64) -> ProfileRow {
        ProfileRow {
            key: key.clone(),
            log_type: "INPUT",
            column_name: column_name.to_string(),
            data_type,
            count: count as i64,
            num_nulls: None,
            num_nan: None,
            num_zeros: None,
            distinct_count: None,
            percent_null: None,
            percent_nan: None,
            percent_zeros: None,
            percent_distinct: None,
            min: None,
            max: None,
            avg: None,
            stddev: None,
            median: None,
            quantiles: None,
            min_length: None,
            max_length: None,
            avg_length: None,
            frequent_items: None,
            non_null_columns: None,
            quality: Quality::default(),
            custom: Vec::new(),
        }
    }
}

fn num_profile(key: &RowKey, name: &str, a: &NumAcc) -> ProfileRow {
    let has = a.n > 0;
    let distinct = a.distinct();
    ProfileRow {
        num_nulls: Some(a.nulls as i64),
        num_nan: Some(a.nan as i64),
        num_zeros: Some(a.zeros as i64),
        distinct_count: Some(distinct as i64),
        percent_null: pct(a.nulls, a.rows),
        percent_nan: pct(a.nan, a.rows),
        percent_zeros: pct(a.zeros, a.rows),
        percent_distinct: pct(distinct, a.rows),
        min: has.then_some(a.min),
        max: has.then_some(a.max),
        avg: a.avg(),
        stddev: a.stddev(),
        median: quantile_sorted(&a.values, 0.5),
        quantiles: has.then(|| {
            (0..QUANTILES).filter_map(|i| quantile_sorted(&a.values, i as f64 / (QUANTILES - 1) as f64)).collect()
        }),
        ..ProfileRow::empty(key, name, "double", a.rows)
    }
}

fn str_profile(key: &RowKey, name: &str, a: &StrAcc) -> ProfileRow {
    let has = a.n > 0;
    let distinct = a.distinct();
    ProfileRow {
        num_nulls: Some(a.nulls as i64),
        distinct_count: Some(distinct as i64),
        percent_null: pct(a.nulls, a.rows),
        percent_distinct: pct(distinct, a.rows),
        min_length: has.then_some(a.len_min as f64),
        max_length: has.then_some(a.len_max as f64),
        avg_length: has.then(|| a.len_sum as f64 / a.n as f64),
        frequent_items: Some(a.top(10).into_iter().map(|(s, c)| (s, c as i64)).collect()),
        ..ProfileRow::empty(key, name, "string", a.rows)
    }
}

fn classification(q: &QualityAcc) -> Quality {
    let cells = q.confusion.to_map();
    let total: u64 = cells.values().sum();
    if total == 0 {
        return Quality::default();
    }
    let mut labels: Vec<String> = cells.keys().flat_map(|(t, p)| [t.clone(), p.clone()]).collect();
    labels.sort();
    labels.dedup();
    let idx = |s: &str| labels.binary_search_by(|l| l.as_str().cmp(s)).unwrap_or(0);
    let k = labels.len();
    let mut m = vec![vec![0i64; k]; k];
    for ((t, p), c) in &cells {
        if let Some(cell) = m.get_mut(idx(t)).and_then(|r| r.get_mut(idx(p))) {
            *cell += *c as i64;
        }
    }
    let n = total as f64;
    let col_sum = |j: usize| -> i64 { m.iter().filter_map(|r| r.get(j)).sum() };
    let row_sum = |i: usize| -> i64 { m.get(i).map(|r| r.iter().sum()).unwrap_or(0) };
    let (mut p_macro, mut r_macro, mut f_macro) = (0.0, 0.0, 0.0);
    let (mut p_w, mut r_w, mut f_w) = (0.0, 0.0, 0.0);
    for i in 0..k {
        let tp = m.get(i).and_then(|r| r.get(i)).copied().unwrap_or(0) as f64;
        let (pred, support) = (col_sum(i) as f64, row_sum(i) as f64);
        let p = if pred > 0.0 { tp / pred } else { 0.0 };
        let r = if support > 0.0 { tp / support } else { 0.0 };
        // sklearn: F1 = 2TP / (2TP + FP + FN), 0 when that is 0/0
        let denom = pred + support;
        let f = if denom > 0.0 { 2.0 * tp / denom } else { 0.0 };
        p_macro += p;
        r_macro += r;
        f_macro += f;
        p_w += p * support;
        r_w += r * support;
        f_w += f * support;
    }
    let kf = k as f64;
    let roc_auc = roc_auc(q);
    Quality {
        accuracy: Some(q.correct as f64 / n),
        precision: Some((p_macro / kf, p_w / n)),
        recall: Some((r_macro / kf, r_w / n)),
        f1: Some((f_macro / kf, f_w / n)),
        confusion: Some((labels, m)),
        roc_auc,
        ..Quality::default()
    }
}

fn roc_auc(q: &QualityAcc) -> Option<f64> {
    let mut classes: Vec<&str> = q.scored.iter().flat_map(|(_, p)| p.iter().map(|(c, _)| c.as_str())).collect();
    classes.sort_unstable();
    classes.dedup();
    let prob = |p: &[(String, f64)], c: &str| p.iter().find(|(k, _)| k == c).map(|(_, v)| *v).unwrap_or(0.0);
    match classes.len() {
        2 => {
            let pos = *classes.get(1)?;
            let y: Vec<bool> = q.scored.iter().map(|(t, _)| t == pos).collect();
            let s: Vec<f64> = q.scored.iter().map(|(_, p)| prob(p, pos)).collect();
            roc_auc_binary(&y, &s)
        }
        k if k > 2 => {
            let mut y = Vec::with_capacity(q.scored.len());
            for (t, _) in &q.scored {
                y.push(classes.iter().position(|c| c == t)?);
            }
            let scores: Vec<Vec<f64>> =
                q.scored.iter().map(|(_, p)| classes.iter().map(|c| prob(p, c)).collect()).collect();
            roc_auc_ovr_macro(&y, &scores, k)
        }
        _ => None,
    }
}

fn regression(q: &QualityAcc) -> Quality {
    if q.n == 0 {
        return Quality::default();
    }
    let n = q.n as f64;
    let mse = q.sse / n;
    let r2 = (q.n >= 2).then(|| {
        let ss = q.y_ss();
        if ss == 0.0 { if q.sse == 0.0 { 1.0 } else { 0.0 } } else { 1.0 - q.sse / ss }
    });
    Quality {
        mse: Some(mse),
        rmse: Some(mse.sqrt()),
        mae: Some(q.sae / n),
        mape: Some(q.sape / n),
        r2,
        ..Quality::default()
    }
}

/// The profile rows of one group: `:table` first, then each column.
pub fn profile(key: &RowKey, names: &[String], g: &GroupAcc, problem: ProblemType) -> Vec<ProfileRow> {
    let quality = match problem {
        ProblemType::Classification => classification(&g.quality),
        ProblemType::Regression => regression(&g.quality),
    };
    let non_null: Vec<String> =
        names.iter().zip(&g.cols).filter(|(_, c)| c.rows() > c.nulls()).map(|(n, _)| n.clone()).collect();
    let mut rows = vec![ProfileRow {
        non_null_columns: Some(non_null),
        quality,
        ..ProfileRow::empty(key, ":table", "table", g.rows)
    }];
    for (name, c) in names.iter().zip(&g.cols) {
        rows.push(match c {
            ColAcc::Num(a) => num_profile(key, name, a),
            ColAcc::Str(a) => str_profile(key, name, a),
        });
    }
    rows
}

fn delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? - b?)
}

/// Drift rows of group `cur` against `base` (same columns): `:table` first, then each column.
pub fn drift(
    key: &RowKey,
    names: &[String],
    cur: &GroupAcc,
    base: &GroupAcc,
    drift_type: &'static str,
    window_cmp: Option<(i64, i64)>,
) -> Vec<DriftRow> {
    let empty = |column_name: String, data_type: &'static str, count_delta: i64| DriftRow {
        key: key.clone(),
        window_cmp,
        drift_type,
        column_name,
        data_type,
        count_delta,
        avg_delta: None,
        percent_null_delta: None,
        percent_zeros_delta: None,
        percent_distinct_delta: None,
        ks_test: None,
        wasserstein_distance: None,
        population_stability_index: None,
        js_distance: None,
        chi_squared_test: None,
        tv_distance: None,
        l_infinity_distance: None,
        custom: Vec::new(),
    };
    let mut rows = vec![empty(":table".into(), "table", cur.rows as i64 - base.rows as i64)];
    for ((name, c), b) in names.iter().zip(&cur.cols).zip(&base.cols) {
        let mut r = empty(name.clone(), "double", c.rows() as i64 - b.rows() as i64);
        r.percent_null_delta = delta(pct(c.nulls(), c.rows()), pct(b.nulls(), b.rows()));
        r.percent_distinct_delta = delta(pct(c.distinct(), c.rows()), pct(b.distinct(), b.rows()));
        match (c, b) {
            (ColAcc::Num(c), ColAcc::Num(b)) => {
                r.percent_zeros_delta = delta(pct(c.zeros, c.rows), pct(b.zeros, b.rows));
                r.avg_delta = delta(c.avg(), b.avg());
                r.ks_test = ks_2samp(&c.values, &b.values);
                r.wasserstein_distance = wasserstein(&c.values, &b.values);
                r.population_stability_index = psi(&b.values, &c.values);
            }
            (ColAcc::Str(c), ColAcc::Str(b)) => {
                r.data_type = "string";
                if c.n > 0 && b.n > 0 {
                    let mut cats: Vec<&String> = c.counts.keys().chain(b.counts.keys()).collect();
                    cats.sort();
                    cats.dedup();
                    let count = |a: &StrAcc, k: &String| a.counts.get(k).copied().unwrap_or(0) as f64;
                    let q: Vec<f64> = cats.iter().map(|k| count(c, k)).collect();
                    let p: Vec<f64> = cats.iter().map(|k| count(b, k)).collect();
                    r.chi_squared_test = chi2_contingency(&p, &q);
                    r.js_distance = js_distance(&p, &q);
                    r.tv_distance = tv_distance(&p, &q);
                    r.l_infinity_distance = linf_distance(&p, &q);
                }
            }
            // A column whose type differs from the baseline's: nothing comparable.
            _ => r.data_type = if matches!(c, ColAcc::Str(_)) { "string" } else { "double" },
        }
        rows.push(r);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::classes::{OTHER, TOP_CLASSES};

    #[test]
    fn quality_over_100000_distinct_labels_is_bounded() {
        let mut q = QualityAcc::default();
        for i in 0..100_000 {
            let l = format!("label-{i}");
            // every third row correct, with labels no two rows share
            let p = if i % 3 == 0 { l.clone() } else { format!("other-{i}") };
            q.push_class(&l, &p, None, 0);
            q.push_class("cat", "cat", None, 0);
        }
        let quality = classification(&q);
        let (labels, m) = quality.confusion.unwrap();
        assert!(labels.len() <= TOP_CLASSES + 1, "{} classes", labels.len());
        assert!(labels.iter().any(|l| l == OTHER) && labels.iter().any(|l| l == "cat"));
        assert_eq!(m.iter().flatten().sum::<i64>(), 200_000);
        // accuracy is exact: folded classes do not turn wrong answers into right ones
        let right = 100_000 + 33_334;
        assert!((quality.accuracy.unwrap() - right as f64 / 200_000.0).abs() < 1e-12);
    }
}
