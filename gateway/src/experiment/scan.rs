//! One pass over an inference table's time window: per served model, requests (by config
//! period), errors, latencies, predictions and the label-based metric; and the agreement of
//! shadow answers with the primary answers to the same requests.
//!
//! Predicted classes are bounded ([`crate::analysis::classes`]: the top classes and
//! `__other__`). A shadow row is paired with its primary row by (request id, row index); the
//! request id is the client's `x-request-id` when it sent one, so only ids that occur once among
//! the window's primary rows and once among that shadow's rows are paired (a join of repeated ids
//! would grow as the product of their rows); the others are counted in [`Scan::pairs_skipped`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::spec::Metric;
use crate::analysis::classes::{ClassCounts, ClassPairs};
use crate::inference_log::partition_of;
use crate::inference_log::read::{new_ctx, register_labelled, usable_files};

/// Running mean and variance (Welford).
/// Why a table window could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The table's files (and labels) could not be registered.
    #[error("cannot read {}: {source}", dir.display())]
    Read { dir: PathBuf, source: DataFusionError },
    /// DataFusion failed; the message is explained ([`crate::analysis::explain`]).
    #[error("{0}")]
    Query(String),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// A column could not be cast to the type the scan reads it as.
    #[error(transparent)]
    Cast(#[from] ArrowError),
}

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
    pub fn summary(&self) -> Option<sluice_stats::descriptive::Summary> {
        (self.n >= 1).then(|| sluice_stats::descriptive::Summary {
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
    /// Predicted labels (classification rows answered with 200): the top classes and
    /// `__other__`.
    pub label_counts: BTreeMap<String, u64>,
    /// `label_counts` while the scan counts.
    pub(crate) predicted: ClassCounts,
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
    /// (primary label, shadow label) -> rows (classification), bounded.
    pub confusion: ClassPairs,
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
    /// Shadow served model -> its answered rows left unpaired because their (request id, row)
    /// is not unique among the window's primary rows or among that shadow's rows.
    pub pairs_skipped: BTreeMap<String, u64>,
    pub prediction: Option<Prediction>,
    /// The metric computed per labelled row.
    pub metric: Option<Metric>,
}

fn strs(b: &RecordBatch, i: usize) -> Result<Vec<Option<String>>, ScanError> {
    let a = cast(b.column(i), &DataType::Utf8)?;
    let a = a.as_string::<i32>();
    Ok((0..a.len()).map(|r| a.is_valid(r).then(|| a.value(r).to_string())).collect())
}

fn f64s(b: &RecordBatch, i: usize) -> Result<Vec<Option<f64>>, ScanError> {
    let a = cast(b.column(i), &DataType::Float64)?;
    let a = a.as_primitive::<Float64Type>();
    Ok((0..a.len()).map(|r| a.is_valid(r).then(|| a.value(r))).collect())
}

fn i64s(b: &RecordBatch, i: usize) -> Result<Vec<Option<i64>>, ScanError> {
    let a = cast(b.column(i), &DataType::Int64)?;
    let a = a.as_primitive::<Int64Type>();
    Ok((0..a.len()).map(|r| a.is_valid(r).then(|| a.value(r))).collect())
}

async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, ScanError> {
    let explain = |e: DataFusionError| ScanError::Query(crate::analysis::explain(e));
    let df = ctx.sql(sql).await.map_err(explain)?;
    let mut stream = df.execute_stream().await.map_err(explain)?;
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        out.push(b.map_err(explain)?);
    }
    Ok(out)
}

/// Reads the window. A table with no files yet gives an empty scan. Files that cannot be read
/// safely are skipped (and counted).
pub async fn scan(q: &Query) -> Result<Scan, ScanError> {
    let files = in_window(usable_files(&q.table_dir), q.from_us, q.to_us);
    let mut out = Scan::default();
    if files.is_empty() {
        return Ok(out);
    }
    let labels = q.labels_dir.as_deref().map(usable_files).unwrap_or_default();
    let ctx = new_ctx();
    register_labelled(&ctx, &files, &labels)
        .await
        .map_err(|source| ScanError::Read { dir: q.table_dir.clone(), source })?;
    let schema = ctx.table("t").await?.schema().as_arrow().clone();
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
    for arm in out.arms.values_mut() {
        arm.label_counts = std::mem::take(&mut arm.predicted).into_map();
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
) -> Result<(), ScanError> {
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
                    arm.predicted.add(p, 1);
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

/// Shadow rows joined with the primary row of the same request and row, where that pairing is
/// unambiguous: each side is grouped by its key first, so the join is one to one.
async fn pairs(
    ctx: &SessionContext,
    q: &Query,
    prediction: Prediction,
    range: &str,
    out: &mut Scan,
) -> Result<(), ScanError> {
    let bucket = if q.bucket_us > 0 {
        format!("{} + ((p.ts - {}) / {}) * {}", q.from_us, q.from_us, q.bucket_us, q.bucket_us)
    } else {
        q.from_us.to_string()
    };
    // Every row of the window counts towards uniqueness, answered or not; `min` of a group of
    // one is its value.
    let sides = format!(
        "WITH p AS (SELECT request_id, row_index, count(*) AS n, min(served_model) AS served_model, \
           min(status_code) AS status_code, min(prediction) AS prediction, min(CAST(\"timestamp\" AS BIGINT)) AS ts \
           FROM t WHERE NOT is_shadow AND {range} GROUP BY request_id, row_index), \
         s AS (SELECT request_id, row_index, served_model, count(*) AS n, min(status_code) AS status_code, \
           min(prediction) AS prediction \
           FROM t WHERE is_shadow AND {range} GROUP BY request_id, row_index, served_model)"
    );
    let join = "FROM s JOIN p ON p.request_id = s.request_id AND p.row_index = s.row_index \
         WHERE p.n = 1 AND s.n = 1 AND p.status_code = 200 AND s.status_code = 200";
    let sql = match prediction {
        Prediction::Label => format!(
            "{sides} SELECT {bucket} AS b, p.served_model, s.served_model, p.prediction, s.prediction, count(*) {join} \
             GROUP BY 1, 2, 3, 4, 5"
        ),
        _ => format!(
            "{sides} SELECT {bucket} AS b, p.served_model, s.served_model, abs(p.prediction - s.prediction) {join}"
        ),
    };
    let skipped = format!(
        "{sides} SELECT s.served_model, sum(s.n) FROM s LEFT JOIN p ON p.request_id = s.request_id \
         AND p.row_index = s.row_index WHERE s.n > 1 OR p.n > 1 GROUP BY 1"
    );
    for b in rows(ctx, &skipped).await? {
        let (sm, n) = (strs(&b, 0)?, i64s(&b, 1)?);
        for r in 0..b.num_rows() {
            if let (Some(s), Some(n)) = (sm[r].clone(), n[r]) {
                *out.pairs_skipped.entry(s).or_default() += n.max(0) as u64;
            }
        }
    }
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
                e.confusion.add(&a, &b2, c);
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
    fn read_errors_name_the_table() {
        let e = ScanError::Read { dir: PathBuf::from("/data/t"), source: DataFusionError::Execution("gone".into()) };
        assert!(e.to_string().starts_with("cannot read /data/t: "), "{e}");
        assert_eq!(ScanError::Query("out of memory".into()).to_string(), "out of memory");
    }
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};

    /// (request id, served model, is shadow, prediction) rows at `ts`, written as one file.
    fn write_table(dir: &std::path::Path, ts: i64, rows: &[(&str, &str, bool, &str)]) {
        let n = rows.len();
        let cols: Vec<(&str, ArrayRef)> = vec![
            ("request_id", Arc::new(rows.iter().map(|r| Some(r.0)).collect::<StringArray>())),
            ("row_index", Arc::new(Int64Array::from(vec![0; n]))),
            ("timestamp", Arc::new(Int64Array::from(vec![ts; n]))),
            ("served_model", Arc::new(rows.iter().map(|r| Some(r.1)).collect::<StringArray>())),
            ("is_shadow", Arc::new(rows.iter().map(|r| Some(r.2)).collect::<BooleanArray>())),
            ("status_code", Arc::new(Int64Array::from(vec![200; n]))),
            ("latency_ms", Arc::new(Float64Array::from(vec![1.0; n]))),
            ("prediction", Arc::new(rows.iter().map(|r| Some(r.3)).collect::<StringArray>())),
        ];
        let batch = RecordBatch::try_from_iter(cols).unwrap();
        let file = std::fs::File::create(dir.join("part-0.parquet")).unwrap();
        let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    fn query(dir: &std::path::Path, ts: i64) -> Query {
        Query {
            table_dir: dir.to_path_buf(),
            labels_dir: None,
            from_us: ts,
            to_us: ts + 1,
            metric: None,
            periods: vec![ts],
            bucket_us: 0,
        }
    }

    #[tokio::test]
    async fn a_repeated_client_request_id_is_not_paired_and_does_not_explode() {
        let dir = tempfile::tempdir().unwrap();
        let ts = 1_795_608_000_000_000;
        // 1,000 requests that all sent `x-request-id: same`, each answered by the primary and
        // the shadow (a self-join would pair 1,000 x 1,000 rows), and three unique ids
        let mut rows: Vec<(&str, &str, bool, &str)> = Vec::new();
        for _ in 0..1000 {
            rows.push(("same", "a", false, "legit"));
            rows.push(("same", "b", true, "fraud"));
        }
        for (id, shadow) in [("u1", "legit"), ("u2", "legit"), ("u3", "fraud")] {
            rows.push((id, "a", false, "legit"));
            rows.push((id, "b", true, shadow));
        }
        write_table(dir.path(), ts, &rows);
        let started = std::time::Instant::now();
        let s = scan(&query(dir.path(), ts)).await.unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        let p = &s.pairs[&(ts, "a".to_string(), "b".to_string())];
        assert_eq!((p.rows, p.agree), (3, 2));
        assert_eq!(p.confusion.total(), 3);
        assert_eq!(s.pairs_skipped, BTreeMap::from([("b".to_string(), 1000)]));
        assert_eq!(s.arms["a"].requests, 1003);
    }

    #[tokio::test]
    async fn predicted_classes_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ts = 1_795_608_000_000_000;
        let labels: Vec<String> = (0..100_000).map(|i| format!("class-{i}")).collect();
        let mut rows: Vec<(&str, &str, bool, &str)> = labels.iter().map(|l| ("r", "a", false, l.as_str())).collect();
        rows.extend((0..1000).map(|_| ("r", "a", false, "legit")));
        write_table(dir.path(), ts, &rows);
        let s = scan(&query(dir.path(), ts)).await.unwrap();
        let counts = &s.arms["a"].label_counts;
        assert_eq!(counts.len(), crate::analysis::classes::TOP_CLASSES + 1);
        assert_eq!(counts["legit"], 1000);
        assert_eq!(counts.values().sum::<u64>(), 101_000);
        assert!(counts[crate::analysis::classes::OTHER] >= 100_000 - 99);
    }

    #[test]
    fn only_the_window_s_date_partitions_are_read() {
        let f = |d: &str| PathBuf::from(format!("t/date={d}/part-0.parquet"));
        let files = vec![f("2026-11-24"), f("2026-11-25"), f("2026-11-26"), PathBuf::from("t/loose.parquet")];
        // 2026-11-25T12:00Z .. 2026-11-26T00:00Z (exclusive)
        let (from, to) = (1_795_608_000_000_000, 1_795_651_200_000_000);
        assert_eq!(in_window(files, from, to), vec![f("2026-11-25"), PathBuf::from("t/loose.parquet")]);
    }
}
