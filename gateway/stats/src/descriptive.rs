//! Descriptive statistics of one sample: quantiles with numpy's default linear interpolation, and
//! the count / mean / variance [`Summary`] that an experiment keeps per arm and merges across
//! scans; plus the sample helpers (sorted copy, finiteness, mean) the other modules share.

/// An ascending copy of `values` (ordered by `f64::total_cmp`).
pub(crate) fn sorted_copy(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// No NaN and no infinity in `values`.
pub(crate) fn all_finite(values: &[f64]) -> bool {
    values.iter().all(|v| v.is_finite())
}

/// Arithmetic mean; `None` for an empty slice.
pub(crate) fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some(values.iter().sum::<f64>() / values.len() as f64)
}

/// Quantile `p` (0 <= p <= 1) of an ascending slice with linear interpolation (Hyndman & Fan type 7):
/// `numpy.quantile(values, p)` with the default `method="linear"`, including numpy's `_lerp`, which
/// interpolates from the upper neighbour when the fraction is at least 0.5. `None` when the slice is empty or
/// `p` is outside [0, 1] or NaN. The slice must already be sorted and free of NaN.
pub fn quantile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&p) {
        return None;
    }
    let n = sorted.len();
    let last = *sorted.last()?;
    let virtual_index = (n - 1) as f64 * p;
    if virtual_index >= (n - 1) as f64 {
        return Some(last);
    }
    let previous = virtual_index.floor();
    let gamma = virtual_index - previous;
    let i = previous as usize;
    let a = *sorted.get(i)?;
    let b = *sorted.get(i + 1)?;
    let diff = b - a;
    if gamma >= 0.5 { Some(b - diff * (1.0 - gamma)) } else { Some(a + diff * gamma) }
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
    pub(crate) fn checked(&self) -> Option<(f64, f64, f64)> {
        if self.n < 2 || !self.mean.is_finite() || !self.var.is_finite() || self.var < 0.0 {
            return None;
        }
        Some((self.n as f64, self.mean, self.var))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;
    use crate::reference::experiment as reference;
    use crate::reference::monitor::*;
    use crate::reference::{assert_close, welch_datasets};

    #[test]
    fn quantiles_match_numpy_linear() {
        for (p, e) in Q_PS.iter().zip(Q_EXPECTED) {
            assert_close(quantile_sorted(&Q_SORTED, *p).unwrap(), e, &format!("quantile {p}"));
        }
        for (p, e) in Q_PS.iter().zip(Q_DUP_EXPECTED) {
            assert_close(quantile_sorted(&Q_DUP, *p).unwrap(), e, &format!("quantile dup {p}"));
        }
        assert_eq!(quantile_sorted(&[], 0.5), None);
        assert_eq!(quantile_sorted(&[1.0], 1.5), None);
        assert_eq!(quantile_sorted(&[1.0], f64::NAN), None);
        assert_eq!(quantile_sorted(&[4.0], 0.3), Some(4.0));
    }

    #[test]
    fn summaries_match_numpy() {
        for (tag, (a, b, sa, sb), _, _) in welch_datasets() {
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
}
