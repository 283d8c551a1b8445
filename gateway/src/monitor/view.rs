//! What the dashboard draws from a monitor: its metric tables as time series (whole-table rows
//! of one granularity), and the baseline and current distributions of one column in the latest
//! window as histograms.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use serde_json::{Map, Value, json};
use sluice_stats::descriptive::quantile_sorted;

use super::error::{MonitorError, qerr};
use super::spec::{Granularity, MonitorSpec};
use crate::inference_log::read::{log_file_details, new_ctx, register_files, register_labelled, usable_files};

fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The files of the newest `n` windows of granularity `g` in the metric table in `dir` (one
/// file per window and table: the log's statistics say which), oldest first. Files a reader
/// cannot use are left out (and counted, as for every table).
pub(crate) fn newest(dir: &Path, g: &str, n: usize) -> Vec<PathBuf> {
    if n == 0 {
        return Vec::new();
    }
    let Some(listed) = log_file_details(dir) else { return Vec::new() };
    let mut windows: Vec<(i64, PathBuf)> = listed
        .into_iter()
        .filter(|(_, f)| f.all_text("granularity", g))
        .filter_map(|(path, f)| f.min.get("window.start").map(|&start| (start, path)))
        .collect();
    windows.sort();
    let mut starts: Vec<i64> = windows.iter().map(|(start, _)| *start).collect();
    starts.dedup();
    let from = starts.len().checked_sub(n).and_then(|i| starts.get(i)).copied().unwrap_or(i64::MIN);
    let usable: HashSet<PathBuf> = usable_files(dir).into_iter().collect();
    windows.into_iter().filter(|(start, path)| *start >= from && usable.contains(path)).map(|(_, path)| path).collect()
}

/// Flat JSON rows of `batches`: numbers as numbers, everything else as strings.
fn rows(batches: &[RecordBatch]) -> Result<Vec<Value>, MonitorError> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        let mut cols: Vec<(String, Vec<Value>)> = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            let a = b.column(i);
            let values: Vec<Value> = if f.data_type().is_numeric() {
                let c = cast(a, &DataType::Float64).map_err(qerr)?;
                let c = c.as_primitive::<Float64Type>();
                (0..c.len())
                    .map(|r| if c.is_valid(r) && c.value(r).is_finite() { json!(c.value(r)) } else { Value::Null })
                    .collect()
            } else {
                let c = cast(a, &DataType::Utf8).map_err(qerr)?;
                let c = c.as_string::<i32>();
                (0..c.len()).map(|r| if c.is_valid(r) { json!(c.value(r)) } else { Value::Null }).collect()
            };
            cols.push((f.name().clone(), values));
        }
        for r in 0..b.num_rows() {
            let mut m = Map::new();
            for (name, values) in &cols {
                m.insert(name.clone(), values[r].clone());
            }
            out.push(Value::Object(m));
        }
    }
    Ok(out)
}

async fn query(files: &[PathBuf], select: &str, filter: &str) -> Result<Vec<Value>, MonitorError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = new_ctx();
    register_files(&ctx, "m", files).await.map_err(qerr)?;
    let sql = format!("SELECT {select} FROM m WHERE {filter} ORDER BY 1");
    let batches = ctx.sql(&sql).await.map_err(qerr)?.collect().await.map_err(qerr)?;
    rows(&batches)
}

