//! Survival functions of the chi-squared, standard normal and Student's t distributions
//! (`scipy.stats.{chi2,norm,t}.sf`), through the incomplete gamma and beta functions of
//! [`crate::special`]; measured against scipy 1.17 they agree to 5e-15 absolute (relative error
//! near 1e-13 unless the result is tiny). The quantile functions of the normal and t
//! distributions, and the critical values of two-sided intervals, are in `ppf`.

mod ppf;

pub(crate) use ppf::{check_alpha, normal_critical};
pub use ppf::{normal_ppf, students_t_ppf};

use crate::special::{gamma_q, inc_beta};

/// Survival function of the chi-squared distribution, `scipy.stats.chi2.sf(x, dof)`
/// (= `scipy.special.chdtrc(dof, x)` = Q(dof / 2, x / 2)). x <= 0 gives 1. `None` for dof <= 0 or NaN input.
pub fn chi2_sf(x: f64, dof: f64) -> Option<f64> {
    if x.is_nan() || dof.is_nan() || dof <= 0.0 {
        return None;
    }
    if x <= 0.0 {
        return Some(1.0);
    }
    gamma_q(dof / 2.0, x / 2.0)
}

/// Survival function of the standard normal distribution, `scipy.stats.norm.sf(z)` = erfc(z / sqrt 2) / 2,
/// through Q(1/2, z^2 / 2); relative error around 1e-14 in the upper tail. NaN for NaN input.
pub fn normal_sf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    let tail = gamma_q(0.5, z * z / 2.0).map_or(f64::NAN, |q| 0.5 * q);
    if z >= 0.0 { tail } else { 1.0 - tail }
}

/// Survival function of Student's t distribution, `scipy.stats.t.sf(t, df)`, as
/// I_{df/(df+t^2)}(df/2, 1/2) / 2 (incomplete beta by continued fraction). Relative error around 1e-13 for
/// moderate df (about 1e-11 for df near 10^6). `None` for df <= 0 or NaN input.
pub fn students_t_sf(t: f64, df: f64) -> Option<f64> {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return None;
    }
    if t.is_infinite() {
        return Some(if t > 0.0 { 0.0 } else { 1.0 });
    }
    if df.is_infinite() {
        return Some(normal_sf(t));
    }
    if t == 0.0 {
        return Some(0.5);
    }
    let t2 = t * t;
    let x = df / (df + t2);
    let y = t2 / (df + t2);
    let ln_x = -(t2 / df).ln_1p();
    let ln_y = -(df / t2).ln_1p();
    let tail = 0.5 * inc_beta(df / 2.0, 0.5, x, y, ln_x, ln_y);
    Some(if t > 0.0 { tail } else { 1.0 - tail })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;
    use crate::reference::assert_close;
    use crate::reference::monitor::*;

    #[test]
    fn survival_functions_match_scipy() {
        for &(x, k, e) in &CHI2_SF {
            assert_close(chi2_sf(x, k).unwrap(), e, &format!("chi2.sf({x}, {k})"));
        }
        for &(z, e) in &NORMAL_SF {
            assert_close(normal_sf(z), e, &format!("norm.sf({z})"));
        }
        for &(t, df, e) in &T_SF {
            assert_close(students_t_sf(t, df).unwrap(), e, &format!("t.sf({t}, {df})"));
        }
        assert_eq!(chi2_sf(1.0, 0.0), None);
        assert_eq!(chi2_sf(-1.0, 3.0), Some(1.0));
        assert_eq!(students_t_sf(1.0, -2.0), None);
    }
}
