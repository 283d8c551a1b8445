//! Statistics behind the A/B experiment analysis: per served model, the request share against the configured
//! weights (sample-ratio-mismatch check), label-based metrics with confidence intervals, and the p-value of the
//! difference against the champion.
//!
//! Every public function reproduces a scipy / statsmodels routine, named in its doc comment, so that the Rust
//! engine and the Python reference (`scripts/experiment-stats-reference.py`) agree. Conventions:
//!
//! * "A" is the champion (control) and "B" the challenger; differences are always B - A.
//! * Nothing here panics. Invalid input (an empty side, a count above its total, alpha outside (0, 1), a
//!   negative or non-finite variance or weight) gives `None`, and so does every case where the reference
//!   returns NaN or an infinite statistic (a pooled proportion of 0 or 1, zero variance on both sides, ...);
//!   each function lists its cases.
//! * `alpha` is the two-sided error rate: the intervals have coverage 1 - alpha.
//!
//! Accuracy against the reference (numpy 2.4.6, scipy 1.17.1, statsmodels 0.15.0), measured with the reference
//! script's cases and with grids of several thousand points:
//!
//! * [`normal_ppf`]: within 5 ulps of `scipy.stats.norm.ppf` (relative error below 1e-15, 1e-300 <= p < 1).
//! * [`students_t_ppf`]: within 3e-13 relative of `scipy.stats.t.ppf` for df in [0.5, 1e8] and p in
//!   [1e-12, 1 - 1e-12], the larger differences being scipy's own near p = 0.5 (mpmath puts this function
//!   within 5e-15 there; scipy is off by up to 4e-8 relative, 1e-12 absolute, at df = 4).
//! * Tests and intervals: on the reference cases, the worst difference is 1.3e-12 relative (8e-14 absolute, a
//!   t interval bound near 0 after cancellation); z, t, dof, p-values, Wald and Wilson bounds and chi-squared
//!   statistics agree to 1.5e-14 relative or better. The p-values carry the error of
//!   `monitor::stats::{normal_sf, students_t_sf, chi2_sf}`: about 1e-13 relative, but up to 1e-8 relative for
//!   `students_t_sf` at df >= 1e7 (Welch tests on millions of samples per arm).
//!
//! The tests use 1e-9 absolute plus 1e-9 relative throughout.

use std::f64::consts::PI;

use crate::monitor::stats::{chi2_sf, ln_gamma, normal_sf, stirling_correction, students_t_sf};

// ------------------------------------------------------------------------------------------------
// Result types
// ------------------------------------------------------------------------------------------------

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

/// Count, mean and sample variance (ddof = 1) of one arm's metric values.
///
/// `var` is 0 when `n` is 1 (numpy's `var(ddof=1)` gives NaN there); every test and interval needs `n >= 2`
/// and returns `None` below that. The empty summary (`Summary::default()`) has `n == 0` and is the identity of
/// [`Summary::merge`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// Number of values.
    pub n: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample variance with ddof = 1, `sum((x - mean)^2) / (n - 1)`.
    pub var: f64,
}

impl Summary {
    /// Count, mean and sample variance (ddof = 1) of `values` by Welford's one-pass update; equals
    /// `(len(x), numpy.mean(x), numpy.var(x, ddof=1))` up to rounding (a few ulps on well-scaled data).
    /// `None` when `values` is empty or holds a non-finite value. One value gives `var = 0`.
    pub fn from_values(values: &[f64]) -> Option<Summary> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut n = 0u64;
        let mut mean = 0.0f64;
        let mut m2 = 0.0f64;
        for &x in values {
            n += 1;
            let delta = x - mean;
            mean += delta / n as f64;
            m2 += delta * (x - mean);
        }
        Some(Summary { n, mean, var: if n > 1 { m2 / (n - 1) as f64 } else { 0.0 } })
    }

    /// The summary of the union of two samples (Chan, Golub & LeVeque's pairwise update of the count, mean and
    /// sum of squared deviations): `Summary::from_values` of the concatenation up to rounding, i.e. the numpy
    /// `len`, `mean` and `var(ddof=1)` of `numpy.concatenate([x, y])`. Merging with an empty summary
    /// (`n == 0`) returns the other one unchanged.
    pub fn merge(&self, other: &Summary) -> Summary {
        if other.n == 0 {
            return *self;
        }
        if self.n == 0 {
            return *other;
        }
        let n = self.n + other.n;
        let (na, nb, nf) = (self.n as f64, other.n as f64, n as f64);
        let delta = other.mean - self.mean;
        let mean = self.mean + delta * (nb / nf);
        let m2 = self.var * (na - 1.0) + other.var * (nb - 1.0) + delta * delta * (na * nb / nf);
        Summary { n, mean, var: if n > 1 { m2 / (nf - 1.0) } else { 0.0 } }
    }

    /// The summary when it can feed a t-test or interval: n >= 2, finite mean, finite non-negative variance.
    fn checked(&self) -> Option<(f64, f64, f64)> {
        if self.n < 2 || !self.mean.is_finite() || !self.var.is_finite() || self.var < 0.0 {
            return None;
        }
        Some((self.n as f64, self.mean, self.var))
    }
}