/// The whole-table profile and drift rows of the newest `windows` windows of `g`.
pub async fn series(
    profile_dir: &Path,
    drift_dir: &Path,
    g: &Granularity,
    windows: usize,
) -> Result<Value, MonitorError> {
    let window = "CAST(\"window\"['start'] AS BIGINT) / 1000 AS window_ms";
    let profile = query(
        &newest(profile_dir, &g.name, windows),
        &format!("{window}, model_id, column_name, count, avg, stddev, min, max, median, percent_null"),
        "slice_key IS NULL AND log_type = 'INPUT'",
    )
    .await?;
    let drift = query(
        &newest(drift_dir, &g.name, windows),
        &format!(
            "{window}, model_id, column_name, drift_type, \"ks_test\"['statistic'] AS ks_statistic, \
             \"ks_test\"['pvalue'] AS ks_pvalue, wasserstein_distance, population_stability_index, js_distance, \
             \"chi_squared_test\"['statistic'] AS chi_squared_statistic, \"chi_squared_test\"['pvalue'] AS chi_squared_pvalue, \
             tv_distance, l_infinity_distance"
        ),
        "slice_key IS NULL",
    )
    .await?;
    Ok(json!({"granularity": g.name, "profile": profile, "drift": drift}))
}

/// Values of `column` (numbers, or text) for the rows of `files` matching `filter`.
async fn values(
    files: &[PathBuf],
    labels: &[PathBuf],
    column: &str,
    filter: &str,
    limit: usize,
) -> Result<Column, MonitorError> {
    let ctx = new_ctx();
    register_labelled(&ctx, files, labels).await.map_err(qerr)?;
    let schema = ctx.table("v").await.map_err(qerr)?.schema().as_arrow().clone();
    let field = schema
        .field_with_name(column)
        .map_err(|_| MonitorError::Config(format!("the table has no column '{column}'")))?
        .clone();
    let sql = format!("SELECT {} FROM v WHERE {filter} LIMIT {limit}", q(column));
    let batches = ctx.sql(&sql).await.map_err(qerr)?.collect().await.map_err(qerr)?;
    let numeric = field.data_type().is_numeric() || *field.data_type() == DataType::Boolean;
    let mut out = if numeric { Column::Numbers(Vec::new()) } else { Column::Text(Vec::new()) };
    for b in batches {
        match &mut out {
            Column::Numbers(v) => {
                let c = cast(b.column(0), &DataType::Float64).map_err(qerr)?;
                let c = c.as_primitive::<Float64Type>();
                v.extend((0..c.len()).filter(|&r| c.is_valid(r)).map(|r| c.value(r)).filter(|x| x.is_finite()));
            }
            Column::Text(v) => {
                let c = cast(b.column(0), &DataType::Utf8).map_err(qerr)?;
                let c = c.as_string::<i32>();
                v.extend((0..c.len()).filter(|&r| c.is_valid(r)).map(|r| c.value(r).to_string()));
            }
        }
    }
    Ok(out)
}

enum Column {
    Numbers(Vec<f64>),
    Text(Vec<String>),
}

/// Rows read per side at most.
const MAX_VALUES: usize = 200_000;
const BINS: usize = 20;

