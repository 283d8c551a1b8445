//! Records -> one Arrow record batch in the table's schema (one row per request row).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, MapBuilder, MapFieldNames,
    StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use super::{InferenceRecord, InputColumns, Payload, PredictionKind, TableLayout};
use crate::tensor::{Tensor, TensorData};

fn as_string(data: &TensorData, i: usize) -> Option<String> {
    match data {
        TensorData::Bytes(v) => v.get(i).map(|b| String::from_utf8_lossy(b).into_owned()),
        other => other.f64_at(i).map(|x| if x.fract() == 0.0 { format!("{x:.0}") } else { x.to_string() }),
    }
}

/// Values per row of a tensor whose first dimension is the batch.
fn row_width(t: &Tensor, rows: usize) -> usize {
    t.data.len().checked_div(rows).unwrap_or(0)
}

/// Appends row `r` of `t` to a list builder.
/// A list's item field as Delta (and Spark) name it.
fn element(t: DataType) -> Arc<Field> {
    Arc::new(Field::new("element", t, true))
}

fn f64_list() -> ListBuilder<Float64Builder> {
    ListBuilder::new(Float64Builder::new()).with_field(element(DataType::Float64))
}

fn push_row(b: &mut ListBuilder<Float64Builder>, t: Option<&Tensor>, rows: usize, r: usize) {
    match t {
        Some(t) if r < rows => {
            let w = row_width(t, rows);
            for k in 0..w {
                b.values().append_option(t.data.f64_at(r * w + k));
            }
            b.append(true);
        }
        _ => b.append(false),
    }
}

