//! Experiment analysis (A/B tests between served models): the statistics for sample-ratio
//! mismatch, rates and means with confidence intervals, and the tests of a candidate against the
//! champion. Checked against scipy and statsmodels (`scripts/experiment-stats-reference.py`).

pub mod stats;
