//! Distances and tests between a reference and a current distribution, as the monitor's drift
//! table and the rollout guardrails use them. For numbers: the first Wasserstein distance and the
//! population stability index over the reference's deciles. For categories, given as aligned
//! count vectors: the chi-squared test of the 2 x K table, the Jensen-Shannon, total variation and
//! L-infinity distances, and PSI of the shares. The Kolmogorov-Smirnov test is in [`crate::ks`].
//!
//! Statistics and distances agree with scipy and the spec's numpy code to a few ulps.

use crate::descriptive::{all_finite, quantile_sorted, sorted_copy};
use crate::distributions::chi2_sf;

/// Smallest share a PSI bin gets (spec: shares equal to 0 become 1e-4).
const PSI_MIN_SHARE: f64 = 1e-4;

/// Number of elements of the sorted slice that are `<= x` (numpy `searchsorted(side="right")`).
fn count_le(sorted: &[f64], x: f64) -> usize {
    sorted.partition_point(|v| *v <= x)
}

/// First Wasserstein distance between two empirical distributions: `scipy.stats.wasserstein_distance(a, b)`
/// (unit weights): the integral of |U - V| over the pooled sorted values. `None` when either side is empty or
/// holds a non-finite value (scipy returns NaN or infinity there).
pub fn wasserstein(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.is_empty() || b.is_empty() || !all_finite(a) || !all_finite(b) {
        return None;
    }
    let u = sorted_copy(a);
    let v = sorted_copy(b);
    let mut all: Vec<f64> = u.iter().chain(v.iter()).copied().collect();
    all.sort_by(f64::total_cmp);
    let (nu, nv) = (u.len() as f64, v.len() as f64);
    let mut total = 0.0f64;
    let mut iu = 0usize;
    let mut iv = 0usize;
    for pair in all.windows(2) {
        let [x, next] = pair else { continue };
        iu += u.get(iu..).map_or(0, |rest| count_le(rest, *x));
        iv += v.get(iv..).map_or(0, |rest| count_le(rest, *x));
        let delta = next - x;
        total += (iu as f64 / nu - iv as f64 / nv).abs() * delta;
    }
    Some(total)
}

/// Bin edges of the population stability index: `np.unique(np.quantile(reference, [0.1, 0.2, ..., 0.9]))`
/// (numpy linear quantiles). `None` when `reference` is empty or holds a non-finite value.
fn decile_edges(reference: &[f64]) -> Option<Vec<f64>> {
    if reference.is_empty() || !all_finite(reference) {
        return None;
    }
    const DECILES: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
    let sorted_ref = sorted_copy(reference);
    let mut edges = DECILES.iter().map(|&p| quantile_sorted(&sorted_ref, p)).collect::<Option<Vec<f64>>>()?;
    edges.sort_by(f64::total_cmp);
    edges.dedup();
    Some(edges)
}

/// Counts of `values` per bin: k edges give k + 1 bins, open at both ends, and a value's bin is
/// `np.searchsorted(edges, x, side="left")`.
fn bin_counts(edges: &[f64], values: &[f64]) -> Vec<f64> {
    let mut counts = vec![0.0f64; edges.len() + 1];
    for &x in values {
        if let Some(c) = counts.get_mut(edges.partition_point(|e| *e < x)) {
            *c += 1.0;
        }
    }
    counts
}

/// Counts of `values` in the bins of [`psi`]: the bins between the distinct deciles of
/// `reference`, open at both ends. Two samples binned on the same reference give aligned count
/// vectors for the categorical distances (e.g. [`js_distance`] between numeric predictions).
/// `None` when `reference` is empty or either slice holds a non-finite value.
pub fn decile_counts(reference: &[f64], values: &[f64]) -> Option<Vec<f64>> {
    if !all_finite(values) {
        return None;
    }
    Some(bin_counts(&decile_edges(reference)?, values))
}

