//! Per window x model x slice accumulators: one per monitored column plus one for model quality.
//! Counts, sums, min/max and confusion matrices are exact for any number of rows. Values for
//! quantiles, KS and Wasserstein are kept exactly up to `cap` per accumulator; beyond that a
//! seeded uniform reservoir sample of `cap` values stands in for them (and a HyperLogLog sketch
//! for the distinct count), so memory stays bounded however large a window grows.

use crate::analysis::classes::ClassPairs;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Distinct string values counted exactly per accumulator; more go to a sketch.
const MAX_CATEGORIES: usize = 10_000;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_u64(bits: u64) -> u64 {
    let mut s = bits;
    splitmix(&mut s)
}

fn hash_str(s: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    s.hash(&mut h);
    hash_u64(h.finish())
}

/// HyperLogLog with 2^12 registers (standard error about 1.6%).
#[derive(Debug, Clone)]
pub struct Hll {
    registers: Vec<u8>,
}

impl Hll {
    const P: u32 = 12;

    fn new() -> Hll {
        Hll { registers: vec![0; 1 << Self::P] }
    }

    fn insert(&mut self, hash: u64) {
        let idx = (hash >> (64 - Self::P)) as usize;
        let rank = ((hash << Self::P) | (1 << (Self::P - 1))).leading_zeros() as u8 + 1;
        if let Some(r) = self.registers.get_mut(idx) {
            *r = (*r).max(rank);
        }
    }

    fn estimate(&self) -> u64 {
        let m = self.registers.len() as f64;
        let sum: f64 = self.registers.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
        let raw = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
        let zeros = self.registers.iter().filter(|&&r| r == 0).count();
        let est = if raw <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { raw };
        est.round() as u64
    }
}

/// A numeric column.
#[derive(Debug, Clone)]
pub struct NumAcc {
    pub rows: u64,
    pub nulls: u64,
    pub nan: u64,
    pub zeros: u64,
    /// Non-null, non-NaN values seen.
    pub n: u64,
    pub sum: f64,
    mean: f64,
    m2: f64,
    pub min: f64,
    pub max: f64,
    /// All values (n <= cap) or a uniform sample of `cap` of them; sorted after `finish`.
    pub values: Vec<f64>,
    pub sampled: bool,
    rng: u64,
    hll: Option<Box<Hll>>,
}

impl NumAcc {
    fn new(seed: u64) -> NumAcc {
        NumAcc {
            rows: 0,
            nulls: 0,
            nan: 0,
            zeros: 0,
            n: 0,
            sum: 0.0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            values: Vec::new(),
            sampled: false,
            rng: seed,
            hll: None,
        }
    }

    pub fn push(&mut self, v: Option<f64>, cap: usize) {
        self.rows += 1;
        let Some(v) = v else {
            self.nulls += 1;
            return;
        };
        if v.is_nan() {
            self.nan += 1;
            return;
        }
        if v == 0.0 {
            self.zeros += 1;
        }
        self.n += 1;
        self.sum += v;
        let d = v - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (v - self.mean);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        let bits = if v == 0.0 { 0 } else { v.to_bits() };
        if let Some(h) = &mut self.hll {
            h.insert(hash_u64(bits));
        }
        if self.values.len() < cap && !self.sampled {
            self.values.push(v);
            return;
        }
        if !self.sampled {
            self.sampled = true;
            let mut h = Box::new(Hll::new());
            for x in &self.values {
                h.insert(hash_u64(if *x == 0.0 { 0 } else { x.to_bits() }));
            }
            h.insert(hash_u64(bits));
            self.hll = Some(h);
        }
        // Algorithm R: keep each of the n values with probability cap / n.
        let j = splitmix(&mut self.rng) % self.n;
        if let Some(slot) = self.values.get_mut(j as usize) {
            *slot = v;
        }
    }

    pub fn finish(&mut self) {
        self.values.sort_by(f64::total_cmp);
    }

