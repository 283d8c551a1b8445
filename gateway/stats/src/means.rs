//! Tests and intervals for means (a numeric metric per arm, given as a [`Summary`]): Welch's
//! t-test and interval of a difference, and Student's t interval of one mean, equal to their
//! scipy / statsmodels functions.
//!
//! Conventions, as in the experiment report: "A" is the champion (control) and "B" the challenger,
//! and differences are always B - A; `alpha` is the two-sided error rate (coverage 1 - alpha).
//! Invalid input, and every case where the reference returns NaN or an infinite statistic, gives
//! `None`; each function lists its cases. On the reference script's cases the statistics,
//! p-values and interval bounds agree with scipy / statsmodels to 1.5e-14 relative or better
//! (1.3e-12 relative for a t interval bound near 0 after cancellation); the p-values carry the
//! error of the survival functions in [`crate::distributions`].

use crate::descriptive::Summary;
use crate::distributions::{check_alpha, students_t_ppf, students_t_sf};

/// Welch's two-sided t-test of a difference of means (see [`welch_ttest`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TTest {
    /// The t statistic; positive when B's mean is the larger.
    pub t: f64,
    /// Welch-Satterthwaite degrees of freedom (not an integer in general).
    pub dof: f64,
    /// Two-sided p-value, 2 * P(T_dof > |t|).
    pub p_value: f64,
    /// mean_b - mean_a.
    pub diff: f64,
}

/// Standard error and Welch-Satterthwaite degrees of freedom of mean_b - mean_a, or `None` (see
/// [`welch_ttest`]).
fn welch_parts(a: &Summary, b: &Summary) -> Option<(f64, f64, f64)> {
    let (na, ma, va) = a.checked()?;
    let (nb, mb, vb) = b.checked()?;
    let vn1 = vb / nb;
    let vn2 = va / na;
    let sum = vn1 + vn2;
    if sum.is_nan() || sum <= 0.0 || sum.is_infinite() {
        return None;
    }
    let dof = sum * sum / (vn1 * vn1 / (nb - 1.0) + vn2 * vn2 / (na - 1.0));
    if dof.is_nan() || dof <= 0.0 || dof.is_infinite() {
        return None;
    }
    Some((mb - ma, sum.sqrt(), dof))
}

/// Welch's unequal-variance t-test of B against A (two-sided): equals
/// `scipy.stats.ttest_ind_from_stats(b.mean, sqrt(b.var), b.n, a.mean, sqrt(a.var), a.n, equal_var=False)`
/// (statistic and p-value), which is `scipy.stats.ttest_ind(b_data, a_data, equal_var=False)` on the raw data.
/// The standard error is sqrt(var_b / n_b + var_a / n_a), `dof` the Welch-Satterthwaite degrees of freedom and
/// the p-value `2 * scipy.stats.t.sf(|t|, dof)`; `diff = b.mean - a.mean`. Zero variance on one side only is
/// fine (dof is then the other side's n - 1).
///
/// `None` when either side has n < 2, a non-finite mean or a negative or non-finite variance, or when both
/// variances are 0 (scipy returns t = ±inf with p = 0, or NaN for equal means).
pub fn welch_ttest(a: &Summary, b: &Summary) -> Option<TTest> {
    let (diff, se, dof) = welch_parts(a, b)?;
    let t = diff / se;
    let p_value = 2.0 * students_t_sf(t.abs(), dof)?;
    Some(TTest { t, dof, p_value, diff })
}

/// Welch confidence interval (coverage 1 - alpha) for mean_b - mean_a: diff ∓ t_{1 - alpha/2, dof} * se with
/// the standard error and degrees of freedom of [`welch_ttest`]; equals statsmodels
/// `CompareMeans(DescrStatsW(b_data), DescrStatsW(a_data)).tconfint_diff(alpha, usevar='unequal')`.
///
/// `None` in the cases of [`welch_ttest`] (both variances 0 makes statsmodels return NaN) and when alpha is
/// not in (0, 1).
pub fn welch_diff_ci(a: &Summary, b: &Summary, alpha: f64) -> Option<(f64, f64)> {
    check_alpha(alpha)?;
    let (diff, se, dof) = welch_parts(a, b)?;
    let crit = students_t_ppf(1.0 - alpha / 2.0, dof)?;
    Some((diff - crit * se, diff + crit * se))
}

