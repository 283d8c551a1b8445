//! Quantile functions (inverse CDFs) of the standard normal and Student's t distributions,
//! `scipy.stats.norm.ppf` and `scipy.stats.t.ppf`, and the critical values of the two-sided
//! intervals built on them (`alpha` is the two-sided error rate: coverage 1 - alpha).
//!
//! Accuracy against scipy 1.17, measured with the reference script's cases and with grids of
//! several thousand points:
//!
//! * [`normal_ppf`]: within 5 ulps of `scipy.stats.norm.ppf` (relative error below 1e-15,
//!   1e-300 <= p < 1).
//! * [`students_t_ppf`]: within 3e-13 relative of `scipy.stats.t.ppf` for df in [0.5, 1e8] and p
//!   in [1e-12, 1 - 1e-12], the larger differences being scipy's own near p = 0.5 (mpmath puts
//!   this function within 5e-15 there; scipy is off by up to 4e-8 relative, 1e-12 absolute, at
//!   df = 4).

use std::f64::consts::PI;

use super::students_t_sf;
use crate::special::ln_gamma_ratio;

/// `Some(())` when alpha lies strictly between 0 and 1.
pub(crate) fn check_alpha(alpha: f64) -> Option<()> {
    (alpha > 0.0 && alpha < 1.0).then_some(())
}

/// Polynomial with coefficients from the highest degree down, by Horner's rule.
fn horner(coefficients: &[f64], x: f64) -> f64 {
    coefficients.iter().fold(0.0, |acc, c| acc * x + c)
}

/// The critical value z_{1 - alpha/2} as statsmodels computes it: `scipy.stats.norm.isf(alpha / 2)`, i.e.
/// `-ndtri(alpha / 2)`.
pub(crate) fn normal_critical(alpha: f64) -> Option<f64> {
    check_alpha(alpha)?;
    Some(-normal_ppf(alpha / 2.0)?)
}

/// Wichura's AS241 (PPND16) coefficients, highest degree first: the central region |p - 0.5| <= 0.425 ...
const AS241_A: [f64; 8] = [
    2509.0809287301227,
    33430.57558358813,
    67265.7709270087,
    45921.95393154987,
    13731.69376550946,
    1971.5909503065513,
    133.14166789178438,
    3.3871328727963665,
];

const AS241_B: [f64; 8] = [
    5226.495278852854,
    28729.085735721943,
    39307.89580009271,
    21213.794301586597,
    5394.196021424751,
    687.1870074920579,
    42.31333070160091,
    1.0,
];

/// ... the intermediate tail, r = sqrt(-ln(min(p, 1 - p))) <= 5 ...
const AS241_C: [f64; 8] = [
    0.0007745450142783414,
    0.022723844989269184,
    0.2417807251774506,
    1.2704582524523684,
    3.6478483247632045,
    5.769497221460691,
    4.630337846156546,
    1.4234371107496835,
];

const AS241_D: [f64; 8] = [
    1.0507500716444169e-09,
    0.0005475938084995345,
    0.015198666563616457,
    0.14810397642748008,
    0.6897673349851,
    1.6763848301838038,
    2.053191626637759,
    1.0,
];

/// ... and the far tail, r > 5 (p below about 1.4e-11).
const AS241_E: [f64; 8] = [
    2.0103343992922881e-07,
    2.7115555687434876e-05,
    0.0012426609473880784,
    0.026532189526576124,
    0.29656057182850487,
    1.7848265399172913,
    5.463784911164114,
    6.657904643501103,
];

const AS241_F: [f64; 8] = [
    2.0442631033899397e-15,
    1.421511758316446e-07,
    1.8463183175100548e-05,
    0.0007868691311456133,
    0.014875361290850615,
    0.1369298809227358,
    0.599832206555888,
    1.0,
];

/// Quantile function (inverse CDF) of the standard normal distribution: `scipy.stats.norm.ppf(p)`
/// (= `scipy.special.ndtri(p)`), by Wichura's algorithm AS241 (PPND16), whose rational approximations are
/// accurate to about 1e-16 relative; measured against scipy, within 5 ulps (1e-15 relative) for
/// 1e-300 <= p < 1. As in scipy,
/// the upper half uses 1 - p (exact for p >= 0.5), so `normal_ppf(1 - q) == -normal_ppf(q)` whenever 1 - q
/// is exact. `p == 0` gives -infinity and `p == 1` gives +infinity (as scipy); `None` for p outside [0, 1]
/// or NaN.
pub fn normal_ppf(p: f64) -> Option<f64> {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return None;
    }
    if p == 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if p == 1.0 {
        return Some(f64::INFINITY);
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return Some(q * horner(&AS241_A, r) / horner(&AS241_B, r));
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let r = (-tail.ln()).sqrt();
    let x = if r <= 5.0 {
        let r = r - 1.6;
        horner(&AS241_C, r) / horner(&AS241_D, r)
    } else {
        let r = r - 5.0;
        horner(&AS241_E, r) / horner(&AS241_F, r)
    };
    Some(if q < 0.0 { -x } else { x })
}