    pub fn avg(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    pub fn stddev(&self) -> Option<f64> {
        (self.n > 1).then(|| (self.m2 / (self.n - 1) as f64).sqrt())
    }

    pub fn distinct(&self) -> u64 {
        match &self.hll {
            Some(h) => h.estimate(),
            None => {
                let mut d = 0u64;
                let mut prev: Option<f64> = None;
                for &v in &self.values {
                    if prev != Some(v) {
                        d += 1;
                    }
                    prev = Some(v);
                }
                d
            }
        }
    }
}

/// A string (categorical) column.
#[derive(Debug, Clone, Default)]
pub struct StrAcc {
    pub rows: u64,
    pub nulls: u64,
    pub n: u64,
    pub counts: HashMap<String, u64>,
    /// Values not counted because `counts` was full.
    pub overflow: u64,
    pub len_min: u64,
    pub len_max: u64,
    pub len_sum: u64,
    hll: Option<Box<Hll>>,
}

impl StrAcc {
    pub fn push(&mut self, v: Option<&str>) {
        self.rows += 1;
        let Some(v) = v else {
            self.nulls += 1;
            return;
        };
        let len = v.chars().count() as u64;
        if self.n == 0 {
            self.len_min = len;
            self.len_max = len;
        }
        self.n += 1;
        self.len_min = self.len_min.min(len);
        self.len_max = self.len_max.max(len);
        self.len_sum += len;
        if let Some(h) = &mut self.hll {
            h.insert(hash_str(v));
        }
        if let Some(c) = self.counts.get_mut(v) {
            *c += 1;
        } else if self.counts.len() < MAX_CATEGORIES {
            self.counts.insert(v.to_string(), 1);
        } else {
            self.overflow += 1;
            if self.hll.is_none() {
                let mut h = Box::new(Hll::new());
                for k in self.counts.keys() {
                    h.insert(hash_str(k));
                }
                h.insert(hash_str(v));
                self.hll = Some(h);
            }
        }
    }

    pub fn distinct(&self) -> u64 {
        match &self.hll {
            Some(h) => h.estimate(),
            None => self.counts.len() as u64,
        }
    }