/// Population stability index between two aligned count vectors, reference first: with `p` and
/// `q` the reference and current shares per bin, a zero share replaced by 1e-4,
/// PSI = sum((q - p) * ln(q / p)). This is [`psi`] on counts that are binned already (categories,
/// such as the labels two models predict). `None` when the lengths differ, a vector is empty, has
/// a negative or non-finite entry or sums to 0.
pub fn psi_counts(reference_counts: &[f64], current_counts: &[f64]) -> Option<f64> {
    let (p, q) = normalise_pair(reference_counts, current_counts)?;
    let floor = |share: f64| if share == 0.0 { PSI_MIN_SHARE } else { share };
    Some(p.iter().zip(&q).map(|(&p, &q)| (floor(q) - floor(p)) * (floor(q) / floor(p)).ln()).sum())
}

/// Population stability index of `current` against `reference`, as the spec defines it: bin edges are
/// `np.unique(np.quantile(reference, [0.1, 0.2, ..., 0.9]))` (numpy linear quantiles), a value's bin is
/// `np.searchsorted(edges, x, side="left")` (k edges give k + 1 bins, open at both ends), `p` and `q` are the
/// reference and current shares per bin with a zero share replaced by 1e-4, and PSI = sum((q - p) * ln(q / p))
/// (see [`psi_counts`]). `None` when either side is empty or holds a non-finite value (the numpy version gives
/// NaN there).
pub fn psi(reference: &[f64], current: &[f64]) -> Option<f64> {
    if current.is_empty() || !all_finite(current) {
        return None;
    }
    let edges = decile_edges(reference)?;
    psi_counts(&bin_counts(&edges, reference), &bin_counts(&edges, current))
}

/// Chi-squared test of independence on the 2 x K table `[reference_counts, current_counts]`:
/// `scipy.stats.chi2_contingency([reference_counts, current_counts])` with the default `correction=True`
/// (Yates' continuity correction only when dof == 1, each cell moved toward its expected count by
/// `min(0.5, |E - O|)` as in scipy since gh-13875). Returns `(statistic, pvalue)`; the p-value is
/// `chi2.sf(statistic, K - 1)` (see [`chi2_sf`]).
///
/// Categories whose total count is 0 are dropped first (scipy would reject the zero expected frequency);
/// a single remaining category gives `(0.0, 1.0)` like scipy's dof == 0 case. `None` when the slices differ
/// in length, a count is negative or non-finite, either row sums to 0, or no category remains.
pub fn chi2_contingency(reference_counts: &[f64], current_counts: &[f64]) -> Option<(f64, f64)> {
    if reference_counts.len() != current_counts.len() {
        return None;
    }
    let mut cols: Vec<(f64, f64)> = Vec::with_capacity(reference_counts.len());
    for (&r, &c) in reference_counts.iter().zip(current_counts) {
        if !(r.is_finite() && c.is_finite()) || r < 0.0 || c < 0.0 {
            return None;
        }
        if r + c > 0.0 {
            cols.push((r, c));
        }
    }
    if cols.is_empty() {
        return None;
    }
    let row_ref: f64 = cols.iter().map(|c| c.0).sum();
    let row_cur: f64 = cols.iter().map(|c| c.1).sum();
    if row_ref <= 0.0 || row_cur <= 0.0 {
        return None;
    }
    let dof = cols.len() - 1;
    if dof == 0 {
        return Some((0.0, 1.0));
    }
    let total: f64 = cols.iter().map(|c| c.0 + c.1).sum();
    let mut stat = 0.0f64;
    for row in 0..2 {
        let row_sum = if row == 0 { row_ref } else { row_cur };
        for &(r, c) in &cols {
            let mut observed = if row == 0 { r } else { c };
            let expected = row_sum * (r + c) / total;
            if dof == 1 {
                let diff = expected - observed;
                let magnitude = diff.abs().min(0.5);
                observed += magnitude * diff.signum();
            }
            stat += (observed - expected).powi(2) / expected;
        }
    }
    let p = chi2_sf(stat, dof as f64)?;
    Some((stat, p))
}

