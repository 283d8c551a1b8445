//! Tests and intervals for proportions (the share of correct answers, or of errors, per arm):
//! the pooled two-proportion z-test, the Wald interval of a difference and the Wilson interval of
//! one proportion, equal to their statsmodels functions.
//!
//! Conventions, as in the experiment report: "A" is the champion (control) and "B" the challenger,
//! and differences are always B - A; `alpha` is the two-sided error rate (coverage 1 - alpha).
//! Invalid input, and every case where the reference returns NaN or an infinite statistic, gives
//! `None`; each function lists its cases. On the reference script's cases the statistics,
//! p-values and interval bounds agree with scipy / statsmodels to 1.5e-14 relative or better
//! (1.3e-12 relative for a t interval bound near 0 after cancellation); the p-values carry the
//! error of the survival functions in [`crate::distributions`].

use crate::distributions::{normal_critical, normal_sf};

/// Two-sided z-test of a difference of proportions (see [`two_proportion_ztest`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZTest {
    /// The z statistic; positive when B's proportion is the larger.
    pub z: f64,
    /// Two-sided p-value, 2 * P(Z > |z|).
    pub p_value: f64,
    /// p_b - p_a.
    pub diff: f64,
}

/// A count `x` out of `n` as floats, when `0 < n` and `x <= n`.
fn check_count(x: u64, n: u64) -> Option<(f64, f64)> {
    (n > 0 && x <= n).then_some((x as f64, n as f64))
}

/// Pooled two-proportion z-test of B against A (two-sided): equals
/// `statsmodels.stats.proportion.proportions_ztest([x_b, x_a], [n_b, n_a])`, z (`zstat`, sign included) and
/// p-value, with `diff = x_b / n_b - x_a / n_a`. The pooled proportion p = (x_a + x_b) / (n_a + n_b) gives the
/// standard error sqrt(p (1 - p) (1/n_b + 1/n_a)) and the p-value is `2 * scipy.stats.norm.sf(|z|)`.
///
/// `None` when either n is 0, a count exceeds its n, or the pooled proportion is 0 or 1 (no successes or no
/// failures at all: the standard error is 0 and statsmodels returns NaN).
pub fn two_proportion_ztest(x_a: u64, n_a: u64, x_b: u64, n_b: u64) -> Option<ZTest> {
    let (xa, na) = check_count(x_a, n_a)?;
    let (xb, nb) = check_count(x_b, n_b)?;
    let diff = xb / nb - xa / na;
    let pooled = (xb + xa) / (nb + na);
    if pooled <= 0.0 || pooled >= 1.0 {
        return None;
    }
    let var = pooled * (1.0 - pooled) * (1.0 / nb + 1.0 / na);
    let z = diff / var.sqrt();
    let p_value = normal_sf(z.abs()) * 2.0;
    Some(ZTest { z, p_value, diff })
}

/// Wald confidence interval (coverage 1 - alpha) for p_b - p_a with the unpooled standard error
/// sqrt(p_b (1 - p_b) / n_b + p_a (1 - p_a) / n_a): equals statsmodels
/// `confint_proportions_2indep(x_b, n_b, x_a, n_a, method='wald', compare='diff', alpha=alpha)`. Returns
/// `(low, high)`; not clipped to [-1, 1]. When both proportions are 0 or 1 the standard error is 0 and the
/// interval is the single point `(diff, diff)`, as in statsmodels.
///
/// `None` when either n is 0, a count exceeds its n, or alpha is not in (0, 1).
pub fn proportion_diff_ci(x_a: u64, n_a: u64, x_b: u64, n_b: u64, alpha: f64) -> Option<(f64, f64)> {
    let (xa, na) = check_count(x_a, n_a)?;
    let (xb, nb) = check_count(x_b, n_b)?;
    let crit = normal_critical(alpha)?;
    let p1 = xb / nb;
    let p2 = xa / na;
    let diff = p1 - p2;
    let var = p1 * (1.0 - p1) / nb + p2 * (1.0 - p2) / na;
    let half = crit * var.sqrt();
    Some((diff - half, diff + half))
}

