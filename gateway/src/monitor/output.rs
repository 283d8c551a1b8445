//! Metric rows -> Arrow -> Delta tables, in Lakehouse Monitoring's column layout
//! (`<table>_profile_metrics`, `<table>_drift_metrics`, unpartitioned: they are small). Each
//! window of each granularity is one data file, so a refresh replaces exactly the windows it
//! recomputed: the new files of a granularity's windows are staged, then one commit per table
//! removes the files of those windows (picked by their statistics: every row of a file has the
//! same `granularity` and `window.start`) and adds the new ones. Readers see a window's old rows
//! or its new ones, never both or neither; the log's `replaceWhere`-style predicate says which
//! windows each commit replaced.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBufferBuilder, Float64Array, Float64Builder, Int64Array, Int64Builder, ListBuilder,
    StringArray, StringBuilder, StructArray, TimestampMicrosecondArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use sluice_tables::{DataFile, Location, Staged, Table, TableError, TableSpec};

use super::error::{ioerr, qerr};
use super::rows::{DriftRow, ProfileRow, RowKey};

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn window_fields() -> Fields {
    Fields::from(vec![Field::new("start", ts_type(), false), Field::new("end", ts_type(), false)])
}

/// struct<start, end> with a null mask.
fn window_array(w: &[Option<(i64, i64)>]) -> ArrayRef {
    let start = TimestampMicrosecondArray::from(w.iter().map(|x| x.map(|x| x.0).unwrap_or(0)).collect::<Vec<_>>())
        .with_timezone("UTC");
    let end = TimestampMicrosecondArray::from(w.iter().map(|x| x.map(|x| x.1).unwrap_or(0)).collect::<Vec<_>>())
        .with_timezone("UTC");
    let nulls =
        w.iter().any(Option::is_none).then(|| NullBuffer::from(w.iter().map(Option::is_some).collect::<Vec<_>>()));
    Arc::new(StructArray::new(window_fields(), vec![Arc::new(start), Arc::new(end)], nulls))
}

/// struct<a: double, b: double> (named `names`) with a null mask.
fn pair_array(names: [&str; 2], v: &[Option<(f64, f64)>]) -> ArrayRef {
    let fields = Fields::from(vec![
        Field::new(names[0], DataType::Float64, true),
        Field::new(names[1], DataType::Float64, true),
    ]);
    let a = Float64Array::from(v.iter().map(|x| x.map(|x| x.0)).collect::<Vec<_>>());
    let b = Float64Array::from(v.iter().map(|x| x.map(|x| x.1)).collect::<Vec<_>>());
    let mut mask = BooleanBufferBuilder::new(v.len());
    for x in v {
        mask.append(x.is_some());
    }
    let nulls = v.iter().any(Option::is_none).then(|| NullBuffer::new(mask.finish()));
    Arc::new(StructArray::new(fields, vec![Arc::new(a), Arc::new(b)], nulls))
}

fn strings<'a>(v: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(v.collect::<StringArray>())
}

fn key_columns(keys: &[&RowKey], cols: &mut Vec<(String, ArrayRef)>) {
    cols.push((
        "window".into(),
        window_array(&keys.iter().map(|k| Some((k.window_start, k.window_end))).collect::<Vec<_>>()),
    ));
}

fn group_columns(keys: &[&RowKey], cols: &mut Vec<(String, ArrayRef)>) {
    cols.push(("monitor_version".into(), Arc::new(Int64Array::from(vec![1i64; keys.len()]))));
    cols.push(("granularity".into(), strings(keys.iter().map(|k| Some(&*k.granularity)))));
    cols.push(("model_id".into(), strings(keys.iter().map(|k| k.model_id.as_deref()))));
    cols.push(("slice_key".into(), strings(keys.iter().map(|k| k.slice_key.as_deref()))));
    cols.push(("slice_value".into(), strings(keys.iter().map(|k| k.slice_value.as_deref()))));
}

