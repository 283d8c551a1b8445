//! Classification quality as the monitor's quality table reports it, each metric equal to its
//! scikit-learn function (to a few ulps): accuracy, macro and weighted precision / recall / F1,
//! the confusion matrix, and ROC AUC (binary, and one-vs-rest macro over class probabilities).

use std::collections::{BTreeMap, BTreeSet};

use crate::descriptive::all_finite;

/// Fraction of positions where the label equals the prediction: `sklearn.metrics.accuracy_score`.
/// `None` when the inputs are empty or differ in length.
pub fn accuracy<S: AsRef<str>>(y_true: &[S], y_pred: &[S]) -> Option<f64> {
    if y_true.is_empty() || y_true.len() != y_pred.len() {
        return None;
    }
    let hits = y_true.iter().zip(y_pred).filter(|(t, p)| t.as_ref() == p.as_ref()).count();
    Some(hits as f64 / y_true.len() as f64)
}

/// A score averaged over labels two ways.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Averaged {
    /// Unweighted mean over labels (`average="macro"`).
    pub macro_avg: f64,
    /// Mean weighted by each label's support in `y_true` (`average="weighted"`).
    pub weighted: f64,
}

/// Precision, recall and F1, each macro- and support-weighted-averaged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecisionRecallF1 {
    /// `sklearn.metrics.precision_score`.
    pub precision: Averaged,
    /// `sklearn.metrics.recall_score`.
    pub recall: Averaged,
    /// `sklearn.metrics.f1_score`.
    pub f1: Averaged,
}

/// Sorted union of the labels, and the confusion counts (rows = true, columns = predicted).
fn confusion(y_true: &[&str], y_pred: &[&str]) -> (Vec<String>, Vec<Vec<i64>>) {
    let labels: BTreeSet<&str> = y_true.iter().chain(y_pred).copied().collect();
    let index: BTreeMap<&str, usize> = labels.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    let k = labels.len();
    let mut counts = vec![vec![0i64; k]; k];
    for (t, p) in y_true.iter().zip(y_pred) {
        if let (Some(&i), Some(&j)) = (index.get(t), index.get(p))
            && let Some(cell) = counts.get_mut(i).and_then(|row| row.get_mut(j))
        {
            *cell += 1;
        }
    }
    (labels.into_iter().map(str::to_owned).collect(), counts)
}

fn as_strs<S: AsRef<str>>(v: &[S]) -> Vec<&str> {
    v.iter().map(AsRef::as_ref).collect()
}

/// Confusion matrix over labels = sorted union of `y_true` and `y_pred` (byte order, which is code-point
/// order, as Python sorts strings): `sklearn.metrics.confusion_matrix(y_true, y_pred)` with its default label
/// order. Returns `(labels, counts)` with rows = true label, columns = predicted label. `None` when the inputs
/// are empty or differ in length.
pub fn confusion_matrix<S: AsRef<str>>(y_true: &[S], y_pred: &[S]) -> Option<(Vec<String>, Vec<Vec<i64>>)> {
    if y_true.is_empty() || y_true.len() != y_pred.len() {
        return None;
    }
    Some(confusion(&as_strs(y_true), &as_strs(y_pred)))
}