/// Bound on the refinement steps of [`students_t_ppf`] (Newton needs fewer than 10; the bisection fallback,
/// geometric then arithmetic, narrows any bracket to 4 ulps in fewer than 130) and on the terms of
/// `t_center_mass` (fewer than 80).
const T_PPF_MAX_ITER: usize = 400;

/// ln(1e150): above this the tail quantile is taken from the power-law tail of the t density.
const T_FAR_TAIL_LN: f64 = 345.38776394910684;

/// The t > 0 with `students_t_sf(t, df) == q`, for 0 < q < 0.5 and finite df > 0.
fn t_upper_quantile(q: f64, df: f64) -> Option<f64> {
    // Closed forms: Cauchy (df = 1) and df = 2.
    if df == 1.0 {
        return Some(if q < 0.25 { 1.0 / (PI * q).tan() } else { (PI * (0.5 - q)).tan() });
    }
    if df == 2.0 {
        return Some((1.0 - 2.0 * q) / (2.0 * q * (1.0 - q)).sqrt());
    }

    // Cornish-Fisher expansion around the normal quantile (Abramowitz & Stegun 26.7.5, terms to 1/df^4). When
    // (z^2 + 1) / df <= 1e-3 the first omitted term (A&S's g5 / df^5) is below 6e-17 t, half an ulp, so for
    // large df the expansion is the quantile (more accurate than inverting students_t_sf, whose error grows with
    // df: about 6e-9 relative at df = 1e8); otherwise it is the starting point of the iteration.
    let z = -normal_ppf(q)?;
    let z2 = z * z;
    let g1 = (z2 + 1.0) * z / 4.0;
    let g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0;
    let g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0;
    let g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0;
    let cornish_fisher = z + (g1 + (g2 + (g3 + g4 / df) / df) / df) / df;
    if z2 + 1.0 <= 1e-3 * df {
        return Some(cornish_fisher);
    }

    // ln of the density's constant: ln[Γ((df + 1) / 2) / (Γ(df / 2) sqrt(df π))].
    let ln_k = ln_gamma_ratio(df / 2.0, 0.5) - 0.5 * (df * PI).ln();
    let pdf = |t: f64| (ln_k - 0.5 * (df + 1.0) * (t * t / df).ln_1p()).exp();

    // Upper bracket: the density is below K (t^2 / df)^(-(df + 1) / 2), whose tail integral from t is
    // K df^((df + 1) / 2) t^(-df) / df; where that bound equals q, the true tail is at most q.
    let ln_q = q.ln();
    let ln_bound = 0.5 * df.ln() + (ln_k + 0.5 * df.ln() - df.ln() - ln_q) / df;
    if ln_bound > T_FAR_TAIL_LN {
        // Beyond 1e150, t^2 overflows inside students_t_sf (scipy's t.sf is 0 there too); the bound is the
        // quantile itself to within a relative (df / t)^2, and overflows to infinity past f64::MAX.
        return Some(ln_bound.exp());
    }
    let mut hi = ln_bound.exp() * (1.0 + 1e-6);
    if !hi.is_finite() {
        hi = f64::MAX;
    }
    let mut hi_ok = false;
    for _ in 0..64 {
        if students_t_sf(hi, df)? <= q {
            hi_ok = true;
            break;
        }
        if hi == f64::MAX {
            return Some(f64::INFINITY);
        }
        hi = (2.0 * hi).min(f64::MAX);
    }
    if !hi_ok {
        return None;
    }
    let mut lo = 0.0f64;

    let mut t = cornish_fisher;
    if !(t > lo && t < hi) {
        t = hi;
    }

    // Safeguarded Newton iteration, falling back to bisection (geometric once the bracket spans a factor above 4)
    // when a step leaves the bracket. In the tails the step is Newton on ln sf(t) against ln t (exact in one step
    // on a power-law tail, quadratic near the root). Near the centre (q >= 0.25, where 0.5 - q is exact, and t
    // small) the residual is (0.5 - q) - P(0 < T < t) from the series of `t_center_mass`, which keeps full
    // relative accuracy for tiny t, where sf(t) - q would cancel.
    let half_minus_q = 0.5 - q;
    let center_limit = if q >= 0.25 { (0.5 * df).min(4.0) } else { 0.0 };
    for _ in 0..T_PPF_MAX_ITER {
        let density = pdf(t);
        let (residual, mut next) = if t * t <= center_limit {
            let residual = half_minus_q - t_center_mass(t, df, ln_k);
            (residual, t + residual / density)
        } else {
            let s = students_t_sf(t, df)?;
            let step = if s > 0.0 && density > 0.0 { (s.ln() - ln_q) * s / (t * density) } else { f64::NAN };
            (s - q, t * step.exp())
        };
        if residual == 0.0 {
            return Some(t);
        }
        if residual > 0.0 {
            lo = t;
        } else {
            hi = t;
        }
        if !(next > lo && next < hi) {
            next = if lo > 0.0 && hi > 4.0 * lo { ((lo.ln() + hi.ln()) / 2.0).exp() } else { lo + (hi - lo) / 2.0 };
        }
        if (next - t).abs() <= 1e-15 * t || hi - lo <= 4.0 * f64::EPSILON * hi {
            return Some(next);
        }
        t = next;
    }
    Some(t)
}

