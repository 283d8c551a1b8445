//! `sluice-stats`: the statistics behind Sluice's monitor (profile, drift and quality tables),
//! its experiment reports (tests and intervals of each arm against the champion, the
//! sample-ratio-mismatch check), its rollout guardrails and the load tester's split check.
//!
//! Every public function reproduces a numpy / scipy / scikit-learn / statsmodels routine, named in
//! its doc comment, so that Sluice and the Python reference agree. The unit tests check them
//! against the values that `scripts/monitor-stats-reference.py` and
//! `scripts/experiment-stats-reference.py` print, to 1e-9 absolute plus 1e-9 relative. Nothing
//! here panics: degenerate input (an empty side, mismatched lengths, NaN where the reference would
//! raise or return NaN) gives `None`. Values must be finite unless a function says otherwise.
//!
//! The crate has no dependencies and knows nothing of the gateway: slices and counts in, numbers
//! out. Modules, bottom up: [`special`] (lnΓ, incomplete gamma and beta) -> [`distributions`]
//! (survival and quantile functions of the chi-squared, normal and t distributions) ->
//! [`descriptive`] (quantiles, count / mean / variance summaries) -> the tests and metrics:
//! [`ks`] (two-sample Kolmogorov-Smirnov), [`drift`] (Wasserstein, PSI, chi-squared contingency,
//! categorical distances), [`classification`], [`regression`], [`proportions`], [`means`] and
//! [`srm`] (sample ratio mismatch).

pub mod classification;
pub mod descriptive;
pub mod distributions;
pub mod drift;
pub mod ks;
pub mod means;
pub mod proportions;
pub mod regression;
pub mod special;
pub mod srm;

#[cfg(test)]
mod reference;