fn f64s(v: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(v.collect::<Float64Array>())
}

fn i64s(v: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(v.collect::<Int64Array>())
}

fn batch(cols: Vec<(String, ArrayRef)>) -> Result<RecordBatch, ArrowError> {
    let schema = Schema::new(cols.iter().map(|(n, a)| Field::new(n, a.data_type().clone(), true)).collect::<Vec<_>>());
    RecordBatch::try_new(Arc::new(schema), cols.into_iter().map(|(_, a)| a).collect())
}

/// The profile table's batch; `custom` names the custom metric columns.
pub fn profile_batch(rows: &[ProfileRow], custom: &[String]) -> Result<RecordBatch, ArrowError> {
    let keys: Vec<&RowKey> = rows.iter().map(|r| &r.key).collect();
    let mut cols: Vec<(String, ArrayRef)> = Vec::new();
    key_columns(&keys, &mut cols);
    cols.push(("log_type".into(), strings(rows.iter().map(|r| Some(r.log_type)))));
    group_columns(&keys, &mut cols);
    cols.push(("column_name".into(), strings(rows.iter().map(|r| Some(r.column_name.as_str())))));
    cols.push(("data_type".into(), strings(rows.iter().map(|r| Some(r.data_type)))));
    cols.push(("count".into(), i64s(rows.iter().map(|r| Some(r.count)))));
    cols.push(("num_nulls".into(), i64s(rows.iter().map(|r| r.num_nulls))));
    cols.push(("num_nan".into(), i64s(rows.iter().map(|r| r.num_nan))));
    cols.push(("num_zeros".into(), i64s(rows.iter().map(|r| r.num_zeros))));
    cols.push(("distinct_count".into(), i64s(rows.iter().map(|r| r.distinct_count))));
    cols.push(("percent_null".into(), f64s(rows.iter().map(|r| r.percent_null))));
    cols.push(("percent_nan".into(), f64s(rows.iter().map(|r| r.percent_nan))));
    cols.push(("percent_zeros".into(), f64s(rows.iter().map(|r| r.percent_zeros))));
    cols.push(("percent_distinct".into(), f64s(rows.iter().map(|r| r.percent_distinct))));
    cols.push(("min".into(), f64s(rows.iter().map(|r| r.min))));
    cols.push(("max".into(), f64s(rows.iter().map(|r| r.max))));
    cols.push(("avg".into(), f64s(rows.iter().map(|r| r.avg))));
    cols.push(("stddev".into(), f64s(rows.iter().map(|r| r.stddev))));
    cols.push(("median".into(), f64s(rows.iter().map(|r| r.median))));
    let mut q = ListBuilder::new(Float64Builder::new());
    for r in rows {
        match &r.quantiles {
            Some(v) => {
                q.values().append_slice(v);
                q.append(true);
            }
            None => q.append(false),
        }
    }
    cols.push(("quantiles".into(), Arc::new(q.finish())));
    cols.push(("min_length".into(), f64s(rows.iter().map(|r| r.min_length))));
    cols.push(("max_length".into(), f64s(rows.iter().map(|r| r.max_length))));
    cols.push(("avg_length".into(), f64s(rows.iter().map(|r| r.avg_length))));
    cols.push(("frequent_items".into(), frequent_items(rows)?));
    let mut nn = ListBuilder::new(StringBuilder::new());
    for r in rows {
        match &r.non_null_columns {
            Some(v) => {
                for s in v {
                    nn.values().append_value(s);
                }
                nn.append(true);
            }
            None => nn.append(false),
        }
    }
    cols.push(("non_null_columns".into(), Arc::new(nn.finish())));
    let q: Vec<_> = rows.iter().map(|r| &r.quality).collect();
    cols.push(("accuracy_score".into(), f64s(q.iter().map(|q| q.accuracy))));
    for (name, get) in [
        ("precision", (|q: &super::rows::Quality| q.precision) as fn(&super::rows::Quality) -> Option<(f64, f64)>),
        ("recall", |q| q.recall),
        ("f1_score", |q| q.f1),
    ] {
        cols.push((name.into(), pair_array(["macro", "weighted"], &q.iter().map(|q| get(q)).collect::<Vec<_>>())));
    }
    cols.push(("confusion_matrix".into(), confusion(rows)?));
    cols.push(("roc_auc_score".into(), f64s(q.iter().map(|q| q.roc_auc))));
    cols.push(("mean_squared_error".into(), f64s(q.iter().map(|q| q.mse))));
    cols.push(("root_mean_squared_error".into(), f64s(q.iter().map(|q| q.rmse))));
    cols.push(("mean_absolute_error".into(), f64s(q.iter().map(|q| q.mae))));
    cols.push(("mean_absolute_percentage_error".into(), f64s(q.iter().map(|q| q.mape))));
    cols.push(("r2_score".into(), f64s(q.iter().map(|q| q.r2))));
    for (i, name) in custom.iter().enumerate() {
        cols.push((name.clone(), f64s(rows.iter().map(|r| r.custom.get(i).copied().flatten()))));
    }
    batch(cols)
}