    /// Top `k` values by count (ties by value).
    pub fn top(&self, k: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self.counts.iter().map(|(s, c)| (s.clone(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }
}

#[derive(Debug, Clone)]
pub enum ColAcc {
    Num(NumAcc),
    Str(StrAcc),
}

impl ColAcc {
    pub fn rows(&self) -> u64 {
        match self {
            ColAcc::Num(a) => a.rows,
            ColAcc::Str(a) => a.rows,
        }
    }
    pub fn nulls(&self) -> u64 {
        match self {
            ColAcc::Num(a) => a.nulls,
            ColAcc::Str(a) => a.nulls,
        }
    }
    pub fn distinct(&self) -> u64 {
        match self {
            ColAcc::Num(a) => a.distinct(),
            ColAcc::Str(a) => a.distinct(),
        }
    }
    pub fn zeros(&self) -> u64 {
        match self {
            ColAcc::Num(a) => a.zeros,
            ColAcc::Str(_) => 0,
        }
    }
}

/// Rows with a label: for classification a confusion count bounded to the top classes plus
/// `__other__` ([`crate::analysis::classes`]; labels are client data) with an exact count of
/// correct rows, and a (bounded) sample of class probabilities for ROC AUC; for regression exact
/// error sums.
#[derive(Debug, Clone, Default)]
pub struct QualityAcc {
    pub confusion: ClassPairs,
    /// Rows whose prediction equals their label (exact, whatever the classes folded).
    pub correct: u64,
    /// (true label, probabilities by class) for ROC AUC.
    pub scored: Vec<(String, Vec<(String, f64)>)>,
    pub scored_seen: u64,
    rng: u64,
    pub n: u64,
    pub sse: f64,
    pub sae: f64,
    pub sape: f64,
    y_mean: f64,
    y_m2: f64,
}

impl QualityAcc {
    pub fn push_class(&mut self, truth: &str, pred: &str, probs: Option<Vec<(String, f64)>>, cap: usize) {
        self.confusion.add(truth, pred, 1);
        if truth == pred {
            self.correct += 1;
        }
        if let Some(p) = probs {
            self.scored_seen += 1;
            if self.scored.len() < cap {
                self.scored.push((truth.to_string(), p));
            } else {
                let j = splitmix(&mut self.rng) % self.scored_seen;
                if let Some(slot) = self.scored.get_mut(j as usize) {
                    *slot = (truth.to_string(), p);
                }
            }
        }
    }

    pub fn push_value(&mut self, y: f64, yhat: f64) {
        self.n += 1;
        let e = y - yhat;
        self.sse += e * e;
        self.sae += e.abs();
        self.sape += e.abs() / y.abs().max(f64::EPSILON);
        let d = y - self.y_mean;
        self.y_mean += d / self.n as f64;
        self.y_m2 += d * (y - self.y_mean);
    }

    pub fn labeled(&self) -> u64 {
        self.n + self.confusion.total()
    }

    /// Sum of squares of y around its mean (R2's denominator).
    pub fn y_ss(&self) -> f64 {
        self.y_m2
    }
}

/// Everything accumulated for one window x model x slice.
#[derive(Debug, Clone)]
pub struct GroupAcc {
    pub rows: u64,
    pub cols: Vec<ColAcc>,
    pub quality: QualityAcc,
}

impl GroupAcc {
    /// `numeric[i]` says whether column `i` is numeric.
    pub fn new(numeric: &[bool]) -> GroupAcc {
        let cols =
            numeric
                .iter()
                .enumerate()
                .map(|(i, &num)| {
                    if num { ColAcc::Num(NumAcc::new(0x5EED_0000 + i as u64)) } else { ColAcc::Str(StrAcc::default()) }
                })
                .collect();
        GroupAcc { rows: 0, cols, quality: QualityAcc::default() }
    }

    pub fn finish(&mut self) {
        for c in &mut self.cols {
            if let ColAcc::Num(a) = c {
                a.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_exact_below_cap_and_sampled_above() {
        let mut a = NumAcc::new(1);
        for v in [Some(1.0), None, Some(f64::NAN), Some(0.0), Some(3.0), Some(3.0)] {
            a.push(v, 10);
        }
        a.finish();
        assert_eq!((a.rows, a.nulls, a.nan, a.zeros, a.n), (6, 1, 1, 1, 4));
        assert_eq!(a.values, vec![0.0, 1.0, 3.0, 3.0]);
        assert_eq!(a.distinct(), 3);
        assert_eq!(a.avg(), Some(1.75));
        let mut b = NumAcc::new(1);
        for i in 0..100_000 {
            b.push(Some(f64::from(i % 5000)), 1000);
        }
        b.finish();
        assert_eq!(b.values.len(), 1000);
        assert!(b.sampled);
        let d = b.distinct() as f64;
        assert!((d - 5000.0).abs() / 5000.0 < 0.05, "{d}");
        // a uniform sample: its median is near the true one (2499.5)
        let med = b.values[500];
        assert!((med - 2500.0).abs() < 250.0, "{med}");
    }

    /// Above the cap, quantiles come from a uniform sample of `cap` values. By the DKW
    /// inequality the sample's CDF is within 0.01 of the data's everywhere with probability
    /// 1 - 2exp(-2 * 100000 * 0.01^2) > 1 - 1e-8: the stated tolerance of sampled quantiles,
    /// KS and PSI. Checked here on 1M values.
    #[test]
    fn sampled_quantiles_are_within_the_dkw_bound() {
        let n: u64 = 1_000_000;
        let mut a = NumAcc::new(42);
        let mut all = Vec::with_capacity(n as usize);
        for i in 0..n {
            let x = ((i * 7919) % 1_000_003) as f64 + ((i % 7) as f64).sqrt();
            all.push(x);
            a.push(Some(x), 100_000);
        }
        a.finish();
        all.sort_by(f64::total_cmp);
        assert_eq!(a.values.len(), 100_000);
        for k in 0..=100 {
            let p = f64::from(k) / 100.0;
            let q = sluice_stats::descriptive::quantile_sorted(&a.values, p).unwrap();
            let rank = all.partition_point(|v| *v <= q) as f64 / n as f64;
            assert!((rank - p).abs() <= 0.01, "p {p}: sample quantile {q} has rank {rank} in the data");
        }
        // the exact moments do not depend on the sample
        let mean = all.iter().sum::<f64>() / n as f64;
        assert!((a.avg().unwrap() - mean).abs() < 1e-6 * mean);
        assert_eq!(a.n, n);
    }

    #[test]
    fn strings_count_and_overflow() {
        let mut s = StrAcc::default();
        for v in ["a", "bb", "a", "ccc"] {
            s.push(Some(v));
        }
        s.push(None);
        assert_eq!(s.top(2), vec![("a".to_string(), 2), ("bb".to_string(), 1)]);
        assert_eq!((s.len_min, s.len_max, s.len_sum, s.distinct()), (1, 3, 7, 3));
        let mut big = StrAcc::default();
        for i in 0..(MAX_CATEGORIES + 5000) {
            big.push(Some(&i.to_string()));
        }
        let d = big.distinct() as f64;
        assert!((d - 15000.0).abs() / 15000.0 < 0.05, "{d}");
    }
}
