//! Special functions: lnΓ, the regularized upper incomplete gamma function Q(a, x) and the
//! regularized incomplete beta function, the building blocks of the survival functions in
//! [`crate::distributions`]. Each doc comment gives the accuracy measured against scipy.

use std::f64::consts::PI;

/// Stirling series correction: lnΓ(x) - [(x - 0.5) ln x - x + 0.5 ln(2π)], for x >= 10.
fn stirling_correction(x: f64) -> f64 {
    // B_{2j} / (2j (2j - 1)), j = 8 .. 1
    const C: [f64; 8] = [
        -3617.0 / 122_400.0,
        1.0 / 156.0,
        -691.0 / 360_360.0,
        1.0 / 1188.0,
        -1.0 / 1680.0,
        1.0 / 1260.0,
        -1.0 / 360.0,
        1.0 / 12.0,
    ];
    let r = 1.0 / x;
    let r2 = r * r;
    r * C.iter().fold(0.0, |acc, c| acc * r2 + c)
}

/// Natural log of the gamma function for x > 0 (Stirling's series with 8 terms, after shifting the
/// argument to at least 10); absolute error about 1e-15 for x < 10, relative error about 1e-16 above.
/// NaN for x <= 0 or NaN.
pub fn ln_gamma(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return f64::NAN;
    }
    if x.is_infinite() {
        return f64::INFINITY;
    }
    let mut shift = 1.0f64;
    let mut y = x;
    while y < 10.0 {
        shift *= y;
        y += 1.0;
    }
    (y - 0.5) * y.ln() - y + 0.5 * (2.0 * PI).ln() + stirling_correction(y) - shift.ln()
}

/// ln(1 + t) - t, accurate for small t.
fn log1pmx(t: f64) -> f64 {
    if t.abs() < 0.25 {
        let mut term = t;
        let mut sum = 0.0f64;
        for k in 2..200 {
            term *= -t;
            let add = term / k as f64;
            sum += add;
            if add.abs() <= f64::EPSILON * 1e-3 * sum.abs() {
                break;
            }
        }
        sum
    } else {
        t.ln_1p() - t
    }
}

/// ln(x^a e^-x / Γ(a)), the prefactor of the incomplete gamma series and continued fraction.
fn ln_gamma_prefactor(a: f64, x: f64) -> f64 {
    if a >= 10.0 {
        a * log1pmx((x - a) / a) + 0.5 * (a / (2.0 * PI)).ln() - stirling_correction(a)
    } else {
        a * x.ln() - x - ln_gamma(a)
    }
}

/// Regularized upper incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a) for a > 0, x >= 0
/// (`scipy.special.gammaincc(a, x)`): power series for P = 1 - Q when x < a + 1, Lentz's continued fraction for
/// Q otherwise. Measured against scipy: absolute error below 5e-15; relative error below 5e-14 for a <= 50,
/// 5e-13 for a <= 500, and up to about 1e-11 in the far tails (Q < 1e-200) for a in the thousands.
/// `None` for a <= 0, x < 0 or NaN.
pub fn gamma_q(a: f64, x: f64) -> Option<f64> {
    if a.is_nan() || x.is_nan() || a <= 0.0 || x < 0.0 || a.is_infinite() {
        return None;
    }
    if x == 0.0 {
        return Some(1.0);
    }
    if x.is_infinite() {
        return Some(0.0);
    }
    const EPS: f64 = 1e-17;
    const FPMIN: f64 = 1e-300;
    const MAX_ITER: usize = 1_000_000;
    let ln_pre = ln_gamma_prefactor(a, x);
    if x < a + 1.0 {
        let mut ap = a;
        let mut del = 1.0 / a;
        let mut sum = del;
        for _ in 0..MAX_ITER {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * EPS {
                break;
            }
        }
        let p = sum * ln_pre.exp();
        Some((1.0 - p).clamp(0.0, 1.0))
    } else {
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / FPMIN;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..MAX_ITER {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < FPMIN {
                d = FPMIN;
            }
            c = b + an / c;
            if c.abs() < FPMIN {
                c = FPMIN;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < EPS {
                break;
            }
        }
        Some((ln_pre.exp() * h).clamp(0.0, 1.0))
    }
}

/// lnΓ(a + b) - lnΓ(a) without cancellation for large a.
pub(crate) fn ln_gamma_ratio(a: f64, b: f64) -> f64 {
    if a >= 10.0 {
        (a - 0.5) * (b / a).ln_1p() + b * (a + b).ln() - b + stirling_correction(a + b) - stirling_correction(a)
    } else {
        ln_gamma(a + b) - ln_gamma(a)
    }
}

/// ln B(a, b).
fn ln_beta(a: f64, b: f64) -> f64 {
    let (big, small) = if a >= b { (a, b) } else { (b, a) };
    ln_gamma(small) - ln_gamma_ratio(big, small)
}

/// Continued fraction for the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const EPS: f64 = 1e-17;
    const FPMIN: f64 = 1e-300;
    let qab = a + b;
    let qap = a + 1.0;
    let qam = a - 1.0;
    let mut c = 1.0f64;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < FPMIN {
        d = FPMIN;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..1_000_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < FPMIN {
            d = FPMIN;
        }
        c = 1.0 + aa / c;
        if c.abs() < FPMIN {
            c = FPMIN;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < FPMIN {
            d = FPMIN;
        }
        c = 1.0 + aa / c;
        if c.abs() < FPMIN {
            c = FPMIN;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// Regularized incomplete beta I_x(a, b) given x, y = 1 - x and their logs (computed accurately by the caller).
pub(crate) fn inc_beta(a: f64, b: f64, x: f64, y: f64, ln_x: f64, ln_y: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if y <= 0.0 {
        return 1.0;
    }
    let ln_front = a * ln_x + b * ln_y - ln_beta(a, b);
    if x < (a + 1.0) / (a + b + 2.0) {
        (ln_front.exp() * beta_cf(a, b, x) / a).clamp(0.0, 1.0)
    } else {
        (1.0 - ln_front.exp() * beta_cf(b, a, y) / b).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;
    use crate::reference::assert_close;

    #[test]
    fn ln_gamma_matches_known_values() {
        assert_close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), "lgamma(1/2)");
        assert_close(ln_gamma(171.0), 706.5730622457875, "lgamma(171)");
        assert!(ln_gamma(0.0).is_nan() && ln_gamma(-1.0).is_nan());
    }

    #[test]
    fn ln_gamma_ratio_is_the_difference_without_cancellation() {
        for a in [0.3, 1.0, 4.5, 9.99, 10.0, 37.5, 1e3] {
            for b in [0.5, 1.0, 2.5] {
                let plain = ln_gamma(a + b) - ln_gamma(a);
                assert_close(ln_gamma_ratio(a, b), plain, &format!("lnΓ({a} + {b}) - lnΓ({a})"));
            }
        }
    }
}
