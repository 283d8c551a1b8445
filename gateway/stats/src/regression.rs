//! Regression quality as the monitor's quality table reports it, each metric equal to its
//! scikit-learn function (to a few ulps): MSE, RMSE, MAE, MAPE and R².

use crate::descriptive::{all_finite, mean};

/// Non-empty, equal lengths and all finite (sklearn raises otherwise).
fn check_pair(y_true: &[f64], y_pred: &[f64]) -> Option<()> {
    if y_true.is_empty() || y_true.len() != y_pred.len() || !all_finite(y_true) || !all_finite(y_pred) {
        None
    } else {
        Some(())
    }
}

/// Mean squared error, `sklearn.metrics.mean_squared_error`. `None` when empty, lengths differ or a value
/// is not finite.
pub fn mse(y_true: &[f64], y_pred: &[f64]) -> Option<f64> {
    check_pair(y_true, y_pred)?;
    let sq: Vec<f64> = y_true.iter().zip(y_pred).map(|(t, p)| (t - p) * (t - p)).collect();
    mean(&sq)
}

/// Root mean squared error, `sklearn.metrics.root_mean_squared_error`. `None` when empty, lengths differ or a value
/// is not finite.
pub fn rmse(y_true: &[f64], y_pred: &[f64]) -> Option<f64> {
    mse(y_true, y_pred).map(f64::sqrt)
}

/// Mean absolute error, `sklearn.metrics.mean_absolute_error`. `None` when empty, lengths differ or a value
/// is not finite.
pub fn mae(y_true: &[f64], y_pred: &[f64]) -> Option<f64> {
    check_pair(y_true, y_pred)?;
    let abs: Vec<f64> = y_true.iter().zip(y_pred).map(|(t, p)| (p - t).abs()).collect();
    mean(&abs)
}

/// Mean absolute percentage error, `sklearn.metrics.mean_absolute_percentage_error`:
/// mean(|y - yhat| / max(|y|, f64::EPSILON)), a fraction (not percent); a true value of 0 gives a huge term,
/// as in sklearn. `None` when empty, lengths differ or a value is not finite.
pub fn mape(y_true: &[f64], y_pred: &[f64]) -> Option<f64> {
    check_pair(y_true, y_pred)?;
    let rel: Vec<f64> = y_true.iter().zip(y_pred).map(|(t, p)| (p - t).abs() / t.abs().max(f64::EPSILON)).collect();
    mean(&rel)
}

/// Coefficient of determination, `sklearn.metrics.r2_score` with `force_finite=True`:
/// 1 - sum((y - yhat)^2) / sum((y - mean y)^2); 1.0 when both sums are 0, 0.0 when only the denominator is 0.
/// `None` when fewer than 2 pairs (sklearn returns NaN there), lengths differ or a value is not finite.
pub fn r2(y_true: &[f64], y_pred: &[f64]) -> Option<f64> {
    check_pair(y_true, y_pred)?;
    if y_true.len() < 2 {
        return None;
    }
    let y_mean = mean(y_true)?;
    let numerator: f64 = y_true.iter().zip(y_pred).map(|(t, p)| (t - p) * (t - p)).sum();
    let denominator: f64 = y_true.iter().map(|t| (t - y_mean) * (t - y_mean)).sum();
    Some(match (numerator != 0.0, denominator != 0.0) {
        (_, true) => 1.0 - numerator / denominator,
        (false, false) => 1.0,
        (true, false) => 0.0,
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;
    use crate::reference::assert_close;
    use crate::reference::monitor::*;

    #[test]
    fn regression_metrics_match_sklearn() {
        assert_close(mse(&REG_TRUE, &REG_PRED).unwrap(), REG_MSE, "mse");
        assert_close(rmse(&REG_TRUE, &REG_PRED).unwrap(), REG_RMSE, "rmse");
        assert_close(mae(&REG_TRUE, &REG_PRED).unwrap(), REG_MAE, "mae");
        assert_close(mape(&REG_TRUE, &REG_PRED).unwrap(), REG_MAPE, "mape with a zero label");
        assert_close(mape(&[1.0, 2.0, 4.0], &[1.5, 2.5, 3.0]).unwrap(), REG_MAPE_NONZERO, "mape");
        assert_close(r2(&REG_TRUE, &REG_PRED).unwrap(), REG_R2, "r2");
        assert_close(r2(&[2.0, 2.0, 2.0], &[2.0, 2.0, 2.0]).unwrap(), REG_R2_CONST_PERFECT, "r2 0/0");
        assert_close(r2(&[2.0, 2.0, 2.0], &[2.0, 1.0, 2.0]).unwrap(), REG_R2_CONST_MISS, "r2 x/0");
        assert_eq!(r2(&[1.0], &[1.0]), None);
        assert_eq!(mse(&[], &[]), None);
        assert_eq!(mae(&[1.0], &[1.0, 2.0]), None);
    }
}
