//! The sample-ratio-mismatch check of an experiment: Pearson's chi-squared goodness-of-fit test of
//! the requests each arm got against the configured weights (`scipy.stats.chisquare`). A small
//! p-value says the traffic split is not the configured one, so the arms' comparison may be
//! biased.

use crate::distributions::chi2_sf;

/// Chi-squared goodness-of-fit test of the observed arm counts against the configured weights (see
/// [`srm_test`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Srm {
    /// Pearson's statistic, sum((O - E)^2 / E) over the arms with a positive weight.
    pub statistic: f64,
    /// Degrees of freedom: the number of arms with a positive weight, minus one.
    pub dof: u64,
    /// P(chi2_dof > statistic); a small value signals a sample ratio mismatch.
    pub p_value: f64,
}

/// Sample-ratio-mismatch check: Pearson's chi-squared goodness-of-fit test of the per-arm request counts
/// against the configured weights. Over the arms with weight > 0, the expected count of arm i is
/// `w_i / sum(w) * N` with N the sum of their observed counts, and the result equals
/// `scipy.stats.chisquare(observed, expected)` (statistic and p-value, dof = arms - 1).
///
/// Arms with weight 0 are left out of the test, observations included (as GrowthBook's SRM check does): they
/// count neither in N nor in the statistic, so traffic on a weight-0 arm (e.g. just after a weight change) does
/// not by itself flag a mismatch; callers that want to report it must look at those counts themselves. An arm
/// with weight > 0 and no observations is kept (it is the strongest kind of mismatch).
///
/// When N is 0 the result is `statistic = 0, p_value = 1` (nothing observed, nothing mismatched; scipy gives
/// NaN); a single arm with weight > 0 gives `statistic = 0, dof = 0, p_value = 1` (scipy: NaN). `None` when the
/// slices are empty or differ in length, a weight is negative or not finite, or no weight is positive.
pub fn srm_test(observed: &[u64], weights: &[f64]) -> Option<Srm> {
    if observed.is_empty() || observed.len() != weights.len() {
        return None;
    }
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return None;
    }
    let arms: Vec<(u64, f64)> =
        observed.iter().zip(weights).filter(|(_, w)| **w > 0.0).map(|(&o, &w)| (o, w)).collect();
    if arms.is_empty() {
        return None;
    }
    let dof = (arms.len() - 1) as u64;
    let total_weight: f64 = arms.iter().map(|(_, w)| w).sum();
    let total = arms.iter().try_fold(0u64, |acc, (o, _)| acc.checked_add(*o))? as f64;
    if total == 0.0 || dof == 0 {
        return Some(Srm { statistic: 0.0, dof, p_value: 1.0 });
    }
    let statistic: f64 = arms
        .iter()
        .map(|&(o, w)| {
            let expected = w / total_weight * total;
            let d = o as f64 - expected;
            d * d / expected
        })
        .sum();
    let p_value = chi2_sf(statistic, dof as f64)?;
    Some(Srm { statistic, dof, p_value })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;
    use crate::reference::assert_close;
    use crate::reference::experiment as reference;

    /// (observed, weights, expected (statistic, dof, p)).
    type SrmCase = (&'static [u64], &'static [f64], (f64, u64, f64));

    #[test]
    fn srm_matches_scipy() {
        use reference::*;
        let cases: [SrmCase; 7] = [
            (&SRM_0_OBSERVED, &SRM_0_WEIGHTS, SRM_0_EXPECTED),
            (&SRM_1_OBSERVED, &SRM_1_WEIGHTS, SRM_1_EXPECTED),
            (&SRM_2_OBSERVED, &SRM_2_WEIGHTS, SRM_2_EXPECTED),
            (&SRM_3_OBSERVED, &SRM_3_WEIGHTS, SRM_3_EXPECTED),
            (&SRM_4_OBSERVED, &SRM_4_WEIGHTS, SRM_4_EXPECTED),
            (&SRM_5_OBSERVED, &SRM_5_WEIGHTS, SRM_5_EXPECTED),
            (&SRM_6_OBSERVED, &SRM_6_WEIGHTS, SRM_6_EXPECTED),
        ];
        for (observed, weights, (statistic, dof, p)) in cases {
            let what = format!("chisquare({observed:?}, weights {weights:?})");
            let got = srm_test(observed, weights).unwrap();
            assert_close(got.statistic, statistic, &format!("{what} statistic"));
            assert_eq!(got.dof, dof, "{what} dof");
            assert_close(got.p_value, p, &format!("{what} p"));
        }
        // The fair split passes and the skewed one is flagged.
        assert!(srm_test(&SRM_0_OBSERVED, &SRM_0_WEIGHTS).unwrap().p_value > 0.05);
        assert!(srm_test(&SRM_1_OBSERVED, &SRM_1_WEIGHTS).unwrap().p_value < 0.001);
    }

    #[test]
    fn srm_edges() {
        assert_eq!(srm_test(&[], &[]), None);
        assert_eq!(srm_test(&[1, 2], &[1.0]), None);
        assert_eq!(srm_test(&[1, 2], &[1.0, -1.0]), None);
        assert_eq!(srm_test(&[1, 2], &[1.0, f64::NAN]), None);
        assert_eq!(srm_test(&[1, 2], &[0.0, 0.0]), None);
        assert_eq!(srm_test(&[7, 3], &[1.0, 0.0]), Some(Srm { statistic: 0.0, dof: 0, p_value: 1.0 }));
        assert_eq!(srm_test(&[0, 0, 0], &[1.0, 1.0, 2.0]), Some(Srm { statistic: 0.0, dof: 2, p_value: 1.0 }));
        // Only the relative weights matter.
        assert_eq!(srm_test(&[9012, 988], &[9.0, 1.0]).map(|s| s.dof), Some(1));
        let a = srm_test(&[5120, 2440, 2440], &[2.0, 1.0, 1.0]).unwrap();
        let b = srm_test(&[5120, 2440, 2440], &[0.5, 0.25, 0.25]).unwrap();
        assert_close(a.statistic, b.statistic, "scaled weights");
    }
}