/// Normalises two aligned count vectors to probability vectors (None when a sum is not positive).
fn normalise_pair(p_counts: &[f64], q_counts: &[f64]) -> Option<(Vec<f64>, Vec<f64>)> {
    if p_counts.is_empty() || p_counts.len() != q_counts.len() {
        return None;
    }
    if p_counts.iter().chain(q_counts).any(|v| !v.is_finite() || *v < 0.0) {
        return None;
    }
    let sp: f64 = p_counts.iter().sum();
    let sq: f64 = q_counts.iter().sum();
    if sp <= 0.0 || sq <= 0.0 {
        return None;
    }
    Some((p_counts.iter().map(|v| v / sp).collect(), q_counts.iter().map(|v| v / sq).collect()))
}

/// scipy.special.rel_entr for non-negative inputs.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Jensen-Shannon distance (base 2) between the distributions given by two aligned count vectors:
/// `scipy.spatial.distance.jensenshannon(p_counts, q_counts, base=2)` (which normalises each vector to sum 1).
/// The divergence is clamped at 0 before the square root, where scipy could return NaN for a tiny negative
/// rounding residue. `None` when lengths differ, a vector is empty, has a negative/non-finite entry or sums to 0.
pub fn js_distance(p_counts: &[f64], q_counts: &[f64]) -> Option<f64> {
    let (p, q) = normalise_pair(p_counts, q_counts)?;
    let mut left = 0.0f64;
    let mut right = 0.0f64;
    for (&pi, &qi) in p.iter().zip(&q) {
        let m = (pi + qi) / 2.0;
        left += rel_entr(pi, m);
        right += rel_entr(qi, m);
    }
    let js = (left + right) / 2.0f64.ln();
    Some((js / 2.0).max(0.0).sqrt())
}

/// Total variation distance `0.5 * sum(|p - q|)` between the normalised count vectors (spec `tv_distance`).
/// `None` under the same conditions as [`js_distance`].
pub fn tv_distance(p_counts: &[f64], q_counts: &[f64]) -> Option<f64> {
    let (p, q) = normalise_pair(p_counts, q_counts)?;
    Some(0.5 * p.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum::<f64>())
}