/// Precision, recall and F1 with `average="macro"` and `average="weighted"`:
/// `sklearn.metrics.precision_recall_fscore_support(y_true, y_pred, average=..., zero_division=0)` with labels =
/// sorted union of true and predicted labels. A label never predicted has precision 0, one never true has
/// recall 0 (and weight 0 in the weighted average); F1 = 2 tp / (2 tp + fp + fn), 0 when that is 0/0.
/// `None` when the inputs are empty or differ in length.
pub fn precision_recall_f1<S: AsRef<str>>(y_true: &[S], y_pred: &[S]) -> Option<PrecisionRecallF1> {
    let (_, counts) = confusion_matrix(y_true, y_pred)?;
    let k = counts.len();
    let mut tp = vec![0.0f64; k];
    let mut true_sum = vec![0.0f64; k];
    let mut pred_sum = vec![0.0f64; k];
    for (i, row) in counts.iter().enumerate() {
        for (j, &c) in row.iter().enumerate() {
            let c = c as f64;
            if let Some(t) = true_sum.get_mut(i) {
                *t += c;
            }
            if let Some(p) = pred_sum.get_mut(j) {
                *p += c;
            }
            if i == j
                && let Some(t) = tp.get_mut(i)
            {
                *t += c;
            }
        }
    }
    let div = |num: f64, den: f64| if den == 0.0 { 0.0 } else { num / den };
    let precision: Vec<f64> = tp.iter().zip(&pred_sum).map(|(&t, &p)| div(t, p)).collect();
    let recall: Vec<f64> = tp.iter().zip(&true_sum).map(|(&t, &s)| div(t, s)).collect();
    let f1: Vec<f64> =
        tp.iter().zip(true_sum.iter().zip(&pred_sum)).map(|(&t, (&s, &p))| div(2.0 * t, s + p)).collect();
    let total_support: f64 = true_sum.iter().sum();
    let average = |scores: &[f64]| -> Averaged {
        let macro_avg = scores.iter().sum::<f64>() / k as f64;
        let weighted = scores.iter().zip(&true_sum).map(|(s, w)| s * w).sum::<f64>() / total_support;
        Averaged { macro_avg, weighted }
    };
    Some(PrecisionRecallF1 { precision: average(&precision), recall: average(&recall), f1: average(&f1) })
}