fn frequent_items(rows: &[ProfileRow]) -> Result<ArrayRef, ArrowError> {
    let fields =
        Fields::from(vec![Field::new("item", DataType::Utf8, true), Field::new("count", DataType::Int64, true)]);
    let mut items = StringBuilder::new();
    let mut counts = Int64Builder::new();
    let mut offsets = vec![0i32];
    let mut valid = Vec::with_capacity(rows.len());
    for r in rows {
        if let Some(v) = &r.frequent_items {
            for (s, c) in v {
                items.append_value(s);
                counts.append_value(*c);
            }
        }
        valid.push(r.frequent_items.is_some());
        offsets.push(offsets.last().copied().unwrap_or(0) + r.frequent_items.as_ref().map_or(0, |v| v.len() as i32));
    }
    let values = StructArray::new(fields.clone(), vec![Arc::new(items.finish()), Arc::new(counts.finish())], None);
    let field = Arc::new(Field::new("element", DataType::Struct(fields), true));
    let list = datafusion::arrow::array::ListArray::try_new(
        field,
        datafusion::arrow::buffer::OffsetBuffer::new(offsets.into()),
        Arc::new(values),
        Some(NullBuffer::from(valid)),
    )?;
    Ok(Arc::new(list))
}

fn confusion(rows: &[ProfileRow]) -> Result<ArrayRef, ArrowError> {
    let mut labels = ListBuilder::new(StringBuilder::new());
    let mut counts = ListBuilder::new(ListBuilder::new(Int64Builder::new()));
    let mut valid = Vec::with_capacity(rows.len());
    for r in rows {
        match &r.quality.confusion {
            Some((l, m)) => {
                for s in l {
                    labels.values().append_value(s);
                }
                labels.append(true);
                for row in m {
                    counts.values().values().append_slice(row);
                    counts.values().append(true);
                }
                counts.append(true);
                valid.push(true);
            }
            None => {
                labels.append(false);
                counts.append(false);
                valid.push(false);
            }
        }
    }
    let (l, c) = (labels.finish(), counts.finish());
    let fields = Fields::from(vec![
        Field::new("labels", l.data_type().clone(), true),
        Field::new("counts", c.data_type().clone(), true),
    ]);
    Ok(Arc::new(StructArray::try_new(fields, vec![Arc::new(l), Arc::new(c)], Some(NullBuffer::from(valid)))?))
}