// ------------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------------

/// `Some(())` when alpha lies strictly between 0 and 1.
fn check_alpha(alpha: f64) -> Option<()> {
    (alpha > 0.0 && alpha < 1.0).then_some(())
}

/// A count `x` out of `n` as floats, when `0 < n` and `x <= n`.
fn check_count(x: u64, n: u64) -> Option<(f64, f64)> {
    (n > 0 && x <= n).then_some((x as f64, n as f64))
}

/// Polynomial with coefficients from the highest degree down, by Horner's rule.
fn horner(coefficients: &[f64], x: f64) -> f64 {
    coefficients.iter().fold(0.0, |acc, c| acc * x + c)
}

/// The critical value z_{1 - alpha/2} as statsmodels computes it: `scipy.stats.norm.isf(alpha / 2)`, i.e.
/// `-ndtri(alpha / 2)`.
fn normal_critical(alpha: f64) -> Option<f64> {
    check_alpha(alpha)?;
    Some(-normal_ppf(alpha / 2.0)?)
}

// ------------------------------------------------------------------------------------------------
// Quantile functions
// ------------------------------------------------------------------------------------------------

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

/// lnΓ(a + 1/2) - lnΓ(a) for a > 0, without the cancellation of the plain difference when a is large.
fn ln_gamma_half_ratio(a: f64) -> f64 {
    if a >= 10.0 {
        (a - 0.5) * (0.5 / a).ln_1p() + 0.5 * (a + 0.5).ln() - 0.5 + stirling_correction(a + 0.5)
            - stirling_correction(a)
    } else {
        ln_gamma(a + 0.5) - ln_gamma(a)
    }
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
    let ln_k = ln_gamma_half_ratio(df / 2.0) - 0.5 * (df * PI).ln();
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
/// iteration (bracketed, with bisection fallback) inverts `monitor::stats::students_t_sf` (near p = 0.5, a
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

// ------------------------------------------------------------------------------------------------
// Proportions
// ------------------------------------------------------------------------------------------------

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

// ------------------------------------------------------------------------------------------------
// Means
// ------------------------------------------------------------------------------------------------

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

// ------------------------------------------------------------------------------------------------
// Sample ratio mismatch
// ------------------------------------------------------------------------------------------------

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

    // ---- BEGIN GENERATED: the output of scripts/experiment-stats-reference.py (see its docstring), then rustfmt ----
    // Generated by scripts/experiment-stats-reference.py; do not edit by hand.
    // numpy 2.4.6, scipy 1.17.1, statsmodels 0.15.0
    #[allow(dead_code, clippy::approx_constant, clippy::excessive_precision, clippy::type_complexity)]
    mod reference {
        /// (p, scipy.stats.norm.ppf(p)), including both tails at 1e-10.
        pub const NORM_PPF: [(f64, f64); 23] = [
            (1e-300, -37.0470962993612),
            (1e-100, -21.273453560965322),
            (1e-20, -9.262340089798409),
            (1e-10, -6.361340902404056),
            (1e-05, -4.264890793922825),
            (0.001, -3.090232306167813),
            (0.025, -1.9599639845400545),
            (0.05, -1.6448536269514729),
            (0.0751, -1.4388253927525403),
            (0.1, -1.2815515655446004),
            (0.3, -0.5244005127080409),
            (0.4999, -0.0002506628300880075),
            (0.5, 0.0),
            (0.5000001, 2.506628273311648e-07),
            (0.6, 0.2533471031357997),
            (0.9, 1.2815515655446004),
            (0.924, 1.432502720825812),
            (0.95, 1.6448536269514722),
            (0.975, 1.959963984540054),
            (0.995, 2.5758293035489004),
            (0.99999, 4.264890793923841),
            (0.9999999999, 6.361340889697422),
            (0.999999999999999, 7.941444487415979),
        ];
        /// (p, df, scipy.stats.t.ppf(p, df)).
        pub const T_PPF: [(f64, f64, f64); 47] = [
            (0.975, 1.0, 12.706204736174694),
            (0.995, 1.0, 63.656741162871526),
            (0.5, 1.0, 0.0),
            (0.025, 1.0, -12.706204736174705),
            (0.9, 1.0, 3.0776835371752544),
            (0.975, 2.0, 4.302652729749462),
            (0.995, 2.0, 9.924843200918287),
            (0.5, 2.0, 0.0),
            (0.025, 2.0, -4.302652729749464),
            (0.9, 2.0, 1.8856180831641272),
            (0.975, 5.0, 2.5705818356363146),
            (0.995, 5.0, 4.032142983555228),
            (0.5, 5.0, 0.0),
            (0.025, 5.0, -2.5705818356363155),
            (0.9, 5.0, 1.4758840488244815),
            (0.975, 30.0, 2.0422724563012378),
            (0.995, 30.0, 2.7499956535672254),
            (0.5, 30.0, 0.0),
            (0.025, 30.0, -2.042272456301238),
            (0.9, 30.0, 1.3104150253913955),
            (0.975, 1000000.0, 1.959966356814107),
            (0.995, 1000000.0, 2.5758342201053344),
            (0.5, 1000000.0, 0.0),
            (0.025, 1000000.0, -1.9599663568141072),
            (0.9, 1000000.0, 1.281552412129939),
            (1e-10, 1.0, -3183098861.8379064),
            (1e-10, 2.0, -70710.67810804816),
            (1e-10, 5.0, -156.82559270889433),
            (0.999999999999, 3.0, 10331.184426046091),
            (0.75, 2.5, 0.7850136829922992),
            (0.999, 0.5, 102849.11563017538),
            (0.6, 7.0, 0.2631668613520229),
            (0.975, 12.345, 2.1720786542260293),
            (0.995, 200.0, 2.600634436191558),
            (0.975, 10000.0, 1.960201239890626),
            (1e-06, 1000000.0, -4.75345234827968),
            (0.500000001, 4.5, 2.648678006252429e-09),
            (0.025, 3.7, -2.8675207071911903),
            (0.3, 1.0, -0.7265425280053609),
            (0.3, 2.0, -0.6172133998483678),
            (0.50001, 4.0, 2.666666776987159e-05),
            (0.975, 999.0, 1.9623414611334493),
            (0.975, 5000.0, 1.9604385517065073),
            (0.001, 100000000.0, -3.0902323876691056),
            (0.975, 10000000.0, 1.959964221767205),
            (1e-12, 100000.0, -7.035371742393576),
            (0.995, 2000000.0, 2.5758317618249085),
        ];
        /// (x_a, n_a, x_b, n_b, z, p, p_b - p_a): statsmodels proportions_ztest([x_b, x_a], [n_b, n_a]).
        pub const ZTEST: [(u64, u64, u64, u64, f64, f64, f64); 10] = [
            (120, 1000, 180, 1000, 3.757345746510896, 0.00017172515611363064, 0.06),
            (530, 10000, 61, 1000, 1.0697642612441853, 0.2847254327929827, 0.008),
            (50000, 1000000, 50010, 1000000, 0.032442747509348224, 0.9741189728328563, 9.999999999996123e-06),
            (100, 10000, 600, 10000, 19.23788514932202, 1.7833761070171862e-82, 0.049999999999999996),
            (0, 500, 7, 480, 2.7100045572359854, 0.006728228367397804, 0.014583333333333334),
            (33, 250, 0, 260, -6.0575852963570815, 1.3818007512877006e-09, -0.132),
            (999, 1000, 1000, 1000, 1.0002500937891357, 0.31718949224672377, 0.0010000000000000009),
            (40, 400, 40, 400, 0.0, 1.0, 0.0),
            (0, 100, 0, 50, f64::NAN, f64::NAN, f64::NAN),
            (20, 20, 35, 35, f64::NAN, f64::NAN, f64::NAN),
        ];
        /// (x_a, n_a, x_b, n_b, alpha, low, high): confint_proportions_2indep(x_b, n_b, x_a, n_a, method='wald').
        pub const WALD_DIFF_CI: [(u64, u64, u64, u64, f64, f64, f64); 30] = [
            (120, 1000, 180, 1000, 0.05, 0.02881254461486553, 0.09118745538513447),
            (120, 1000, 180, 1000, 0.01, 0.0190127358881009, 0.1009872641118991),
            (120, 1000, 180, 1000, 0.2, 0.03960761902288177, 0.08039238097711823),
            (530, 10000, 61, 1000, 0.05, -0.007469828239430612, 0.023469828239430612),
            (530, 10000, 61, 1000, 0.01, -0.01233080057302417, 0.02833080057302417),
            (530, 10000, 61, 1000, 0.2, -0.0021151769906633255, 0.018115176990663326),
            (50000, 1000000, 50010, 1000000, 0.05, -0.0005941300859179148, 0.0006141300859179071),
            (50000, 1000000, 50010, 1000000, 0.01, -0.0007839615170163735, 0.0008039615170163658),
            (50000, 1000000, 50010, 1000000, 0.2, -0.00038501943071795155, 0.0004050194307179438),
            (100, 10000, 600, 10000, 0.05, 0.04495333060512162, 0.05504666939487837),
            (100, 10000, 600, 10000, 0.01, 0.04336755215137196, 0.05663244784862803),
            (100, 10000, 600, 10000, 0.2, 0.04670016025049044, 0.05329983974950955),
            (0, 500, 7, 480, 0.05, 0.0038591106003170866, 0.02530755606634958),
            (0, 500, 7, 480, 0.01, 0.000489315590465977, 0.02867735107620069),
            (0, 500, 7, 480, 0.2, 0.007571140996558742, 0.021595525670107925),
            (33, 250, 0, 260, 0.05, -0.1739589792935839, -0.09004102070641612),
            (33, 250, 0, 260, 0.01, -0.18714344613672987, -0.07685655386327014),
            (33, 250, 0, 260, 0.2, -0.15943550189008435, -0.10456449810991567),
            (999, 1000, 1000, 1000, 0.05, -0.0009589837574297119, 0.0029589837574297137),
            (999, 1000, 1000, 1000, 0.01, -0.0015745410667573735, 0.0035745410667573753),
            (999, 1000, 1000, 1000, 0.2, -0.0002809106294877348, 0.002280910629487737),
            (40, 400, 40, 400, 0.05, -0.04157711473049035, 0.04157711473049035),
            (40, 400, 40, 400, 0.01, -0.05464159103155349, 0.05464159103155349),
            (40, 400, 40, 400, 0.2, -0.027185814073104695, 0.027185814073104695),
            (0, 100, 0, 50, 0.05, 0.0, 0.0),
            (0, 100, 0, 50, 0.01, 0.0, 0.0),
            (0, 100, 0, 50, 0.2, 0.0, 0.0),
            (20, 20, 35, 35, 0.05, 0.0, 0.0),
            (20, 20, 35, 35, 0.01, 0.0, 0.0),
            (20, 20, 35, 35, 0.2, 0.0, 0.0),
        ];
        /// (x, n, alpha, low, high): statsmodels proportion_confint(x, n, alpha, method='wilson').
        pub const WILSON: [(u64, u64, f64, f64, f64); 24] = [
            (0, 50, 0.05, 0.0, 0.07134759913335874),
            (0, 50, 0.01, 0.0, 0.11715209171762801),
            (0, 50, 0.1, 0.0, 0.051333185786270163),
            (50, 50, 0.05, 0.9286524008666412, 1.0),
            (50, 50, 0.01, 0.882847908282372, 1.0),
            (50, 50, 0.1, 0.9486668142137298, 1.0),
            (17, 230, 0.05, 0.04665678605141334, 0.11516849083291518),
            (17, 230, 0.01, 0.04045106003207761, 0.13126873778596684),
            (17, 230, 0.1, 0.05022479994697945, 0.10750905937268959),
            (1, 1, 0.05, 0.2065493143772374, 1.0),
            (1, 1, 0.01, 0.13097754328018574, 0.9999999999999999),
            (1, 1, 0.1, 0.269865948784054, 1.0),
            (0, 1, 0.05, 0.0, 0.7934506856227627),
            (0, 1, 0.01, 0.0, 0.8690224567198142),
            (0, 1, 0.1, 0.0, 0.730134051215946),
            (5000, 100000, 0.05, 0.04866638929097824, 0.051368182510346506),
            (5000, 100000, 0.01, 0.04825439507970588, 0.051805315027999406),
            (5000, 100000, 0.1, 0.04887848744895171, 0.0511458617833561),
            (3, 7, 0.05, 0.15821985525146964, 0.7495416354723428),
            (3, 7, 0.01, 0.11637368051613811, 0.8102850959116126),
            (3, 7, 0.1, 0.186443190363956, 0.7105229089864071),
            (999999, 1000000, 0.05, 0.9999943350881957, 0.9999998234754233),
            (999999, 1000000, 0.01, 0.9999914825661653, 0.9999998825945251),
            (999999, 1000000, 0.1, 0.999995517561529, 0.9999997769077474),
        ];
        /// unequal variances and sizes
        pub const W1_A: [f64; 23] = [
            0.3698, 0.4395, 0.2961, 0.2329, 0.4194, 0.4816, 0.5077, 0.1661, 0.5906, 0.559, 0.3374, 0.3748, 0.2427,
            0.567, 0.5452, 0.4915, 0.3082, 0.5221, 0.4955, 0.3884, 0.1143, 0.5123, 0.3931,
        ];
        pub const W1_B: [f64; 11] =
            [0.6823, 0.5295, -0.1354, 0.4386, 0.6502, 0.8101, 0.3431, 0.3331, 0.4829, 0.4328, 0.4058];
        /// numpy (len, mean, var(ddof=1)) of A and B.
        pub const W1_SUMMARY_A: (u64, f64, f64) = (23, 0.40674782608695653, 0.017664120790513833);
        pub const W1_SUMMARY_B: (u64, f64, f64) = (11, 0.45209090909090915, 0.06012357290909093);
        /// scipy ttest_ind_from_stats(B, A, equal_var=False): (t, dof, p, mean_B - mean_A).
        pub const W1_TTEST: (f64, f64, f64, f64) =
            (0.5742951512686708, 12.891969817624563, 0.5756521436485893, 0.04534308300395262);
        /// (alpha, low, high): CompareMeans(DescrStatsW(B), DescrStatsW(A)).tconfint_diff(alpha, 'unequal').
        pub const W1_DIFF_CI: [(f64, f64, f64); 3] = [
            (0.05, -0.1253727634081022, 0.21605892941600743),
            (0.01, -0.19282106505583846, 0.2835072310637437),
            (0.1, -0.09456941237850514, 0.18525557838641038),
        ];
        /// (side, alpha, low, high): scipy.stats.t.interval(1 - alpha, n - 1, loc=mean, scale=sqrt(var / n)).
        pub const W1_MEAN_CI: [(&str, f64, f64, f64); 6] = [
            ("A", 0.05, 0.3492747732280199, 0.46422087894589315),
            ("A", 0.01, 0.32863189962331385, 0.4848637525505992),
            ("A", 0.1, 0.3591607625764001, 0.45433488959751295),
            ("B", 0.05, 0.2873625776348235, 0.6168192405469948),
            ("B", 0.01, 0.21778369846794413, 0.6863981197138742),
            ("B", 0.1, 0.3180940101437737, 0.5860878080380445),
        ];
        /// n = 2 on both sides
        pub const W2_A: [f64; 2] = [1.5, 2.25];
        pub const W2_B: [f64; 2] = [3.0, 4.75];
        /// numpy (len, mean, var(ddof=1)) of A and B.
        pub const W2_SUMMARY_A: (u64, f64, f64) = (2, 1.875, 0.28125);
        pub const W2_SUMMARY_B: (u64, f64, f64) = (2, 3.875, 1.53125);
        /// scipy ttest_ind_from_stats(B, A, equal_var=False): (t, dof, p, mean_B - mean_A).
        pub const W2_TTEST: (f64, f64, f64, f64) = (2.1009029257555607, 1.35535858178888, 0.22761458561238465, 2.0);
        /// (alpha, low, high): CompareMeans(DescrStatsW(B), DescrStatsW(A)).tconfint_diff(alpha, 'unequal').
        pub const W2_DIFF_CI: [(f64, f64, f64); 3] = [
            (0.05, -4.6672158600484215, 8.667215860048422),
            (0.01, -20.05106538089951, 24.05106538089951),
            (0.1, -1.9290012227246724, 5.929001222724672),
        ];
        /// (side, alpha, low, high): scipy.stats.t.interval(1 - alpha, n - 1, loc=mean, scale=sqrt(var / n)).
        pub const W2_MEAN_CI: [(&str, f64, f64, f64); 6] = [
            ("A", 0.05, -2.88982677606551, 6.63982677606551),
            ("A", 0.01, -21.996277936076822, 25.746277936076822),
            ("A", 0.1, -0.49265681800314187, 4.242656818003139),
            ("B", 0.05, -7.242929144152857, 14.992929144152857),
            ("B", 0.01, -51.824648517512585, 59.574648517512585),
            ("B", 0.1, -1.6495325753406638, 9.399532575340658),
        ];
        /// skewed data, n = 40 vs 7
        pub const W3_A: [f64; 40] = [
            13.744, 1.412, 18.114, 0.706, 20.742, 8.461, 36.958, 18.263, 3.708, 18.99, 12.352, 5.364, 1.99, 9.915,
            2.946, 2.383, 28.328, 1.841, 0.736, 20.167, 1.008, 6.205, 24.955, 7.302, 2.822, 5.72, 0.62, 2.398, 10.273,
            38.689, 20.941, 13.322, 3.883, 4.313, 16.657, 34.008, 6.213, 14.165, 8.201, 13.91,
        ];
        pub const W3_B: [f64; 7] = [9.642, 1.491, 13.234, 11.725, 0.193, 20.536, 14.892];
        /// numpy (len, mean, var(ddof=1)) of A and B.
        pub const W3_SUMMARY_A: (u64, f64, f64) = (40, 11.568124999999998, 107.73852103525641);
        pub const W3_SUMMARY_B: (u64, f64, f64) = (7, 10.244714285714284, 52.77710657142857);
        /// scipy ttest_ind_from_stats(B, A, equal_var=False): (t, dof, p, mean_B - mean_A).
        pub const W3_TTEST: (f64, f64, f64, f64) =
            (-0.41370627201760896, 10.839816740186704, 0.6871560639596945, -1.323410714285714);
        /// (alpha, low, high): CompareMeans(DescrStatsW(B), DescrStatsW(A)).tconfint_diff(alpha, 'unequal').
        pub const W3_DIFF_CI: [(f64, f64, f64); 3] = [
            (0.05, -8.376887358127114, 5.730065929555683),
            (0.01, -11.288186670086926, 8.641365241515494),
            (0.1, -7.07606994486941, 4.429248516297978),
        ];
        /// (side, alpha, low, high): scipy.stats.t.interval(1 - alpha, n - 1, loc=mean, scale=sqrt(var / n)).
        pub const W3_MEAN_CI: [(&str, f64, f64, f64); 6] = [
            ("A", 0.05, 8.248530518056135, 14.887719481943861),
            ("A", 0.01, 7.123959273767886, 16.01229072623211),
            ("A", 0.1, 8.802946147713744, 14.333303852286253),
            ("B", 0.05, 3.5259084175083295, 16.96352015392024),
            ("B", 0.01, 0.06474432317866707, 20.424684248249903),
            ("B", 0.1, 4.90907006722757, 15.580358504200994),
        ];
        /// zero variance on side A only
        pub const W4_A: [f64; 4] = [1.0, 1.0, 1.0, 1.0];
        pub const W4_B: [f64; 3] = [0.5, 1.5, 2.0];
        /// numpy (len, mean, var(ddof=1)) of A and B.
        pub const W4_SUMMARY_A: (u64, f64, f64) = (4, 1.0, 0.0);
        pub const W4_SUMMARY_B: (u64, f64, f64) = (3, 1.3333333333333333, 0.5833333333333333);
        /// scipy ttest_ind_from_stats(B, A, equal_var=False): (t, dof, p, mean_B - mean_A).
        pub const W4_TTEST: (f64, f64, f64, f64) = (0.7559289460184544, 2.0, 0.5285954792089683, 0.33333333333333326);
        /// (alpha, low, high): CompareMeans(DescrStatsW(B), DescrStatsW(A)).tconfint_diff(alpha, 'unequal').
        pub const W4_DIFF_CI: [(f64, f64, f64); 3] = [
            (0.05, -1.5639581834650462, 2.2306248501317127),
            (0.01, -4.043111151823341, 4.709777818490007),
            (0.1, -0.9542592795850942, 1.6209259462517607),
        ];
        /// (side, alpha, low, high): scipy.stats.t.interval(1 - alpha, n - 1, loc=mean, scale=sqrt(var / n)).
        pub const W4_MEAN_CI: [(&str, f64, f64, f64); 6] = [
            ("A", 0.05, f64::NAN, f64::NAN),
            ("A", 0.01, f64::NAN, f64::NAN),
            ("A", 0.1, f64::NAN, f64::NAN),
            ("B", 0.05, -0.5639581834650462, 3.2306248501317127),
            ("B", 0.01, -3.043111151823341, 5.709777818490007),
            ("B", 0.1, 0.045740720414904956, 2.6209259462517607),
        ];
        /// zero variance on both sides (reference: nan)
        pub const W5_A: [f64; 3] = [2.0, 2.0, 2.0];
        pub const W5_B: [f64; 2] = [3.0, 3.0];
        /// numpy (len, mean, var(ddof=1)) of A and B.
        pub const W5_SUMMARY_A: (u64, f64, f64) = (3, 2.0, 0.0);
        pub const W5_SUMMARY_B: (u64, f64, f64) = (2, 3.0, 0.0);
        /// scipy ttest_ind_from_stats(B, A, equal_var=False): (t, dof, p, mean_B - mean_A).
        pub const W5_TTEST: (f64, f64, f64, f64) = (f64::NAN, f64::NAN, f64::NAN, 1.0);
        /// (alpha, low, high): CompareMeans(DescrStatsW(B), DescrStatsW(A)).tconfint_diff(alpha, 'unequal').
        pub const W5_DIFF_CI: [(f64, f64, f64); 3] =
            [(0.05, f64::NAN, f64::NAN), (0.01, f64::NAN, f64::NAN), (0.1, f64::NAN, f64::NAN)];
        /// (side, alpha, low, high): scipy.stats.t.interval(1 - alpha, n - 1, loc=mean, scale=sqrt(var / n)).
        pub const W5_MEAN_CI: [(&str, f64, f64, f64); 6] = [
            ("A", 0.05, f64::NAN, f64::NAN),
            ("A", 0.01, f64::NAN, f64::NAN),
            ("A", 0.1, f64::NAN, f64::NAN),
            ("B", 0.05, f64::NAN, f64::NAN),
            ("B", 0.01, f64::NAN, f64::NAN),
            ("B", 0.1, f64::NAN, f64::NAN),
        ];
        /// Summaries (n, mean, var) with large n, for ttest_ind_from_stats(B, A, equal_var=False).
        pub const BIG_A: (u64, f64, f64) = (1000000, 0.8123, 0.1523);
        pub const BIG_B: (u64, f64, f64) = (900000, 0.8131, 0.1511);
        pub const BIG_TTEST: (f64, f64, f64, f64) =
            (1.4137963576446124, 1880638.9150064623, 0.15742186886349083, 0.0008000000000000229);
        /// The 95% Welch interval for the same summaries (statsmodels' _tconfint_generic, as in tconfint_diff).
        pub const BIG_DIFF_CI: (f64, f64) = (-0.0003090509522737106, 0.0019090509522737564);
        /// Split at 20 and 45 and merged back; numpy (len, mean, var(ddof=1)) of the whole.
        pub const MERGE_ALL: [f64; 57] = [
            130.54, 114.04, 133.25, 98.02, 66.63, 85.4, 126.84, 104.03, 89.13, 121.14, 78.69, 136.84, 93.69, 80.91,
            105.58, 124.48, 63.25, 105.49, 110.81, 90.36, 111.97, 88.27, 80.8, 91.77, 118.71, 123.12, 124.59, 58.86,
            106.12, 122.93, 125.2, 116.48, 87.15, 78.94, 82.63, 112.5, 91.72, 116.76, 117.0, 131.26, 79.77, 101.16,
            91.67, 69.82, 74.81, 93.22, 95.98, 152.6, 112.13, 81.31, 129.92, 111.51, 128.21, 96.07, 107.06, 114.57,
            104.11,
        ];
        pub const MERGE_SUMMARY: (u64, f64, f64) = (57, 103.3301754385965, 431.9963588972431);
        /// SRM: fair 90/10 split.
        pub const SRM_0_OBSERVED: [u64; 2] = [9012, 988];
        pub const SRM_0_WEIGHTS: [f64; 2] = [0.9, 0.1];
        /// scipy.stats.chisquare(observed, expected) over the arms with weight > 0: (statistic, dof, p).
        pub const SRM_0_EXPECTED: (f64, u64, f64) = (0.15999999999999998, 1, 0.6891565167793516);
        /// SRM: skewed 90/10 split, p < 0.001.
        pub const SRM_1_OBSERVED: [u64; 2] = [8700, 1300];
        pub const SRM_1_WEIGHTS: [f64; 2] = [90.0, 10.0];
        /// scipy.stats.chisquare(observed, expected) over the arms with weight > 0: (statistic, dof, p).
        pub const SRM_1_EXPECTED: (f64, u64, f64) = (100.0, 1, 1.5239706048320995e-23);
        /// SRM: three arms.
        pub const SRM_2_OBSERVED: [u64; 3] = [5120, 2440, 2440];
        pub const SRM_2_WEIGHTS: [f64; 3] = [0.5, 0.25, 0.25];
        /// scipy.stats.chisquare(observed, expected) over the arms with weight > 0: (statistic, dof, p).
        pub const SRM_2_EXPECTED: (f64, u64, f64) = (5.76, 2, 0.05613476283413374);
        /// SRM: three equal arms.
        pub const SRM_3_OBSERVED: [u64; 3] = [3402, 3299, 3299];
        pub const SRM_3_WEIGHTS: [f64; 3] = [1.0, 1.0, 1.0];
        /// scipy.stats.chisquare(observed, expected) over the arms with weight > 0: (statistic, dof, p).
        pub const SRM_3_EXPECTED: (f64, u64, f64) = (2.1218000000000004, 2, 0.34614414037327873);
        /// SRM: an arm with weight > 0 and no traffic.
        pub const SRM_4_OBSERVED: [u64; 2] = [1000, 0];
        pub const SRM_4_WEIGHTS: [f64; 2] = [0.5, 0.5];
        /// scipy.stats.chisquare(observed, expected) over the arms with weight > 0: (statistic, dof, p).
        pub const SRM_4_EXPECTED: (f64, u64, f64) = (1000.0, 1, 1.7958327848007363e-219);
        /// SRM: weight-0 arm skipped: chisquare([500, 480], [490, 490]).
        pub const SRM_5_OBSERVED: [u64; 3] = [500, 480, 20];
        pub const SRM_5_WEIGHTS: [f64; 3] = [0.5, 0.5, 0.0];
        /// scipy.stats.chisquare(observed, expected) over the arms with weight > 0: (statistic, dof, p).
        pub const SRM_5_EXPECTED: (f64, u64, f64) = (0.40816326530612246, 1, 0.5229032345126705);
        /// SRM: N = 0: statistic 0, p = 1 (scipy: nan).
        pub const SRM_6_OBSERVED: [u64; 2] = [0, 0];
        pub const SRM_6_WEIGHTS: [f64; 2] = [0.9, 0.1];
        /// scipy.stats.chisquare(observed, expected) over the arms with weight > 0: (statistic, dof, p).
        pub const SRM_6_EXPECTED: (f64, u64, f64) = (0.0, 1, 1.0);
    }
    // ---- END GENERATED ----

    const TOL: f64 = 1e-9;

    #[track_caller]
    fn assert_close(got: f64, expected: f64, what: &str) {
        if expected.is_infinite() {
            assert_eq!(got, expected, "{what}");
            return;
        }
        let ok = (got - expected).abs() <= TOL + TOL * expected.abs();
        assert!(ok, "{what}: got {got:e}, expected {expected:e} (diff {:e})", (got - expected).abs());
    }

    #[track_caller]
    fn assert_interval(got: Option<(f64, f64)>, expected: (f64, f64), what: &str) {
        if expected.0.is_nan() {
            assert_eq!(got, None, "{what}: the reference gives NaN");
            return;
        }
        let got = got.unwrap_or((f64::NAN, f64::NAN));
        assert_close(got.0, expected.0, &format!("{what} low"));
        assert_close(got.1, expected.1, &format!("{what} high"));
    }

    fn summary(s: (u64, f64, f64)) -> Summary {
        Summary { n: s.0, mean: s.1, var: s.2 }
    }

    // ---- quantiles ----

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

    // ---- proportions ----

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

    // ---- means ----

    /// (A data, B data, numpy summary of A, of B).
    type Dataset = (&'static [f64], &'static [f64], (u64, f64, f64), (u64, f64, f64));
    /// (tag, data, expected (t, dof, p, diff), expected (alpha, low, high) rows).
    type WelchCase = (&'static str, Dataset, (f64, f64, f64, f64), &'static [(f64, f64, f64)]);
    /// (tag, expected (side, alpha, low, high) rows).
    type MeanCiCase = (&'static str, &'static [(&'static str, f64, f64, f64)]);
    /// (observed, weights, expected (statistic, dof, p)).
    type SrmCase = (&'static [u64], &'static [f64], (f64, u64, f64));

    fn datasets() -> Vec<WelchCase> {
        use reference::*;
        vec![
            ("W1", (&W1_A, &W1_B, W1_SUMMARY_A, W1_SUMMARY_B), W1_TTEST, &W1_DIFF_CI),
            ("W2", (&W2_A, &W2_B, W2_SUMMARY_A, W2_SUMMARY_B), W2_TTEST, &W2_DIFF_CI),
            ("W3", (&W3_A, &W3_B, W3_SUMMARY_A, W3_SUMMARY_B), W3_TTEST, &W3_DIFF_CI),
            ("W4", (&W4_A, &W4_B, W4_SUMMARY_A, W4_SUMMARY_B), W4_TTEST, &W4_DIFF_CI),
            ("W5", (&W5_A, &W5_B, W5_SUMMARY_A, W5_SUMMARY_B), W5_TTEST, &W5_DIFF_CI),
        ]
    }

    fn mean_cis() -> Vec<MeanCiCase> {
        use reference::*;
        vec![("W1", &W1_MEAN_CI), ("W2", &W2_MEAN_CI), ("W3", &W3_MEAN_CI), ("W4", &W4_MEAN_CI), ("W5", &W5_MEAN_CI)]
    }

    #[test]
    fn summaries_match_numpy() {
        for (tag, (a, b, sa, sb), _, _) in datasets() {
            for (side, data, expected) in [("A", a, sa), ("B", b, sb)] {
                let s = Summary::from_values(data).unwrap();
                assert_eq!(s.n, expected.0, "{tag} {side} n");
                assert_close(s.mean, expected.1, &format!("{tag} {side} mean"));
                assert_close(s.var, expected.2, &format!("{tag} {side} var"));
            }
        }
    }

    #[test]
    fn from_values_edges() {
        assert_eq!(Summary::from_values(&[]), None);
        assert_eq!(Summary::from_values(&[1.0, f64::NAN]), None);
        assert_eq!(Summary::from_values(&[1.0, f64::INFINITY]), None);
        assert_eq!(Summary::from_values(&[2.5]), Some(Summary { n: 1, mean: 2.5, var: 0.0 }));
    }

    #[test]
    fn merge_matches_numpy() {
        let all = &reference::MERGE_ALL;
        let expected = reference::MERGE_SUMMARY;
        let p1 = Summary::from_values(&all[..20]).unwrap();
        let p2 = Summary::from_values(&all[20..45]).unwrap();
        let p3 = Summary::from_values(&all[45..]).unwrap();
        for merged in [p1.merge(&p2).merge(&p3), p3.merge(&p1.merge(&p2)), p2.merge(&p3).merge(&p1)] {
            assert_eq!(merged.n, expected.0);
            assert_close(merged.mean, expected.1, "merged mean");
            assert_close(merged.var, expected.2, "merged var");
        }
        // Singletons merged one by one, and the empty summary as identity.
        let mut acc = Summary::default();
        for &x in all {
            acc = acc.merge(&Summary::from_values(&[x]).unwrap());
        }
        assert_eq!(acc.n, expected.0);
        assert_close(acc.mean, expected.1, "singleton merge mean");
        assert_close(acc.var, expected.2, "singleton merge var");
        assert_eq!(p1.merge(&Summary::default()), p1);
        assert_eq!(Summary::default().merge(&p1), p1);
    }

    #[test]
    fn welch_matches_scipy() {
        for (tag, (a, b, sa, sb), (t, dof, p, diff), _) in datasets() {
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
        for (tag, (a, b, _, _), _, cis) in datasets() {
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
        for ((tag, (a, b, _, _), _, _), (_, rows)) in datasets().into_iter().zip(mean_cis()) {
            for &(side, alpha, low, high) in rows {
                let s = Summary::from_values(if side == "A" { a } else { b }).unwrap();
                assert_interval(mean_ci(&s, alpha), (low, high), &format!("{tag} {side} t.interval({alpha})"));
            }
        }
    }

    // ---- SRM ----

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
