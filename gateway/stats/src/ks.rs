//! The two-sample Kolmogorov-Smirnov test, `scipy.stats.ks_2samp` with its defaults. When both
//! samples hold at most 10,000 values the p-value is exact and bit-identical to scipy's (same
//! algorithms, same floating-point order); otherwise it comes from the asymptotic distribution,
//! [`kstwo_sf`].

mod kolmogorov;

pub use kolmogorov::kstwo_sf;

use crate::descriptive::sorted_copy;

/// `MAX_AUTO_N` of `scipy.stats.ks_2samp`: method 'auto' is exact when both sizes are at most this.
const KS_MAX_EXACT_N: usize = 10_000;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let r = a % b;
        a = b;
        b = r;
    }
    a
}

/// Two-sided two-sample Kolmogorov-Smirnov test: `scipy.stats.ks_2samp(a, b)` with the defaults
/// (`alternative="two-sided"`, `method="auto"`). Returns `(statistic, pvalue)`.
///
/// As in scipy: the statistic is the largest gap between the empirical CDFs (ties handled through
/// `searchsorted(side="right")`); when both sizes are at most 10000 the exact p-value is computed
/// (`_attempt_exact_2kssamp`: the statistic is snapped to `h / lcm(n, m)` with `h = round(D * lcm)`, then
/// `_compute_prob_outside_square` when n == m, else the `_compute_outer_prob_inside_method` recursion), and it
/// falls back to the asymptotic p-value when the exact one is not in [0, 1]; otherwise the p-value is
/// `scipy.stats.kstwo.sf(D, round(n*m/(n+m)))` (see [`kstwo_sf`]). The inputs need not be sorted and may hold
/// ties and infinities. `None` when either side is empty or holds a NaN (scipy would return NaN).
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    if a.is_empty() || b.is_empty() || a.iter().chain(b).any(|v| v.is_nan()) {
        return None;
    }
    let data1 = sorted_copy(a);
    let data2 = sorted_copy(b);
    let n1 = data1.len();
    let n2 = data2.len();
    let (n1f, n2f) = (n1 as f64, n2 as f64);

    // cddiffs at every pooled value; duplicates give the same difference, so distinct values suffice.
    let mut min_diff = f64::INFINITY;
    let mut max_diff = f64::NEG_INFINITY;
    let mut i = 0usize;
    let mut j = 0usize;
    while i < n1 || j < n2 {
        let x = match (data1.get(i), data2.get(j)) {
            (Some(&u), Some(&v)) => u.min(v),
            (Some(&u), None) => u,
            (None, Some(&v)) => v,
            (None, None) => break,
        };
        while data1.get(i).is_some_and(|&u| u <= x) {
            i += 1;
        }
        while data2.get(j).is_some_and(|&v| v <= x) {
            j += 1;
        }
        let diff = i as f64 / n1f - j as f64 / n2f;
        min_diff = min_diff.min(diff);
        max_diff = max_diff.max(diff);
    }
    let min_s = (-min_diff).clamp(0.0, 1.0);
    let max_s = max_diff;
    let mut d = if min_s > max_s { min_s } else { max_s };

    let mut prob = f64::NAN;
    let mut exact_ok = false;
    if n1.max(n2) <= KS_MAX_EXACT_N {
        let (n1u, n2u) = (n1 as u64, n2 as u64);
        let g = gcd(n1u, n2u);
        let lcm = (n1u / g) * n2u;
        let h = (d * lcm as f64).round_ties_even();
        d = h / lcm as f64;
        if h == 0.0 {
            return Some((d, 1.0));
        }
        let h = h as u64;
        let p = if n1 == n2 { ks_prob_outside_square(n1u, h) } else { ks_outer_prob_inside(n1u, n2u, g, h) };
        if (0.0..=1.0).contains(&p) {
            prob = p;
            exact_ok = true;
        }
    }
    if !exact_ok {
        let (big, small) = if n1f >= n2f { (n1f, n2f) } else { (n2f, n1f) };
        let en = big * small / (big + small);
        prob = kstwo_sf(d, en.round_ties_even() as u64);
    }
    Some((d, prob.clamp(0.0, 1.0)))
}

