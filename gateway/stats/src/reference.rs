//! Test support: the reference values that the Python scripts print (one generated file per
//! script: [`monitor`] from `scripts/monitor-stats-reference.py`, [`experiment`] from
//! `scripts/experiment-stats-reference.py`; regenerate them, do not edit them) and the one
//! tolerance every check uses, 1e-9 absolute plus 1e-9 relative.

#![allow(clippy::indexing_slicing, clippy::float_cmp)]

pub(crate) mod experiment;
pub(crate) mod monitor;

use crate::descriptive::Summary;

/// Absolute tolerance for every statistic, plus the same relative tolerance for large values.
const TOL: f64 = 1e-9;

/// `got` is within the tolerance of `expected`; an infinite `expected` must be met exactly.
#[track_caller]
pub(crate) fn assert_close(got: f64, expected: f64, what: &str) {
    if expected.is_infinite() {
        assert_eq!(got, expected, "{what}");
        return;
    }
    let ok = (got - expected).abs() <= TOL + TOL * expected.abs();
    assert!(ok, "{what}: got {got:e}, expected {expected:e} (diff {:e})", (got - expected).abs());
}

/// A `(statistic, pvalue)` pair within the tolerance (`None` fails).
#[track_caller]
pub(crate) fn assert_pair(got: Option<(f64, f64)>, expected: (f64, f64), what: &str) {
    let got = got.unwrap_or((f64::NAN, f64::NAN));
    assert_close(got.0, expected.0, &format!("{what} statistic"));
    assert_close(got.1, expected.1, &format!("{what} pvalue"));
}

/// An interval within the tolerance; an expected low end of NaN (the reference gives NaN) wants
/// `None`.
#[track_caller]
pub(crate) fn assert_interval(got: Option<(f64, f64)>, expected: (f64, f64), what: &str) {
    if expected.0.is_nan() {
        assert_eq!(got, None, "{what}: the reference gives NaN");
        return;
    }
    let got = got.unwrap_or((f64::NAN, f64::NAN));
    assert_close(got.0, expected.0, &format!("{what} low"));
    assert_close(got.1, expected.1, &format!("{what} high"));
}

/// The deterministic samples of the monitor script's `grid`: u_i = ((i * mult) % n) / n, then
/// u + c * u * (1 - u), with the same floating-point operations in the same order.
pub(crate) fn grid(n: usize, mult: usize, c: f64) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let u = ((i * mult) % n) as f64 / n as f64;
            u + c * u * (1.0 - u)
        })
        .collect()
}

/// A summary from the experiment script's `(n, mean, var)` tuples.
pub(crate) fn summary(s: (u64, f64, f64)) -> Summary {
    Summary { n: s.0, mean: s.1, var: s.2 }
}

/// (A data, B data, numpy summary of A, of B).
pub(crate) type Dataset = (&'static [f64], &'static [f64], (u64, f64, f64), (u64, f64, f64));
/// (tag, data, expected (t, dof, p, diff), expected (alpha, low, high) rows).
pub(crate) type WelchCase = (&'static str, Dataset, (f64, f64, f64, f64), &'static [(f64, f64, f64)]);

/// The experiment script's two-sample datasets W1..W5 with their summaries, Welch tests and
/// difference intervals.
pub(crate) fn welch_datasets() -> Vec<WelchCase> {
    use experiment::*;
    vec![
        ("W1", (&W1_A, &W1_B, W1_SUMMARY_A, W1_SUMMARY_B), W1_TTEST, &W1_DIFF_CI),
        ("W2", (&W2_A, &W2_B, W2_SUMMARY_A, W2_SUMMARY_B), W2_TTEST, &W2_DIFF_CI),
        ("W3", (&W3_A, &W3_B, W3_SUMMARY_A, W3_SUMMARY_B), W3_TTEST, &W3_DIFF_CI),
        ("W4", (&W4_A, &W4_B, W4_SUMMARY_A, W4_SUMMARY_B), W4_TTEST, &W4_DIFF_CI),
        ("W5", (&W5_A, &W5_B, W5_SUMMARY_A, W5_SUMMARY_B), W5_TTEST, &W5_DIFF_CI),
    ]
}