/// Student's t confidence interval (coverage 1 - alpha) for one arm's mean: equals
/// `scipy.stats.t.interval(1 - alpha, s.n - 1, loc=s.mean, scale=sqrt(s.var / s.n))`, computed with scipy's
/// quantile levels (1 - confidence) / 2 and (1 + confidence) / 2.
///
/// `None` when n < 2, the mean is not finite, the variance is negative or not finite, or alpha is not in
/// (0, 1); and when the variance is 0 (scipy rejects a zero scale and returns NaN; the interval would be the
/// single point `(mean, mean)`).
pub fn mean_ci(s: &Summary, alpha: f64) -> Option<(f64, f64)> {
    check_alpha(alpha)?;
    let (n, mean, var) = s.checked()?;
    if var <= 0.0 {
        return None;
    }
    let scale = (var / n).sqrt();
    let confidence = 1.0 - alpha;
    let q1 = (1.0 - confidence) / 2.0;
    let q2 = (1.0 + confidence) / 2.0;
    let low = students_t_ppf(q1, n - 1.0)? * scale + mean;
    let high = students_t_ppf(q2, n - 1.0)? * scale + mean;
    Some((low, high))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;
    use crate::reference::experiment as reference;
    use crate::reference::{assert_close, assert_interval, summary, welch_datasets};

    /// (tag, expected (side, alpha, low, high) rows).
    type MeanCiCase = (&'static str, &'static [(&'static str, f64, f64, f64)]);

    fn mean_cis() -> Vec<MeanCiCase> {
        use reference::*;
        vec![("W1", &W1_MEAN_CI), ("W2", &W2_MEAN_CI), ("W3", &W3_MEAN_CI), ("W4", &W4_MEAN_CI), ("W5", &W5_MEAN_CI)]
    }

    #[test]
    fn welch_matches_scipy() {
        for (tag, (a, b, sa, sb), (t, dof, p, diff), _) in welch_datasets() {
            let from_data = (Summary::from_values(a).unwrap(), Summary::from_values(b).unwrap());
            for (how, (sa, sb)) in [("numpy summaries", (summary(sa), summary(sb))), ("from_values", from_data)] {
                let got = welch_ttest(&sa, &sb);
                let what = format!("{tag} ttest_ind_from_stats ({how})");
                if t.is_nan() {
                    assert_eq!(got, None, "{what}: scipy gives NaN / inf");
                    continue;
                }
                let got = got.unwrap();
                assert_close(got.t, t, &format!("{what} t"));
                assert_close(got.dof, dof, &format!("{what} dof"));
                assert_close(got.p_value, p, &format!("{what} p"));
                assert_close(got.diff, diff, &format!("{what} diff"));
            }
        }
        let (a, b) = (summary(reference::BIG_A), summary(reference::BIG_B));
        let (t, dof, p, diff) = reference::BIG_TTEST;
        let got = welch_ttest(&a, &b).unwrap();
        assert_close(got.t, t, "big t");
        assert_close(got.dof, dof, "big dof");
        assert_close(got.p_value, p, "big p");
        assert_close(got.diff, diff, "big diff");
        assert_interval(welch_diff_ci(&a, &b, 0.05), reference::BIG_DIFF_CI, "big diff ci");
    }

    #[test]
    fn welch_diff_ci_matches_statsmodels() {
        for (tag, (a, b, _, _), _, cis) in welch_datasets() {
            let (sa, sb) = (Summary::from_values(a).unwrap(), Summary::from_values(b).unwrap());
            for &(alpha, low, high) in cis {
                assert_interval(welch_diff_ci(&sa, &sb, alpha), (low, high), &format!("{tag} tconfint_diff({alpha})"));
            }
        }
    }

    #[test]
    fn welch_rejects_invalid_input() {
        let ok = Summary { n: 10, mean: 1.0, var: 2.0 };
        for bad in [
            Summary { n: 1, mean: 1.0, var: 0.0 },
            Summary { n: 0, mean: 0.0, var: 0.0 },
            Summary { n: 5, mean: f64::NAN, var: 1.0 },
            Summary { n: 5, mean: 1.0, var: -1.0 },
            Summary { n: 5, mean: 1.0, var: f64::INFINITY },
        ] {
            assert_eq!(welch_ttest(&bad, &ok), None, "{bad:?}");
            assert_eq!(welch_ttest(&ok, &bad), None, "{bad:?}");
            assert_eq!(welch_diff_ci(&ok, &bad, 0.05), None, "{bad:?}");
            assert_eq!(mean_ci(&bad, 0.05), None, "{bad:?}");
        }
        for alpha in [0.0, 1.0, f64::NAN] {
            assert_eq!(welch_diff_ci(&ok, &ok, alpha), None);
            assert_eq!(mean_ci(&ok, alpha), None);
        }
    }

    #[test]
    fn mean_ci_matches_scipy() {
        for ((tag, (a, b, _, _), _, _), (_, rows)) in welch_datasets().into_iter().zip(mean_cis()) {
            for &(side, alpha, low, high) in rows {
                let s = Summary::from_values(if side == "A" { a } else { b }).unwrap();
                assert_interval(mean_ci(&s, alpha), (low, high), &format!("{tag} {side} t.interval({alpha})"));
            }
        }
    }
}