/// Builds the batch for `records` (each contributes `max(rows, 1)` rows).
pub fn batch(layout: &TableLayout, records: &[InferenceRecord]) -> Result<RecordBatch, ArrowError> {
    let total: usize = records.iter().map(|r| r.rows.max(1)).sum();
    let mut request_id = StringBuilder::with_capacity(total, total * 32);
    let mut client_request_id = StringBuilder::new();
    let mut row_index = Int64Builder::with_capacity(total);
    let mut timestamp = TimestampMicrosecondBuilder::with_capacity(total).with_timezone("UTC");
    let mut endpoint = StringBuilder::new();
    let mut served_model = StringBuilder::new();
    let mut model_name = StringBuilder::new();
    let mut model_version = StringBuilder::new();
    let mut is_shadow = BooleanBuilder::with_capacity(total);
    let mut status_code = Int32Builder::with_capacity(total);
    let mut error = StringBuilder::new();
    let mut latency_ms = Float64Builder::with_capacity(total);
    let mut execution_ms = Float64Builder::with_capacity(total);
    let mut queue_ms = Float64Builder::with_capacity(total);
    let mut batch_size = Int32Builder::with_capacity(total);
    let mut sampling_fraction = Float64Builder::with_capacity(total);
    let mut requester = StringBuilder::new();
    let mut request_json = StringBuilder::new();
    let mut response_json = StringBuilder::new();
    let mut error_codes = ListBuilder::new(StringBuilder::new()).with_field(element(DataType::Utf8));

    let mut feature_cols: Vec<Float64Builder> = Vec::new();
    let mut tensor_cols: Vec<ListBuilder<Float64Builder>> = Vec::new();
    match &layout.inputs {
        InputColumns::Features(f) => feature_cols = f.iter().map(|_| Float64Builder::with_capacity(total)).collect(),
        InputColumns::Tensors(names) => tensor_cols = names.iter().map(|_| f64_list()).collect(),
    }
    let mut label = StringBuilder::new();
    let mut value = Float64Builder::with_capacity(total);
    // Delta's (and Spark's) names for a map's parts, so files and log agree without a cast
    let names = MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() };
    let mut probs = MapBuilder::new(Some(names), StringBuilder::new(), Float64Builder::new());
    let output_names: Vec<String> =
        records.iter().find_map(|r| r.prediction.as_ref().map(|p| p.output_names.clone())).unwrap_or_default();
    let mut output_cols: Vec<ListBuilder<Float64Builder>> = output_names.iter().map(|_| f64_list()).collect();

    for rec in records {
        let n = rec.rows.max(1);
        let (request_payload, response_payload, codes) = payload_columns(rec);
        for r in 0..n {
            request_id.append_value(&*rec.request_id);
            client_request_id.append_option(rec.client_request_id.as_deref());
            row_index.append_value(r as i64);
            timestamp.append_value(rec.timestamp_us);
            endpoint.append_value(&*rec.endpoint);
            served_model.append_value(&*rec.served_model);
            model_name.append_value(&*rec.model_name);
            model_version.append_value(&*rec.model_version);
            is_shadow.append_value(rec.is_shadow);
            status_code.append_value(i32::from(rec.status_code));
            error.append_option(rec.error.as_deref());
            latency_ms.append_value(rec.latency_ms);
            execution_ms.append_value(rec.execution_ms);
            queue_ms.append_value(rec.queue_ms);
            batch_size.append_value(i32::try_from(rec.batch_size).unwrap_or(i32::MAX));
            sampling_fraction.append_value(rec.sampling_fraction);
            requester.append_option(rec.requester.as_deref());
            request_json.append_option(request_payload.as_deref());
            response_json.append_option(response_payload.as_deref());
            for c in &codes {
                error_codes.values().append_value(c);
            }
            error_codes.append(true);

            let inputs = rec.inputs.as_deref().filter(|_| rec.rows > 0);
            match &layout.inputs {
                InputColumns::Features(f) => {
                    for (b, col) in feature_cols.iter_mut().zip(f) {
                        let v = inputs
                            .and_then(|ins| ins.get(col.input))
                            .and_then(|t| t.data.f64_at(col.offset + r * col.width));
                        b.append_option(v);
                    }
                }
                InputColumns::Tensors(_) => {
                    for (i, b) in tensor_cols.iter_mut().enumerate() {
                        push_row(b, inputs.and_then(|ins| ins.get(i)), rec.rows, r);
                    }
                }
            }
            let outputs = rec.outputs.as_deref().filter(|_| rec.rows > 0);
            let spec = rec.prediction.as_deref();
            let out = |i: Option<usize>| outputs.zip(i).and_then(|(o, i)| o.get(i));
            match layout.prediction {
                PredictionKind::Classification => {
                    let l = spec.and_then(|s| out(s.label)).and_then(|t| as_string(&t.data, r));
                    let p = spec.and_then(|s| out(s.probabilities));
                    let classes = spec.and_then(|s| s.class_labels.as_deref());
                    let name = |c: usize| classes.and_then(|l| l.get(c)).cloned().unwrap_or_else(|| c.to_string());
                    // label: class name of the label output, else argmax of the probabilities
                    let label_text = match (l, p) {
                        (Some(l), _) => Some(l.parse::<usize>().ok().map(name).unwrap_or(l)),
                        (None, Some(p)) => {
                            let w = row_width(p, rec.rows);
                            (0..w)
                                .filter_map(|c| p.data.f64_at(r * w + c).map(|v| (c, v)))
                                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                                .map(|(c, _)| name(c))
                        }
                        (None, None) => None,
                    };
                    label.append_option(label_text);
                    match p {
                        Some(p) => {
                            let w = row_width(p, rec.rows);
                            for c in 0..w {
                                probs.keys().append_value(name(c));
                                probs.values().append_option(p.data.f64_at(r * w + c));
                            }
                            probs.append(true)?;
                        }
                        None => probs.append(false)?,
                    }
                }
                PredictionKind::Regression => {
                    value.append_option(
                        spec.and_then(|s| out(s.value)).and_then(|t| t.data.f64_at(r * row_width(t, rec.rows))),
                    );
                }
                PredictionKind::Tensor => {
                    for (i, b) in output_cols.iter_mut().enumerate() {
                        push_row(b, outputs.and_then(|o| o.get(i)), rec.rows, r);
                    }
                }
            }
        }
    }

    let mut cols: Vec<(String, ArrayRef)> = vec![
        ("request_id".into(), Arc::new(request_id.finish())),
        ("client_request_id".into(), Arc::new(client_request_id.finish())),
        ("row_index".into(), Arc::new(row_index.finish())),
        ("timestamp".into(), Arc::new(timestamp.finish())),
        ("endpoint".into(), Arc::new(endpoint.finish())),
        ("served_model".into(), Arc::new(served_model.finish())),
        ("model_name".into(), Arc::new(model_name.finish())),
        ("model_version".into(), Arc::new(model_version.finish())),
        ("is_shadow".into(), Arc::new(is_shadow.finish())),
        ("status_code".into(), Arc::new(status_code.finish())),
        ("error".into(), Arc::new(error.finish())),
        ("latency_ms".into(), Arc::new(latency_ms.finish())),
        ("execution_ms".into(), Arc::new(execution_ms.finish())),
        ("queue_ms".into(), Arc::new(queue_ms.finish())),
        ("batch_size".into(), Arc::new(batch_size.finish())),
        ("sampling_fraction".into(), Arc::new(sampling_fraction.finish())),
        ("requester".into(), Arc::new(requester.finish())),
    ];
    match &layout.inputs {
        InputColumns::Features(f) => {
            for (b, col) in feature_cols.iter_mut().zip(f) {
                cols.push((col.name.clone(), Arc::new(b.finish())));
            }
        }
        InputColumns::Tensors(names) => {
            for (b, name) in tensor_cols.iter_mut().zip(names) {
                cols.push((format!("input_{name}"), Arc::new(b.finish())));
            }
        }
    }
    match layout.prediction {
        PredictionKind::Classification => {
            cols.push(("prediction".into(), Arc::new(label.finish())));
            cols.push(("probabilities".into(), Arc::new(probs.finish())));
        }
        PredictionKind::Regression => cols.push(("prediction".into(), Arc::new(value.finish()))),
        PredictionKind::Tensor => {
            for (b, name) in output_cols.iter_mut().zip(&output_names) {
                cols.push((format!("output_{name}"), Arc::new(b.finish())));
            }
        }
    }
    cols.push(("request_json".into(), Arc::new(request_json.finish())));
    cols.push(("response_json".into(), Arc::new(response_json.finish())));
    cols.push(("logging_error_codes".into(), Arc::new(error_codes.finish())));
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, a)| {
                Field::new(n, a.data_type().clone(), !matches!(n.as_str(), "request_id" | "row_index" | "timestamp"))
            })
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(schema, cols.into_iter().map(|(_, a)| a).collect())
}

/// Raw payload columns, NULL when over the cap (with an error code saying so).
fn payload_columns(rec: &InferenceRecord) -> (Option<String>, Option<String>, Vec<&'static str>) {
    let mut codes = Vec::new();
    let mut text = |p: &Option<Payload>, too_large: &'static str| match p {
        None => None,
        Some(Payload::TooLarge) => {
            codes.push(too_large);
            None
        }
        Some(Payload::Json(b)) => Some(String::from_utf8_lossy(b).into_owned()),
    };
    let req = text(&rec.request_json, "REQUEST_PAYLOAD_TOO_LARGE");
    let resp = text(&rec.response_json, "RESPONSE_PAYLOAD_TOO_LARGE");
    (req, resp, codes)
}