/// Wilson score interval (coverage 1 - alpha) for a binomial proportion x / n: equals statsmodels
/// `proportion_confint(x, n, alpha=alpha, method='wilson')`, including its clipping to [0, 1]. Well defined
/// at x = 0 (the low end is 0) and x = n (the high end is 1).
///
/// `None` when n is 0, x exceeds n, or alpha is not in (0, 1).
pub fn proportion_ci(x: u64, n: u64, alpha: f64) -> Option<(f64, f64)> {
    let (xf, nf) = check_count(x, n)?;
    let crit = normal_critical(alpha)?;
    let q = xf / nf;
    let crit2 = crit * crit;
    let denom = 1.0 + crit2 / nf;
    let center = (q + crit2 / (2.0 * nf)) / denom;
    let dist = crit * (q * (1.0 - q) / nf + crit2 / (4.0 * (nf * nf))).sqrt() / denom;
    Some(((center - dist).clamp(0.0, 1.0), (center + dist).clamp(0.0, 1.0)))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;
    use crate::reference::experiment as reference;
    use crate::reference::{assert_close, assert_interval};

    #[test]
    fn ztest_matches_statsmodels() {
        for &(x_a, n_a, x_b, n_b, z, p, diff) in &reference::ZTEST {
            let what = format!("proportions_ztest({x_b}/{n_b} vs {x_a}/{n_a})");
            let got = two_proportion_ztest(x_a, n_a, x_b, n_b);
            if z.is_nan() {
                assert_eq!(got, None, "{what}: statsmodels gives NaN");
                continue;
            }
            let got = got.unwrap();
            assert_close(got.z, z, &format!("{what} z"));
            assert_close(got.p_value, p, &format!("{what} p"));
            assert_close(got.diff, diff, &format!("{what} diff"));
        }
    }

    #[test]
    fn ztest_rejects_invalid_counts() {
        assert_eq!(two_proportion_ztest(1, 0, 1, 10), None);
        assert_eq!(two_proportion_ztest(1, 10, 0, 0), None);
        assert_eq!(two_proportion_ztest(11, 10, 1, 10), None);
        assert_eq!(two_proportion_ztest(1, 10, 12, 10), None);
    }

    #[test]
    fn wald_diff_ci_matches_statsmodels() {
        for &(x_a, n_a, x_b, n_b, alpha, low, high) in &reference::WALD_DIFF_CI {
            let what = format!("wald diff ci({x_b}/{n_b} vs {x_a}/{n_a}, alpha {alpha})");
            assert_interval(proportion_diff_ci(x_a, n_a, x_b, n_b, alpha), (low, high), &what);
        }
        for alpha in [0.0, 1.0, -0.1, f64::NAN] {
            assert_eq!(proportion_diff_ci(1, 10, 2, 10, alpha), None);
        }
        assert_eq!(proportion_diff_ci(1, 0, 2, 10, 0.05), None);
        assert_eq!(proportion_diff_ci(1, 10, 11, 10, 0.05), None);
    }

    #[test]
    fn wilson_matches_statsmodels() {
        for &(x, n, alpha, low, high) in &reference::WILSON {
            assert_interval(proportion_ci(x, n, alpha), (low, high), &format!("wilson({x}/{n}, alpha {alpha})"));
        }
        assert_eq!(proportion_ci(0, 50, 0.05).map(|ci| ci.0), Some(0.0));
        assert_eq!(proportion_ci(50, 50, 0.05).map(|ci| ci.1), Some(1.0));
        assert_eq!(proportion_ci(1, 0, 0.05), None);
        assert_eq!(proportion_ci(0, 0, 0.05), None);
        assert_eq!(proportion_ci(3, 2, 0.05), None);
        for alpha in [0.0, 1.0, 2.0, f64::NAN] {
            assert_eq!(proportion_ci(1, 10, alpha), None);
        }
    }
}