/// L-infinity distance `max(|p - q|)` between the normalised count vectors (spec `l_infinity_distance`).
/// `None` under the same conditions as [`js_distance`].
pub fn linf_distance(p_counts: &[f64], q_counts: &[f64]) -> Option<f64> {
    let (p, q) = normalise_pair(p_counts, q_counts)?;
    Some(p.iter().zip(&q).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;
    use crate::reference::monitor::*;
    use crate::reference::{assert_close, assert_pair};

    #[test]
    fn wasserstein_matches_scipy() {
        assert_close(wasserstein(&WASS_A, &WASS_B).unwrap(), WASS_EXPECTED, "wasserstein");
        assert_close(wasserstein(&WASS_B, &WASS_A).unwrap(), WASS_EXPECTED, "wasserstein swapped");
        assert_close(wasserstein(&WASS_TIES_A, &WASS_TIES_B).unwrap(), WASS_TIES_EXPECTED, "wasserstein ties");
        assert_eq!(wasserstein(&[], &[1.0]), None);
    }

    #[test]
    fn psi_matches_spec() {
        assert_close(psi(&PSI_REF, &PSI_CUR).unwrap(), PSI_EXPECTED, "psi");
        assert_close(psi(&PSI_CONST_REF, &PSI_CONST_CUR).unwrap(), PSI_CONST_EXPECTED, "psi constant reference");
        assert_close(psi(&PSI_DUP_REF, &PSI_DUP_CUR).unwrap(), PSI_DUP_EXPECTED, "psi repeated edges");
        assert_close(psi(&PSI_REF, &PSI_REF).unwrap(), 0.0, "psi of itself");
        assert_eq!(psi(&[1.0], &[]), None);
    }

    #[test]
    fn psi_is_psi_counts_of_the_decile_bins() {
        let (p, q) = (decile_counts(&PSI_REF, &PSI_REF).unwrap(), decile_counts(&PSI_REF, &PSI_CUR).unwrap());
        assert_eq!(p.len(), 10);
        assert_eq!(p.iter().sum::<f64>(), PSI_REF.len() as f64);
        assert_eq!(q.iter().sum::<f64>(), PSI_CUR.len() as f64);
        assert_eq!(psi_counts(&p, &q), psi(&PSI_REF, &PSI_CUR));
        // A constant reference has one edge and two bins: up to the edge (side="left"), and above.
        assert_eq!(decile_counts(&PSI_CONST_REF, &PSI_CONST_CUR), Some(vec![3.0, 2.0]));
        assert_eq!(decile_counts(&[], &[1.0]), None);
        assert_eq!(decile_counts(&[1.0], &[f64::INFINITY]), None);
    }

    #[test]
    fn psi_counts_floors_empty_shares() {
        // Shares (0.5, 0.5, 0) against (0.25, 0.25, 0.5): the empty reference bin counts as 1e-4.
        let expected = 2.0 * (0.25 - 0.5) * (0.25f64 / 0.5).ln() + (0.5 - 1e-4) * (0.5f64 / 1e-4).ln();
        assert_close(psi_counts(&[5.0, 5.0, 0.0], &[1.0, 1.0, 2.0]).unwrap(), expected, "psi of counts");
        assert_eq!(psi_counts(&[1.0, 2.0], &[1.0, 2.0]), Some(0.0));
        assert_eq!(psi_counts(&[1.0, 2.0], &[1.0]), None);
        assert_eq!(psi_counts(&[0.0, 0.0], &[1.0, 2.0]), None);
        assert_eq!(psi_counts(&[-1.0, 2.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn chi2_contingency_matches_scipy() {
        for (name, (r, c, stat, p)) in [
            ("yates", CHI2_YATES),
            ("yates clipped", CHI2_YATES_CLIP),
            ("dof 3", CHI2_DOF3),
            ("absent", CHI2_ABSENT),
            ("zero column", CHI2_ZERO_COL),
            ("single", CHI2_SINGLE),
            ("single after drop", CHI2_SINGLE_AFTER_DROP),
            ("big", CHI2_BIG),
        ] {
            assert_pair(chi2_contingency(r, c), (stat, p), name);
        }
        assert_eq!(chi2_contingency(&[1.0, 2.0], &[1.0]), None);
        assert_eq!(chi2_contingency(&[0.0, 0.0], &[1.0, 2.0]), None);
        assert_eq!(chi2_contingency(&[], &[]), None);
        assert_eq!(chi2_contingency(&[-1.0, 2.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn categorical_distances_match_scipy() {
        assert_close(js_distance(&DIST_P, &DIST_Q).unwrap(), JS_EXPECTED, "js");
        assert_close(tv_distance(&DIST_P, &DIST_Q).unwrap(), TV_EXPECTED, "tv");
        assert_close(linf_distance(&DIST_P, &DIST_Q).unwrap(), LINF_EXPECTED, "linf");
        assert_close(js_distance(&[1.0, 0.0], &[0.0, 3.0]).unwrap(), JS_DISJOINT_EXPECTED, "js disjoint");
        assert_close(js_distance(&DIST_P, &DIST_P).unwrap(), 0.0, "js identical");
        assert_eq!(js_distance(&[0.0, 0.0], &[1.0, 1.0]), None);
        assert_eq!(tv_distance(&[1.0], &[1.0, 2.0]), None);
        assert_eq!(linf_distance(&[], &[]), None);
    }
}
