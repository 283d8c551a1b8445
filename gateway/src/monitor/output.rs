//! Metric rows -> Arrow -> Parquet, in Lakehouse Monitoring's column layout. Each window of each
//! granularity is one file (`<table>_profile_metrics/<granularity>/<window start>.parquet`),
//! written under a hidden name and renamed into place, so a refresh replaces exactly the windows
//! it recomputed and readers never see a partial file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBufferBuilder, Float64Array, Float64Builder, Int64Array, Int64Builder, ListBuilder,
    StringArray, StringBuilder, StructArray, TimestampMicrosecondArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

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
    cols.push(("log_type".into(), strings(rows.iter().map(|_| Some("INPUT")))));
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

/// `YYYYMMDDTHHMMSSZ` for a UTC instant in microseconds (file names).
pub fn stamp(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = crate::inference_log::civil_date(days);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

/// RFC 3339 UTC time of an instant in microseconds (JSON answers and webhooks).
pub fn rfc3339(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

/// Path of a window's file in table directory `dir`.
pub fn window_file(dir: &Path, granularity_tag: &str, window_start: i64) -> PathBuf {
    dir.join(granularity_tag).join(format!("{}.parquet", stamp(window_start)))
}

/// Writes `batch` to `path` atomically and durably ([`crate::durable`]); an empty batch removes
/// it.
pub fn write_file(path: &Path, batch: &RecordBatch) -> std::io::Result<()> {
    if batch.num_rows() == 0 {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    crate::durable::write_atomic_with(path, |file| {
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(std::io::Error::other)?;
        w.write(batch).map_err(std::io::Error::other)?;
        w.close().map(|_| ()).map_err(std::io::Error::other)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_civil_times() {
        assert_eq!(stamp(0), "19700101T000000Z");
        assert_eq!(stamp(1_795_651_200_000_000 + 3_723_000_000), "20261126T010203Z");
        assert_eq!(stamp(951_782_400_000_000), "20000229T000000Z");
    }
}