/// Binary ROC AUC: `sklearn.metrics.roc_auc_score(y_true, score)` for a binary target, i.e. the trapezoidal
/// area under the ROC curve over distinct score thresholds, which equals the Mann-Whitney probability that a
/// positive outscores a negative with half credit for ties. `None` when the inputs are empty, differ in
/// length, a score is not finite, or only one class is present (sklearn raises there).
pub fn roc_auc_binary(y_true_is_positive: &[bool], score: &[f64]) -> Option<f64> {
    if y_true_is_positive.is_empty() || y_true_is_positive.len() != score.len() || !all_finite(score) {
        return None;
    }
    let mut pairs: Vec<(f64, bool)> = score.iter().copied().zip(y_true_is_positive.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n_pos = pairs.iter().filter(|p| p.1).count() as f64;
    let n_neg = pairs.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    let mut neg_below = 0.0f64;
    let mut area = 0.0f64;
    let mut i = 0usize;
    while let Some(&(s, _)) = pairs.get(i) {
        let (mut pos_here, mut neg_here) = (0.0f64, 0.0f64);
        while let Some(&(t, is_pos)) = pairs.get(i) {
            if t != s {
                break;
            }
            if is_pos {
                pos_here += 1.0;
            } else {
                neg_here += 1.0;
            }
            i += 1;
        }
        area += pos_here * (neg_below + 0.5 * neg_here);
        neg_below += neg_here;
    }
    Some(area / (n_pos * n_neg))
}

/// Multiclass one-vs-rest macro ROC AUC: `sklearn.metrics.roc_auc_score(y_true, scores, multi_class="ovr",
/// average="macro")`, where `y_true[i]` is a class index in `0..n_classes` and `scores[i][c]` the probability
/// of class `c` (classes in sorted-key order). The mean over classes of the binary AUC of class c vs the rest.
/// With `n_classes == 2` this is sklearn's binary case on the probabilities of class 1.
///
/// `None` (where sklearn raises) when the inputs are empty or differ in length, a row does not have
/// `n_classes` entries, some class in `0..n_classes` never occurs in `y_true`, n_classes < 2, a score is not
/// finite, or (for n_classes > 2) a row's scores do not sum to 1 within numpy `allclose` tolerance.
pub fn roc_auc_ovr_macro(y_true: &[usize], scores: &[Vec<f64>], n_classes: usize) -> Option<f64> {
    if n_classes < 2 || y_true.is_empty() || y_true.len() != scores.len() {
        return None;
    }
    if scores.iter().any(|row| row.len() != n_classes || !all_finite(row)) {
        return None;
    }
    let mut seen = vec![false; n_classes];
    for &y in y_true {
        *seen.get_mut(y)? = true;
    }
    if seen.iter().any(|s| !s) {
        return None;
    }
    let column = |c: usize| -> Option<Vec<f64>> { scores.iter().map(|row| row.get(c).copied()).collect() };
    if n_classes == 2 {
        let positive: Vec<bool> = y_true.iter().map(|&y| y == 1).collect();
        return roc_auc_binary(&positive, &column(1)?);
    }
    // numpy.allclose(1, row_sum): |1 - row_sum| <= 1e-8 + 1e-5 * |row_sum|
    if scores.iter().any(|row| {
        let sum: f64 = row.iter().sum();
        (1.0 - sum).abs() > 1e-8 + 1e-5 * sum.abs()
    }) {
        return None;
    }
    let mut total = 0.0f64;
    for c in 0..n_classes {
        let positive: Vec<bool> = y_true.iter().map(|&y| y == c).collect();
        total += roc_auc_binary(&positive, &column(c)?)?;
    }
    Some(total / n_classes as f64)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;
    use crate::reference::monitor::*;
    use crate::reference::{assert_close, assert_pair};

    #[test]
    fn classification_metrics_match_sklearn() {
        assert_close(accuracy(&CLS_TRUE, &CLS_PRED).unwrap(), CLS_ACCURACY, "accuracy");
        let prf = precision_recall_f1(&CLS_TRUE, &CLS_PRED).unwrap();
        assert_pair(Some((prf.precision.macro_avg, prf.precision.weighted)), CLS_PRECISION, "precision");
        assert_pair(Some((prf.recall.macro_avg, prf.recall.weighted)), CLS_RECALL, "recall");
        assert_pair(Some((prf.f1.macro_avg, prf.f1.weighted)), CLS_F1, "f1");
        let (labels, counts) = confusion_matrix(&CLS_TRUE, &CLS_PRED).unwrap();
        assert_eq!(labels, CLS_LABELS.to_vec());
        let expected: Vec<Vec<i64>> = CLS_CONFUSION.iter().map(|r| r.to_vec()).collect();
        assert_eq!(counts, expected);
        // Owned strings work too.
        let owned: Vec<String> = CLS_TRUE.iter().map(|s| s.to_string()).collect();
        assert_eq!(accuracy(&owned, &owned), Some(1.0));
        assert_eq!(accuracy::<&str>(&[], &[]), None);
        assert_eq!(precision_recall_f1(&["a"], &["a", "b"]), None);
    }

    #[test]
    fn roc_auc_matches_sklearn() {
        assert_close(roc_auc_binary(&AUC_Y, &AUC_SCORE).unwrap(), AUC_EXPECTED, "binary auc with ties");
        assert_eq!(roc_auc_binary(&[true, true], &[0.1, 0.2]), None);
        assert_eq!(roc_auc_binary(&[true, false], &[0.1, f64::NAN]), None);
        let scores: Vec<Vec<f64>> = AUC3_SCORES.iter().map(|r| r.to_vec()).collect();
        assert_close(roc_auc_ovr_macro(&AUC3_Y, &scores, 3).unwrap(), AUC3_EXPECTED, "ovr macro auc");
        // A class missing from y_true, a bad row width, rows not summing to 1: sklearn raises.
        let y_missing: Vec<usize> = AUC3_Y.iter().map(|&y| if y == 2 { 1 } else { y }).collect();
        assert_eq!(roc_auc_ovr_macro(&y_missing, &scores, 3), None);
        assert_eq!(roc_auc_ovr_macro(&AUC3_Y, &scores, 4), None);
        let unnormalised: Vec<Vec<f64>> = scores.iter().map(|r| r.iter().map(|v| v * 2.0).collect()).collect();
        assert_eq!(roc_auc_ovr_macro(&AUC3_Y, &unnormalised, 3), None);
        // Two classes: the binary AUC of class 1's probability.
        let y2: Vec<usize> = AUC_Y.iter().map(|&b| usize::from(b)).collect();
        let s2: Vec<Vec<f64>> = AUC_SCORE.iter().map(|&s| vec![1.0 - s, s]).collect();
        assert_close(roc_auc_ovr_macro(&y2, &s2, 2).unwrap(), AUC_EXPECTED, "two-class auc");
    }
}
