//! One pass over an inference table's time window: per served model, requests (by config
//! period), errors, latencies, predictions and the label-based metric; and the agreement of
//! shadow answers with the primary answers to the same requests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::spec::Metric;
use crate::inference_log::partition_of;
use crate::inference_log::read::{list_parquet, new_ctx, register_labelled};

/// Running mean and variance (Welford).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    m2: f64,
}

impl Moments {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// As a sample summary (variance with n - 1), for the tests.
    pub fn summary(&self) -> Option<super::stats::Summary> {
        (self.n >= 1).then(|| super::stats::Summary {
            n: self.n,
            mean: self.mean,
            var: if self.n > 1 { self.m2 / (self.n - 1) as f64 } else { 0.0 },
        })
    }
}

/// What one served model did in the window (primary answers only).
#[derive(Debug, Clone, Default)]
pub struct Arm {
    /// Requests (a request of N rows counts once).
    pub requests: u64,
    /// Requests per config period (see [`Query::periods`]).
    pub requests_by_period: Vec<u64>,
    /// Requests that did not succeed (status other than 200).
    pub errors: u64,
    /// Latency of every request, ms.
    pub latencies_ms: Vec<f64>,
    /// Predicted labels (classification rows answered with 200).
    pub label_counts: BTreeMap<String, u64>,
    /// Predicted values (regression rows answered with 200).
    pub values: Vec<f64>,
    /// Rows with a label and a prediction: correct ones (for accuracy).
    pub correct: u64,
    /// The metric per labelled row (1/0 for accuracy).
    pub metric: Moments,
}

/// Agreement of one shadow with one primary served model over one bucket of time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pairing {
    /// Rows answered by both.
    pub rows: u64,
    /// Rows where both gave the same label (classification).
    pub agree: u64,
    /// (primary label, shadow label) -> rows (classification).
    pub confusion: BTreeMap<(String, String), u64>,
    /// Mean |primary - shadow| (regression).
    pub abs_diff: Moments,
}

/// What to read.
#[derive(Debug, Clone)]
pub struct Query {
    pub table_dir: PathBuf,
    pub labels_dir: Option<PathBuf>,
    /// Microseconds since the epoch, [from, to).
    pub from_us: i64,
    pub to_us: i64,
    /// `None`: accuracy for label predictions, mean absolute error for numeric ones.
    pub metric: Option<Metric>,
    /// Start of each config period inside the window, ascending; the first is `from_us`.
    pub periods: Vec<i64>,
    /// Width of the agreement buckets; 0: one bucket for the whole window.
    pub bucket_us: i64,
}

/// The prediction column of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Label,
    Value,
    /// No `prediction` column (tensor outputs): no prediction statistics.
    None,
}

/// Everything read.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub arms: BTreeMap<String, Arm>,
    /// (bucket start µs, primary, shadow) -> agreement.
    pub pairs: BTreeMap<(i64, String, String), Pairing>,
    pub prediction: Option<Prediction>,
    /// The metric computed per labelled row.
    pub metric: Option<Metric>,
}

fn strs(b: &RecordBatch, i: usize) -> Result<Vec<Option<String>>, String> {
    let a = cast(b.column(i), &DataType::Utf8).map_err(|e| e.to_string())?;
    let a = a.as_string::<i32>();
    Ok((0..a.len()).map(|r| a.is_valid(r).then(|| a.value(r).to_string())).collect())
}

fn f64s(b: &RecordBatch, i: usize) -> Result<Vec<Option<f64>>, String> {
    let a = cast(b.column(i), &DataType::Float64).map_err(|e| e.to_string())?;
    let a = a.as_primitive::<Float64Type>();
    Ok((0..a.len()).map(|r| a.is_valid(r).then(|| a.value(r))).collect())
}

fn i64s(b: &RecordBatch, i: usize) -> Result<Vec<Option<i64>>, String> {
    let a = cast(b.column(i), &DataType::Int64).map_err(|e| e.to_string())?;
    let a = a.as_primitive::<Int64Type>();
    Ok((0..a.len()).map(|r| a.is_valid(r).then(|| a.value(r))).collect())
}