/// Baseline and current distribution of `column` in the newest window of `g` that has rows.
pub async fn histogram(
    spec: &MonitorSpec,
    table_dir: &Path,
    labels_dir: &Path,
    baseline: Option<&Path>,
    column: &str,
    g: &Granularity,
    model_id: Option<&str>,
) -> Result<Value, MonitorError> {
    let files = usable_files(table_dir);
    if files.is_empty() {
        return Err(MonitorError::Config("the inference table has no rows yet".into()));
    }
    let labels = usable_files(labels_dir);
    let ctx = new_ctx();
    register_files(&ctx, "t", &files).await.map_err(qerr)?;
    let ts = format!("CAST({} AS BIGINT)", q(&spec.timestamp_col));
    let latest = ctx.sql(&format!("SELECT max({ts}) FROM t")).await.map_err(qerr)?.collect().await.map_err(qerr)?;
    let max_ts = rows(&latest)?.first().and_then(|r| r.as_object()?.values().next()?.as_f64()).map(|x| x as i64);
    let Some(max_ts) = max_ts else { return Err(MonitorError::Config("the inference table has no rows yet".into())) };
    let start = g.window_of(max_ts);
    let model = match model_id {
        Some(m) => format!("{} = {}", q(&spec.model_id_col), sql_str(m)),
        None => "(is_shadow IS NULL OR NOT is_shadow)".into(),
    };
    let filter = format!("({}) AND {model} AND {ts} >= {start} AND {ts} < {}", spec.filter, start + g.width_us);
    let current = values(&files, &labels, column, &filter, MAX_VALUES).await?;
    let base = match baseline {
        Some(b) if b.exists() => {
            let ctx = new_ctx();
            register_files(&ctx, "b", &[b.to_path_buf()]).await.map_err(qerr)?;
            let has = ctx.table("b").await.map_err(qerr)?.schema().as_arrow().field_with_name(column).is_ok();
            if has { Some(values(&[b.to_path_buf()], &[], column, "TRUE", MAX_VALUES).await?) } else { None }
        }
        _ => None,
    };
    let window_ms = start / 1000;
    Ok(match current {
        Column::Numbers(cur) => {
            let base = match base {
                Some(Column::Numbers(b)) => Some(b),
                _ => None,
            };
            let edges = edges(&cur, base.as_deref().unwrap_or(&[]));
            json!({
                "column": column, "kind": "numeric", "granularity": g.name, "window_ms": window_ms,
                "edges": edges, "current": counts(&edges, &cur), "baseline": base.map(|b| counts(&edges, &b)),
            })
        }
        Column::Text(cur) => {
            let base = match base {
                Some(Column::Text(b)) => Some(b),
                _ => None,
            };
            let mut freq: std::collections::BTreeMap<&str, (u64, u64)> = std::collections::BTreeMap::new();
            for v in &cur {
                freq.entry(v.as_str()).or_default().1 += 1;
            }
            for v in base.iter().flatten() {
                freq.entry(v.as_str()).or_default().0 += 1;
            }
            let mut cats: Vec<(&str, (u64, u64))> = freq.into_iter().collect();
            cats.sort_by(|a, b| (b.1.0 + b.1.1).cmp(&(a.1.0 + a.1.1)).then(a.0.cmp(b.0)));
            cats.truncate(BINS);
            json!({
                "column": column, "kind": "categorical", "granularity": g.name, "window_ms": window_ms,
                "categories": cats.iter().map(|c| c.0).collect::<Vec<_>>(),
                "current": cats.iter().map(|c| c.1.1).collect::<Vec<_>>(),
                "baseline": base.is_some().then(|| cats.iter().map(|c| c.1.0).collect::<Vec<_>>()),
            })
        }
    })
}

/// `BINS` equal-width bins between the 1st and 99th percentiles of both samples together
/// (values outside fall in the end bins), or one bin when they are all equal.
fn edges(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut all: Vec<f64> = a.iter().chain(b).copied().collect();
    all.sort_by(f64::total_cmp);
    let lo = quantile_sorted(&all, 0.01).unwrap_or(0.0);
    let hi = quantile_sorted(&all, 0.99).unwrap_or(0.0);
    if hi <= lo {
        return vec![lo, lo + 1.0];
    }
    (0..=BINS).map(|k| lo + (hi - lo) * k as f64 / BINS as f64).collect()
}

fn counts(edges: &[f64], values: &[f64]) -> Vec<u64> {
    let bins = edges.len() - 1;
    let mut c = vec![0u64; bins];
    for &x in values {
        let k = edges[1..bins].partition_point(|e| *e <= x);
        c[k] += 1;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_both_samples_and_clamp_the_tails() {
        let a: Vec<f64> = (0..100).map(f64::from).collect();
        let b: Vec<f64> = (50..150).map(f64::from).collect();
        let e = edges(&a, &b);
        assert_eq!(e.len(), BINS + 1);
        assert_eq!(counts(&e, &a).iter().sum::<u64>(), 100);
        assert_eq!(counts(&e, &[-1e9, 1e9]), {
            let mut v = vec![0; BINS];
            v[0] = 1;
            v[BINS - 1] = 1;
            v
        });
        assert_eq!(edges(&[3.0, 3.0], &[]), vec![3.0, 4.0]);
    }
}