/// P(0 < T < t) for Student's t with `df` degrees of freedom, by integrating the binomial series of the density
/// term by term: K * sum_k C(-(df + 1) / 2, k) t^(2k + 1) / ((2k + 1) df^k), with ln K = `ln_k`. Meant for
/// t^2 <= min(df / 2, 4): the ratio of successive terms then tends to at most 1/2 in size and the largest term
/// stays within a factor e^2 of the sum.
fn t_center_mass(t: f64, df: f64, ln_k: f64) -> f64 {
    let x = t * t / df;
    let mut coefficient = 1.0f64;
    let mut sum = 0.0f64;
    for k in 0..T_PPF_MAX_ITER {
        let term = coefficient / (2 * k + 1) as f64;
        sum += term;
        if term.abs() <= 1e-17 * sum.abs() {
            break;
        }
        coefficient *= -(0.5 * (df + 1.0) + k as f64) / (k + 1) as f64 * x;
    }
    ln_k.exp() * t * sum
}

/// Quantile function of Student's t distribution with `df` degrees of freedom: `scipy.stats.t.ppf(p, df)`.
/// df = 1 and df = 2 use their closed forms; when (z^2 + 1) / df <= 1e-3 (z the normal quantile; large df) the
/// Cornish-Fisher expansion to 1/df^4 is exact to half an ulp and is the result; otherwise a safeguarded Newton
/// iteration (bracketed, with bisection fallback) inverts [`students_t_sf`](super::students_t_sf) (near p = 0.5, a
/// series for P(0 < T < t)) to about 1e-15 relative in t, so the result carries that function's error. Measured
/// against scipy over df in [0.5, 1e8] and p in [1e-12, 1 - 1e-12]: relative difference below 3e-13; the largest
/// differences, near p = 0.5, are scipy's (checked with mpmath: this function is within 5e-15 there). Quantiles
/// beyond 1e150 (df < 2 and p within about 1e-150 of 0 or 1) come from the power-law tail of the density, where
/// `students_t_sf` and scipy overflow (scipy returns about -3.7e153 for `t.ppf(1e-200, 0.3)`; the true value is
/// below -f64::MAX and gives -infinity here).
///
/// The upper half uses the tail 1 - p, exact for p >= 0.5, so `students_t_ppf(1 - q) == -students_t_ppf(q)`;
/// infinite df gives [`normal_ppf`]. `p == 0` and `p == 1` give -infinity and +infinity (as scipy). `None` for
/// p outside [0, 1], df <= 0 or NaN input. scipy itself (Boost's closed form for df = 4) loses accuracy near
/// p = 0.5 at df = 4 (it returns 0.0 at p = 0.5 + 1e-9); this function stays on the true quantile there.
pub fn students_t_ppf(p: f64, df: f64) -> Option<f64> {
    if p.is_nan() || df.is_nan() || !(0.0..=1.0).contains(&p) || df <= 0.0 {
        return None;
    }
    if df.is_infinite() {
        return normal_ppf(p);
    }
    if p == 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if p == 1.0 {
        return Some(f64::INFINITY);
    }
    if p == 0.5 {
        return Some(0.0);
    }
    if p < 0.5 { Some(-t_upper_quantile(p, df)?) } else { t_upper_quantile(1.0 - p, df) }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;
    use crate::distributions::normal_sf;
    use crate::reference::assert_close;
    use crate::reference::experiment as reference;
    use crate::special::ln_gamma;

    #[test]
    fn normal_ppf_matches_scipy() {
        for &(p, x) in &reference::NORM_PPF {
            assert_close(normal_ppf(p).unwrap(), x, &format!("norm.ppf({p})"));
        }
    }

    #[test]
    fn normal_ppf_edges_and_symmetry() {
        assert_eq!(normal_ppf(0.0), Some(f64::NEG_INFINITY));
        assert_eq!(normal_ppf(1.0), Some(f64::INFINITY));
        assert_eq!(normal_ppf(0.5), Some(0.0));
        for bad in [-1e-12, 1.0 + 1e-12, f64::NAN, f64::INFINITY] {
            assert_eq!(normal_ppf(bad), None, "{bad}");
        }
        for q in [1e-300, 1e-12, 0.01, 0.0751, 0.2, 0.4999] {
            assert_eq!(
                normal_ppf(1.0 - q),
                normal_ppf(q).map(|x| -x).filter(|_| 1.0 - (1.0 - q) == q).or(normal_ppf(1.0 - q))
            );
            // Round trip through the normal survival function.
            let x = normal_ppf(q).unwrap();
            let back = normal_sf(-x);
            assert!((back - q).abs() <= 1e-13 * q, "sf(-ppf({q})) = {back:e}");
        }
    }

    #[test]
    fn t_ppf_matches_scipy() {
        for &(p, df, x) in &reference::T_PPF {
            assert_close(students_t_ppf(p, df).unwrap(), x, &format!("t.ppf({p}, {df})"));
        }
    }

    #[test]
    fn t_ppf_edges_and_round_trip() {
        assert_eq!(students_t_ppf(0.0, 3.0), Some(f64::NEG_INFINITY));
        assert_eq!(students_t_ppf(1.0, 3.0), Some(f64::INFINITY));
        assert_eq!(students_t_ppf(0.5, 3.0), Some(0.0));
        assert_eq!(students_t_ppf(0.975, f64::INFINITY), normal_ppf(0.975));
        for (p, df) in [(0.5, 0.0), (0.5, -1.0), (0.5, f64::NAN), (f64::NAN, 3.0), (1.5, 3.0), (-0.5, 3.0)] {
            assert_eq!(students_t_ppf(p, df), None, "t.ppf({p}, {df})");
        }
        // Far tails: the power-law asymptote sf(t) ~ K df^((df - 1) / 2) t^-df / ... holds to (df / t)^2.
        assert_eq!(students_t_ppf(1e-200, 0.3), Some(f64::NEG_INFINITY));
        let far = -students_t_ppf(1e-250, 1.5).unwrap();
        let ln_k = ln_gamma(1.25) - ln_gamma(0.75) - 0.5 * (1.5 * PI).ln();
        let asymptote = ((ln_k + 0.25 * 1.5f64.ln() - 1e-250f64.ln()) / 1.5).exp();
        assert!((far / asymptote - 1.0).abs() < 1e-12, "{far:e} vs {asymptote:e}");
        // Round trips where the quantile comes from inverting students_t_sf (for large df the Cornish-Fisher
        // expansion is used instead, and students_t_sf itself is off by up to 1e-8 relative near df = 1e8).
        for df in [0.3, 1.0, 1.5, 2.0, 3.0, 7.5, 29.0, 150.0, 1e4] {
            for q in [1e-100, 1e-30, 1e-8, 1e-3, 0.025, 0.2, 0.45, 0.4999999] {
                let t = students_t_ppf(1.0 - q, df).unwrap();
                if 1.0 - (1.0 - q) == q {
                    assert_eq!(students_t_ppf(q, df), Some(-t), "symmetry at ({q}, {df})");
                }
                let t = -students_t_ppf(q, df).unwrap();
                assert!(t > 0.0, "t.ppf({q}, {df}) = {t}");
                if t > 1e150 {
                    continue; // the far tail (infinite for df = 0.3, q = 1e-100), checked above
                }
                let back = students_t_sf(t, df).unwrap();
                assert!((back - q).abs() <= 1e-9 * q, "sf(ppf({q}, {df})) = {back:e}");
            }
        }
    }
}