async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let df = ctx.sql(sql).await.map_err(|e| format!("{e}"))?;
    let mut stream = df.execute_stream().await.map_err(|e| format!("{e}"))?;
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        out.push(b.map_err(|e| format!("{e}"))?);
    }
    Ok(out)
}

/// Reads the window. A table with no files yet gives an empty scan.
pub async fn scan(q: &Query) -> Result<Scan, String> {
    let files = in_window(list_parquet(&q.table_dir), q.from_us, q.to_us);
    let mut out = Scan::default();
    if files.is_empty() {
        return Ok(out);
    }
    let labels = q.labels_dir.as_deref().map(list_parquet).unwrap_or_default();
    let ctx = new_ctx();
    register_labelled(&ctx, &files, &labels)
        .await
        .map_err(|e| format!("cannot read {}: {e}", q.table_dir.display()))?;
    let schema = ctx.table("t").await.map_err(|e| e.to_string())?.schema().as_arrow().clone();
    let prediction = match schema.field_with_name("prediction").map(|f| f.data_type().clone()) {
        Ok(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => Prediction::Label,
        Ok(t) if t.is_numeric() => Prediction::Value,
        _ => Prediction::None,
    };
    out.prediction = Some(prediction);
    let metric =
        q.metric.unwrap_or(if prediction == Prediction::Value { Metric::MeanAbsoluteError } else { Metric::Accuracy });
    out.metric = Some(metric);
    let pred = if prediction == Prediction::None { "CAST(NULL AS VARCHAR)" } else { "prediction" };
    let ts = "CAST(\"timestamp\" AS BIGINT)";
    let range = format!("{ts} >= {} AND {ts} < {}", q.from_us, q.to_us);
    let sql = format!(
        "SELECT served_model, {ts}, row_index, status_code, latency_ms, {pred}, label, label_value FROM v \
         WHERE NOT is_shadow AND {range}"
    );
    for b in rows(&ctx, &sql).await? {
        accumulate(&mut out, q, prediction, metric, &b)?;
    }
    if prediction != Prediction::None {
        pairs(&ctx, q, prediction, &range, &mut out).await?;
    }
    Ok(out)
}

fn accumulate(
    out: &mut Scan,
    q: &Query,
    prediction: Prediction,
    metric: Metric,
    b: &RecordBatch,
) -> Result<(), String> {
    let (model, ts, row, status, latency) = (strs(b, 0)?, i64s(b, 1)?, i64s(b, 2)?, i64s(b, 3)?, f64s(b, 4)?);
    let (pred_s, pred_f) = (strs(b, 5)?, f64s(b, 5).unwrap_or_else(|_| vec![None; b.num_rows()]));
    let (label, label_value) = (strs(b, 6)?, f64s(b, 7)?);
    for r in 0..b.num_rows() {
        let Some(m) = &model[r] else { continue };
        let arm = out
            .arms
            .entry(m.clone())
            .or_insert_with(|| Arm { requests_by_period: vec![0; q.periods.len().max(1)], ..Arm::default() });
        let ok = status[r] == Some(200);
        if row[r] == Some(0) {
            arm.requests += 1;
            let t = ts[r].unwrap_or(q.from_us);
            let p = q.periods.partition_point(|&s| s <= t).saturating_sub(1);
            if let Some(c) = arm.requests_by_period.get_mut(p) {
                *c += 1;
            }
            if !ok {
                arm.errors += 1;
            }
            if let Some(l) = latency[r] {
                arm.latencies_ms.push(l);
            }
        }
        if !ok {
            continue;
        }
        match prediction {
            Prediction::Label => {
                if let Some(p) = &pred_s[r] {
                    *arm.label_counts.entry(p.clone()).or_default() += 1;
                }
            }
            Prediction::Value => {
                if let Some(v) = pred_f[r].filter(|v| v.is_finite()) {
                    arm.values.push(v);
                }
            }
            Prediction::None => {}
        }
        let x = match metric {
            Metric::Accuracy => match (&pred_s[r], &label[r]) {
                (Some(p), Some(l)) => Some(if p == l { 1.0 } else { 0.0 }),
                _ => None,
            },
            Metric::MeanAbsoluteError => match (pred_f[r], label_value[r]) {
                (Some(p), Some(l)) => Some((p - l).abs()),
                _ => None,
            },
            Metric::Outcome => label_value[r],
        };
        if let Some(x) = x.filter(|x| x.is_finite()) {
            arm.metric.push(x);
            if x == 1.0 && metric == Metric::Accuracy {
                arm.correct += 1;
            }
        }
    }
    Ok(())
}

/// Shadow rows joined with the primary row of the same request and row.
async fn pairs(
    ctx: &SessionContext,
    q: &Query,
    prediction: Prediction,
    range: &str,
    out: &mut Scan,
) -> Result<(), String> {
    let bucket = if q.bucket_us > 0 {
        format!(
            "{} + ((CAST(p.\"timestamp\" AS BIGINT) - {}) / {}) * {}",
            q.from_us, q.from_us, q.bucket_us, q.bucket_us
        )
    } else {
        q.from_us.to_string()
    };
    let range = range.replace("\"timestamp\"", "p.\"timestamp\"");
    let join = format!(
        "FROM t p JOIN t s ON p.request_id = s.request_id AND p.row_index = s.row_index \
         WHERE NOT p.is_shadow AND s.is_shadow AND p.status_code = 200 AND s.status_code = 200 AND {range}"
    );
    let sql = match prediction {
        Prediction::Label => format!(
            "SELECT {bucket} AS b, p.served_model, s.served_model, p.prediction, s.prediction, count(*) {join} \
             GROUP BY 1, 2, 3, 4, 5"
        ),
        _ => format!("SELECT {bucket} AS b, p.served_model, s.served_model, abs(p.prediction - s.prediction) {join}"),
    };
    for b in rows(ctx, &sql).await? {
        let (bk, pm, sm) = (i64s(&b, 0)?, strs(&b, 1)?, strs(&b, 2)?);
        let (pp, sp, n) = if prediction == Prediction::Label {
            (strs(&b, 3)?, strs(&b, 4)?, i64s(&b, 5)?)
        } else {
            (vec![], vec![], vec![])
        };
        let diffs = if prediction == Prediction::Label { vec![] } else { f64s(&b, 3)? };
        for r in 0..b.num_rows() {
            let (Some(k), Some(p), Some(s)) = (bk[r], pm[r].clone(), sm[r].clone()) else { continue };
            let e = out.pairs.entry((k, p, s)).or_default();
            if prediction == Prediction::Label {
                let c = n[r].unwrap_or(0).max(0) as u64;
                let (a, b2) = (pp[r].clone().unwrap_or_default(), sp[r].clone().unwrap_or_default());
                e.rows += c;
                if a == b2 {
                    e.agree += c;
                }
                *e.confusion.entry((a, b2)).or_default() += c;
            } else if let Some(d) = diffs[r].filter(|d| d.is_finite()) {
                e.rows += 1;
                e.abs_diff.push(d);
            }
        }
    }
    Ok(())
}

/// The files whose `date=YYYY-MM-DD` partition can hold rows of [from, to) (files outside a
/// date partition are kept), so a short window does not plan over a long history.
fn in_window(files: Vec<PathBuf>, from_us: i64, to_us: i64) -> Vec<PathBuf> {
    let (first, last) = (partition_of(from_us), partition_of(to_us.saturating_sub(1)));
    files
        .into_iter()
        .filter(|f| {
            let part = f.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
            match part {
                Some(p) if p.starts_with("date=") && p.len() == first.len() => {
                    p.as_str() >= first.as_str() && p.as_str() <= last.as_str()
                }
                _ => true,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_window_s_date_partitions_are_read() {
        let f = |d: &str| PathBuf::from(format!("t/date={d}/part-0.parquet"));
        let files = vec![f("2026-11-24"), f("2026-11-25"), f("2026-11-26"), PathBuf::from("t/loose.parquet")];
        // 2026-11-25T12:00Z .. 2026-11-26T00:00Z (exclusive)
        let (from, to) = (1_795_608_000_000_000, 1_795_651_200_000_000);
        assert_eq!(in_window(files, from, to), vec![f("2026-11-25"), PathBuf::from("t/loose.parquet")]);
    }
}