/// The drift table's batch.
pub fn drift_batch(rows: &[DriftRow], custom: &[String]) -> Result<RecordBatch, ArrowError> {
    let keys: Vec<&RowKey> = rows.iter().map(|r| &r.key).collect();
    let mut cols: Vec<(String, ArrayRef)> = Vec::new();
    key_columns(&keys, &mut cols);
    cols.push(("window_cmp".into(), window_array(&rows.iter().map(|r| r.window_cmp).collect::<Vec<_>>())));
    cols.push(("drift_type".into(), strings(rows.iter().map(|r| Some(r.drift_type)))));
    group_columns(&keys, &mut cols);
    cols.push(("column_name".into(), strings(rows.iter().map(|r| Some(r.column_name.as_str())))));
    cols.push(("data_type".into(), strings(rows.iter().map(|r| Some(r.data_type)))));
    cols.push(("count_delta".into(), i64s(rows.iter().map(|r| Some(r.count_delta)))));
    cols.push(("avg_delta".into(), f64s(rows.iter().map(|r| r.avg_delta))));
    cols.push(("percent_null_delta".into(), f64s(rows.iter().map(|r| r.percent_null_delta))));
    cols.push(("percent_zeros_delta".into(), f64s(rows.iter().map(|r| r.percent_zeros_delta))));
    cols.push(("percent_distinct_delta".into(), f64s(rows.iter().map(|r| r.percent_distinct_delta))));
    cols.push((
        "ks_test".into(),
        pair_array(["statistic", "pvalue"], &rows.iter().map(|r| r.ks_test).collect::<Vec<_>>()),
    ));
    cols.push(("wasserstein_distance".into(), f64s(rows.iter().map(|r| r.wasserstein_distance))));
    cols.push(("population_stability_index".into(), f64s(rows.iter().map(|r| r.population_stability_index))));
    cols.push(("js_distance".into(), f64s(rows.iter().map(|r| r.js_distance))));
    cols.push((
        "chi_squared_test".into(),
        pair_array(["statistic", "pvalue"], &rows.iter().map(|r| r.chi_squared_test).collect::<Vec<_>>()),
    ));
    cols.push(("tv_distance".into(), f64s(rows.iter().map(|r| r.tv_distance))));
    cols.push(("l_infinity_distance".into(), f64s(rows.iter().map(|r| r.l_infinity_distance))));
    for (i, name) in custom.iter().enumerate() {
        cols.push((name.clone(), f64s(rows.iter().map(|r| r.custom.get(i).copied().flatten()))));
    }
    batch(cols)
}