/// `scipy.stats._stats_py._compute_prob_outside_square(n, h)`: Pr(D_{n,n} >= h/n), two-sided.
fn ks_prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as i64, h as i64);
    let mut p = 0.0f64;
    let mut k = n / h;
    while k >= 0 {
        let mut p1 = 1.0f64;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// `scipy.stats._stats_pythran._compute_outer_prob_inside_method(m, n, g, h)`: the share of lattice paths
/// from (0, 0) to (m, n) that leave the band |x/m - y/n| < h / lcm(m, n) (Hodges; Viehmann's 1 - p recursion).
/// Returns NaN if an index would fall outside the working vector (never expected; the caller then falls back
/// to the asymptotic distribution, as scipy does for a failed exact computation).
fn ks_outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n as i64, m as i64) } else { (m as i64, n as i64) };
    let (g, h) = (g as i64, h as i64);
    let mg = m / g;
    let ng = n / g;
    let mut minj: i64 = 0;
    let mut maxj: i64 = ((h as f64 / mg as f64).ceil() as i64).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1).max(0) as usize;
    let mut a = vec![1.0f64; len_a];
    for v in a.iter_mut().take(maxj.max(0) as usize) {
        *v = 0.0;
    }
    for i in 1..=m {
        let lastminj = minj;
        let lastlen = curlen;
        minj = ((((ng * i - h) as f64 / mg as f64).floor() as i64) + 1).max(0).min(n);
        maxj = (((ng * i + h) as f64 / mg as f64).ceil() as i64).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        let shift = (minj - lastminj) as usize;
        for jj in 0..(maxj - minj) as usize {
            let j = jj as i64 + minj;
            let Some(&prev) = a.get(jj + shift) else {
                return f64::NAN;
            };
            val = (prev * i as f64 + val * j as f64) / (i + j) as f64;
            let Some(slot) = a.get_mut(jj) else {
                return f64::NAN;
            };
            *slot = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let start = (maxj - minj) as usize;
            for v in a.iter_mut().skip(start).take((lastlen - curlen) as usize) {
                *v = 1.0;
            }
        }
    }
    a.get((maxj - minj - 1) as usize).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;
    use crate::reference::monitor::*;
    use crate::reference::{assert_pair, grid};

    #[test]
    fn ks_exact_paths() {
        assert_pair(ks_2samp(&KS_EQ_A, &KS_EQ_B), KS_EQ_EXPECTED, "n == m");
        assert_pair(ks_2samp(&KS_NEQ_A, &KS_NEQ_B), KS_NEQ_EXPECTED, "n != m");
        assert_pair(ks_2samp(&KS_TIES_A, &KS_TIES_B), KS_TIES_EXPECTED, "ties");
        assert_pair(ks_2samp(&KS_ONE_A, &KS_ONE_B), KS_ONE_EXPECTED, "n = 1");
        assert_pair(ks_2samp(&KS_ONE_ONE_A, &KS_ONE_ONE_B), KS_ONE_ONE_EXPECTED, "n = m = 1");
        assert_pair(ks_2samp(&KS_SAME_A, &KS_SAME_B), KS_SAME_EXPECTED, "identical");
        assert_pair(ks_2samp(&KS_SHIFT_A, &KS_SHIFT_B), KS_SHIFT_EXPECTED, "disjoint");
        // two-sided: symmetric in its arguments
        assert_pair(ks_2samp(&KS_NEQ_B, &KS_NEQ_A), KS_NEQ_EXPECTED, "n != m swapped");
    }

    #[test]
    fn ks_grids_exact_and_asymptotic() {
        for &(n1, m1, c1, n2, m2, c2, stat, p) in &KS_GRID {
            let what = format!("ks grid {n1} x {n2} (c2 = {c2})");
            assert_pair(ks_2samp(&grid(n1, m1, c1), &grid(n2, m2, c2)), (stat, p), &what);
        }
    }

    #[test]
    fn ks_degenerate_inputs() {
        assert_eq!(ks_2samp(&[], &[1.0]), None);
        assert_eq!(ks_2samp(&[1.0], &[]), None);
        assert_eq!(ks_2samp(&[1.0, f64::NAN], &[1.0]), None);
    }
}