/// RFC 3339 UTC time of an instant in microseconds (JSON answers and webhooks).
pub fn rfc3339(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

/// The monitor's two metric tables, open for writing.
pub struct MetricTables {
    profile: Table,
    drift: Table,
}

/// The new files of one granularity's recomputed windows, staged, not yet committed.
pub struct Pending {
    granularity: String,
    windows: Vec<i64>,
    profile: Staged,
    drift: Staged,
}

fn table_err(e: TableError) -> super::MonitorError {
    super::MonitorError::Io(format!("metric table: {e}"))
}

impl MetricTables {
    /// Opens the tables in `profile_dir` and `drift_dir`, creating them with the schemas of
    /// `custom_profile` and `custom_drift` (the custom metric columns) where there are none.
    pub async fn open(
        profile_at: &Location,
        drift_at: &Location,
        custom_profile: &[String],
        custom_drift: &[String],
    ) -> Result<MetricTables, super::MonitorError> {
        let spec = |schema| TableSpec {
            schema,
            partition_by: Vec::new(),
            checkpoint_interval: crate::inference_log::CHECKPOINT_INTERVAL,
        };
        let p = spec(profile_batch(&[], custom_profile).map_err(qerr)?.schema());
        let d = spec(drift_batch(&[], custom_drift).map_err(qerr)?.schema());
        Ok(MetricTables {
            profile: Table::open_or_create(profile_at, &p).await.map_err(table_err)?,
            drift: Table::open_or_create(drift_at, &d).await.map_err(table_err)?,
        })
    }

    /// Nothing staged yet for granularity `g`.
    pub async fn pending(&mut self, granularity: &str) -> Result<Pending, super::MonitorError> {
        Ok(Pending {
            granularity: granularity.to_string(),
            windows: Vec::new(),
            profile: self.profile.stage(&[]).await.map_err(table_err)?,
            drift: self.drift.stage(&[]).await.map_err(table_err)?,
        })
    }

    /// Stages window `w`'s new rows (one file per table; none for a window without rows).
    pub async fn stage(
        &mut self,
        pending: &mut Pending,
        w: i64,
        profile: &RecordBatch,
        drift: &RecordBatch,
    ) -> Result<(), super::MonitorError> {
        for (table, staged, b) in
            [(&mut self.profile, &mut pending.profile, profile), (&mut self.drift, &mut pending.drift, drift)]
        {
            if b.num_rows() > 0 {
                staged.merge(table.stage(std::slice::from_ref(b)).await.map_err(table_err)?);
            }
        }
        pending.windows.push(w);
        Ok(())
    }

    /// Commits the staged windows: one commit per table that replaces those windows' rows.
    pub async fn commit(&mut self, mut pending: Pending) -> Result<(), super::MonitorError> {
        if pending.windows.is_empty() {
            return Ok(());
        }
        let predicate = replaced_predicate(&pending.granularity, &pending.windows);
        let (g, windows) = (pending.granularity.clone(), pending.windows.clone());
        let pick = move |f: &DataFile| in_windows(f, &g, &windows);
        self.profile.replace(&mut pending.profile, &predicate, &pick).await.map_err(table_err)?;
        self.drift.replace(&mut pending.drift, &predicate, &pick).await.map_err(table_err)?;
        Ok(())
    }
}

/// Empties the metric table in `dir` (one commit removing every file: a new spec starts the
/// outputs over). A directory of plain Parquet files (the layout before metric tables were
/// Delta tables: derived data) is deleted.
pub async fn clear(at: &Location) -> Result<(), super::MonitorError> {
    let Some(dir) = at.local_path() else {
        // in object storage: empty it when it exists
        let mut t = match Table::open(at).await {
            Ok(t) => t,
            Err(TableError::NotATable { .. }) => return Ok(()),
            Err(e) => return Err(table_err(e)),
        };
        let mut nothing = t.stage(&[]).await.map_err(table_err)?;
        t.replace(&mut nothing, "true", &|_| true).await.map_err(table_err)?;
        return Ok(());
    };
    if !dir.exists() {
        return Ok(());
    }
    if !dir.join("_delta_log").is_dir() {
        tracing::info!(dir = %dir.display(), "removing a metric table of plain Parquet files (now written as a Delta table)");
        return std::fs::remove_dir_all(dir).map_err(|e| ioerr("cannot clear", dir, e));
    }
    let mut t = Table::open(&Location::Local(dir.to_path_buf())).await.map_err(table_err)?;
    let mut nothing = t.stage(&[]).await.map_err(table_err)?;
    t.replace(&mut nothing, "true", &|_| true).await.map_err(table_err)?;
    Ok(())
}

/// Whether every row of data file `f` is in one of `windows` (starts, µs) of granularity `g`.
fn in_windows(f: &DataFile, g: &str, windows: &[i64]) -> bool {
    f.all_text("granularity", g) && windows.iter().any(|w| f.all_time("window.start", *w))
}

/// The SQL condition that holds for exactly the rows of `windows` of granularity `g`.
fn replaced_predicate(g: &str, windows: &[i64]) -> String {
    let list = windows.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
    format!("granularity = '{}' AND CAST(\"window\"['start'] AS BIGINT) IN ({list})", g.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replaced_predicate_names_the_granularity_and_window_starts() {
        assert_eq!(
            replaced_predicate("1 hour", &[0, 3_600_000_000]),
            "granularity = '1 hour' AND CAST(\"window\"['start'] AS BIGINT) IN (0, 3600000000)"
        );
        assert!(replaced_predicate("it's", &[1]).starts_with("granularity = 'it''s'"));
    }
}
