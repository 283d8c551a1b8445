//! MLflow / Databricks scoring formats for `/predict`: `dataframe_split`, `dataframe_records`,
//! `instances` and `inputs` in; `{"predictions": [...]}` out.
//!
//! Models with named features (manifest `features`) take any of the four formats; features map
//! onto the input tensor(s) through the manifest. Raw-tensor models take `inputs` / `instances`.
//! The transport half of `/predict`: [`parse`] before routing, [`Payload`] maps onto whichever
//! model the request is routed to, [`Predictions`] renders the answer.

use serde_json::{Map, Value};

use crate::core::{Answer, CoreError, FieldValue, ModelInputs, NamedTensor, Render, order_inputs};
use crate::registry::{FeatureLayout, LoadedModel, PredictionLayout};
use crate::tensor::json::{nested_tensor, push_leaf};
use crate::tensor::{Tensor, TensorData};

const FORMATS: [&str; 4] = ["dataframe_split", "dataframe_records", "instances", "inputs"];

/// A parsed request body.
#[derive(Debug)]
pub enum Payload {
    /// `dataframe_split`: column names (absent: positional) and rows.
    Split { columns: Option<Vec<String>>, data: Vec<Value> },
    /// `dataframe_records`: one object per row.
    Records(Vec<Value>),
    /// `instances`: one entry per row (object or array or scalar).
    Instances(Vec<Value>),
    /// `inputs`: columnar object or a tensor / list of rows.
    Inputs(Value),
}

fn bad(msg: impl Into<String>) -> CoreError {
    CoreError::BadRequest(msg.into())
}

/// A parsed `/predict` body.
#[derive(Debug)]
pub struct Parsed {
    pub payload: Payload,
    /// Databricks' optional top-level `client_request_id`.
    pub client_request_id: Option<String>,
    /// Other top-level fields (an endpoint may read its sticky key from one; the core checks).
    pub fields: Vec<(String, FieldValue)>,
}

/// Parses a body and checks that it uses exactly one format.
pub fn parse(body: &[u8]) -> Result<Parsed, CoreError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(mut map) = v else {
        return Err(bad(format!("request body must be a JSON object with exactly one of {FORMATS:?}")));
    };
    let mut fields = Vec::new();
    for (key, value) in &map {
        if FORMATS.contains(&key.as_str()) || key == "params" || key == "client_request_id" {
            continue;
        }
        let value = match value {
            Value::Null => FieldValue::Null,
            Value::String(s) => FieldValue::Text(s.clone()),
            Value::Number(n) => FieldValue::Text(n.to_string()),
            _ => FieldValue::Other,
        };
        fields.push((key.clone(), value));
    }
    let client_request_id = match map.get("client_request_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            crate::limits::check_id("client_request_id", s)?;
            Some(s.clone())
        }
        Some(_) => return Err(bad("client_request_id must be a string")),
    };
    let present: Vec<&str> = FORMATS.iter().copied().filter(|k| map.contains_key(*k)).collect();
    if present.len() != 1 {
        return Err(bad(match (present.is_empty(), fields.first()) {
            (true, Some((key, _))) => format!("unknown field '{key}'; send exactly one of {FORMATS:?}"),
            (true, None) => format!("request body has none of {FORMATS:?}; send exactly one"),
            (false, _) => format!("request body has {present:?}; send exactly one of {FORMATS:?}"),
        }));
    }
    let key = present[0];
    let value = map.remove(key).unwrap_or(Value::Null);
    let payload = parse_format(key, value)?;
    Ok(Parsed { payload, client_request_id, fields })
}

impl ModelInputs for Payload {
    fn into_tensors(self: Box<Self>, model: &LoadedModel) -> Result<Vec<Tensor>, CoreError> {
        to_tensors(model, *self)
    }
}

/// Renders `{"predictions": [...]}`; the table logs it as the response.
#[derive(Debug, Clone, Copy, Default)]
pub struct Predictions;

impl Render for Predictions {
    type Output = Vec<u8>;

    fn render(&self, a: Answer<'_>) -> Result<Vec<u8>, CoreError> {
        if a.mlflow_predictions { Ok(render_as_mlflow(a.model, a.outputs)) } else { render(a.model, a.outputs) }
    }

    fn logged_body<'a>(&self, body: &'a Vec<u8>) -> Option<&'a [u8]> {
        Some(body)
    }
}

fn parse_format(key: &str, value: Value) -> Result<Payload, CoreError> {
    match key {
        "dataframe_split" => {
            let Value::Object(mut split) = value else {
                return Err(bad("dataframe_split must be an object with \"columns\" and \"data\""));
            };
            for k in split.keys() {
                if !matches!(k.as_str(), "columns" | "data" | "index") {
                    return Err(bad(format!("dataframe_split has unknown field '{k}'; use columns, data, index")));
                }
            }
            let columns = match split.remove("columns") {
                None | Some(Value::Null) => None,
                Some(Value::Array(cols)) => Some(
                    cols.into_iter()
                        .map(|c| match c {
                            Value::String(s) => Ok(s),
                            other => Err(bad(format!("dataframe_split.columns must be strings, got {other}"))),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                Some(_) => return Err(bad("dataframe_split.columns must be an array of names")),
            };
            let data = match split.remove("data") {
                Some(Value::Array(rows)) => rows,
                _ => return Err(bad("dataframe_split.data must be an array of rows")),
            };
            Ok(Payload::Split { columns, data })
        }
        "dataframe_records" => match value {
            Value::Array(rows) => Ok(Payload::Records(rows)),
            _ => Err(bad("dataframe_records must be an array of objects")),
        },
        "instances" => match value {
            Value::Array(rows) => Ok(Payload::Instances(rows)),
            _ => Err(bad("instances must be an array with one entry per row")),
        },
        _ => Ok(Payload::Inputs(value)),
    }
}

/// Converts a payload into the model's input tensors, in schema order.
pub fn to_tensors(model: &LoadedModel, payload: Payload) -> Result<Vec<Tensor>, CoreError> {
    match (&model.features, &model.feature_layout) {
        (Some(features), Some(layout)) => {
            let rows = feature_rows(features, &payload)?;
            if rows.is_empty() {
                return Err(bad("the request has no rows"));
            }
            feature_tensors(model, features, layout, &rows)
        }
        _ => tensor_inputs(model, payload),
    }
}

/// Rows of feature values in manifest order, borrowed from the payload.
fn feature_rows<'a>(features: &[String], payload: &'a Payload) -> Result<Vec<Vec<&'a Value>>, CoreError> {
    let positional = |row: &'a Value, r: usize| -> Result<Vec<&'a Value>, CoreError> {
        match row {
            Value::Array(cells) if cells.len() == features.len() => Ok(cells.iter().collect()),
            Value::Array(cells) => Err(bad(format!(
                "row {r} has {} values; the model takes {} features {features:?}",
                cells.len(),
                features.len()
            ))),
            _ => Err(bad(format!("row {r} must be an array of {} values", features.len()))),
        }
    };
    let record = |row: &'a Value, r: usize| -> Result<Vec<&'a Value>, CoreError> {
        let Value::Object(obj) = row else {
            return Err(bad(format!("row {r} must be an object of feature values")));
        };
        check_keys(obj.keys(), features)?;
        features.iter().map(|f| obj.get(f).ok_or_else(|| bad(format!("missing feature '{f}' in row {r}")))).collect()
    };
    match payload {
        Payload::Split { columns: None, data } => data.iter().enumerate().map(|(r, row)| positional(row, r)).collect(),
        Payload::Split { columns: Some(columns), data } => {
            check_keys(columns.iter(), features)?;
            if let Some((i, c)) = columns.iter().enumerate().find(|(i, c)| columns[..*i].contains(c)) {
                return Err(bad(format!("column '{c}' appears twice in dataframe_split.columns (position {i})")));
            }
            let index: Vec<usize> = features
                .iter()
                .map(|f| {
                    columns
                        .iter()
                        .position(|c| c == f)
                        .ok_or_else(|| bad(format!("missing feature '{f}' in dataframe_split.columns")))
                })
                .collect::<Result<_, _>>()?;
            data.iter()
                .enumerate()
                .map(|(r, row)| match row {
                    Value::Array(cells) if cells.len() == columns.len() => {
                        Ok(index.iter().map(|&i| &cells[i]).collect())
                    }
                    _ => Err(bad(format!(
                        "row {r} of dataframe_split.data must be an array of {} values",
                        columns.len()
                    ))),
                })
                .collect()
        }
        Payload::Records(rows) => rows.iter().enumerate().map(|(r, row)| record(row, r)).collect(),
        Payload::Instances(rows) => rows
            .iter()
            .enumerate()
            .map(|(r, row)| if row.is_object() { record(row, r) } else { positional(row, r) })
            .collect(),
        Payload::Inputs(Value::Object(cols)) => {
            check_keys(cols.keys(), features)?;
            let columns: Vec<&Vec<Value>> = features
                .iter()
                .map(|f| match cols.get(f) {
                    Some(Value::Array(v)) => Ok(v),
                    Some(_) => Err(bad(format!("inputs.{f} must be an array with one value per row"))),
                    None => Err(bad(format!("missing feature '{f}' in inputs"))),
                })
                .collect::<Result<_, _>>()?;
            let n = columns.first().map(|c| c.len()).unwrap_or(0);
            if let Some((f, c)) = features.iter().zip(&columns).find(|(_, c)| c.len() != n) {
                return Err(bad(format!("inputs.{f} has {} values but other features have {n}", c.len())));
            }
            Ok((0..n).map(|r| columns.iter().map(|c| &c[r]).collect()).collect())
        }
        Payload::Inputs(Value::Array(rows)) => rows.iter().enumerate().map(|(r, row)| positional(row, r)).collect(),
        Payload::Inputs(_) => Err(bad("inputs must be an object of feature columns or an array of rows")),
    }
}

fn check_keys<'k>(keys: impl Iterator<Item = &'k String>, features: &[String]) -> Result<(), CoreError> {
    for k in keys {
        if !features.contains(k) {
            return Err(bad(format!("unknown feature '{k}'; the model takes {features:?}")));
        }
    }
    Ok(())
}

fn feature_tensors(
    model: &LoadedModel,
    features: &[String],
    layout: &FeatureLayout,
    rows: &[Vec<&Value>],
) -> Result<Vec<Tensor>, CoreError> {
    let schema = model.runner.schema();
    let n = rows.len();
    match layout {
        FeatureLayout::Packed { input } => {
            let spec = &schema.inputs[*input];
            let mut data = TensorData::with_capacity(spec.dtype, n * features.len());
            for (r, row) in rows.iter().enumerate() {
                for (f, cell) in features.iter().zip(row) {
                    push_leaf(&mut data, cell).map_err(|e| bad(format!("feature '{f}' in row {r}: {e}")))?;
                }
            }
            Ok(vec![Tensor::new(vec![n as i64, features.len() as i64], data)])
        }
        FeatureLayout::PerInput { inputs } => {
            let mut out: Vec<Option<Tensor>> = vec![None; schema.inputs.len()];
            for (fi, &ii) in inputs.iter().enumerate() {
                let spec = &schema.inputs[ii];
                let mut data = TensorData::with_capacity(spec.dtype, n);
                for (r, row) in rows.iter().enumerate() {
                    push_leaf(&mut data, row[fi])
                        .map_err(|e| bad(format!("feature '{}' in row {r}: {e}", features[fi])))?;
                }
                let shape = if spec.shape.len() == 2 { vec![n as i64, 1] } else { vec![n as i64] };
                out[ii] = Some(Tensor::new(shape, data));
            }
            Ok(out.into_iter().flatten().collect())
        }
    }
}

/// Raw-tensor models: `inputs` (a tensor, or an object keyed by input name) or `instances`
/// (rows, stacked along a new first dimension).
fn tensor_inputs(model: &LoadedModel, payload: Payload) -> Result<Vec<Tensor>, CoreError> {
    let schema = model.runner.schema();
    let only_input = || {
        if schema.inputs.len() == 1 {
            Ok(&schema.inputs[0])
        } else {
            Err(bad(format!(
                "model '{}' has {} inputs; key each by name: {:?}",
                model.name,
                schema.inputs.len(),
                schema.inputs.iter().map(|t| &t.name).collect::<Vec<_>>()
            )))
        }
    };
    let named = |obj: &Map<String, Value>, stack: bool| -> Result<Vec<Tensor>, CoreError> {
        let mut inputs = Vec::new();
        for (k, v) in obj {
            let spec = schema.input_index(k).map(|i| &schema.inputs[i]).ok_or_else(|| {
                bad(format!(
                    "unknown input '{k}'; inputs are {:?}",
                    schema.inputs.iter().map(|t| &t.name).collect::<Vec<_>>()
                ))
            })?;
            inputs.push(NamedTensor {
                name: k.clone(),
                tensor: nested_tensor(v, spec.dtype, stack).map_err(|e| bad(format!("input '{k}': {e}")))?,
            });
        }
        order_inputs(model, inputs)
    };
    match payload {
        Payload::Split { .. } | Payload::Records(_) => Err(bad(format!(
            "model '{}' has no named features (no `features` in its manifest); send tensors as `inputs` or `instances`",
            model.name
        ))),
        Payload::Inputs(Value::Object(obj)) => named(&obj, false),
        Payload::Inputs(v) => {
            let spec = only_input()?;
            let t = nested_tensor(&v, spec.dtype, false).map_err(|e| bad(format!("inputs: {e}")))?;
            order_inputs(model, vec![NamedTensor { name: spec.name.clone(), tensor: t }])
        }
        Payload::Instances(rows) => {
            if rows.is_empty() {
                return Err(bad("instances is empty"));
            }
            if rows.iter().all(Value::is_object) {
                // columnar per input: {"a": row_a, "b": row_b} per instance
                let mut cols: Map<String, Value> = Map::new();
                for row in &rows {
                    if let Value::Object(obj) = row {
                        for (k, v) in obj {
                            match cols.entry(k.clone()).or_insert_with(|| Value::Array(Vec::new())) {
                                Value::Array(a) => a.push(v.clone()),
                                _ => return Err(bad("internal: column is not an array")),
                            }
                        }
                    }
                }
                named(&cols, true)
            } else {
                let spec = only_input()?;
                let t =
                    nested_tensor(&Value::Array(rows), spec.dtype, true).map_err(|e| bad(format!("instances: {e}")))?;
                order_inputs(model, vec![NamedTensor { name: spec.name.clone(), tensor: t }])
            }
        }
    }
}

/// Renders `{"predictions": [...]}` from the model's outputs (schema order).
pub fn render(model: &LoadedModel, outputs: &[Tensor]) -> Result<Vec<u8>, CoreError> {
    let mut w = JsonWriter(Vec::with_capacity(256));
    w.raw("{\"predictions\":[");
    match &model.prediction {
        PredictionLayout::Classification { label, probabilities } => {
            let labels = label.map(|i| &outputs[i]);
            let probs = probabilities.map(|i| &outputs[i]);
            let n = labels.or(probs).map(Tensor::rows).unwrap_or(0);
            let classes = model.manifest.class_labels.as_deref();
            for r in 0..n {
                if r > 0 {
                    w.raw(",");
                }
                w.raw("{\"label\":");
                match (labels, probs) {
                    (Some(l), _) => w.class_value(&l.data, r, classes),
                    (None, Some(p)) => {
                        let c = argmax(p, r);
                        w.class_index(c, classes);
                    }
                    (None, None) => w.raw("null"),
                }
                if let Some(p) = probs {
                    w.raw(",\"probabilities\":{");
                    let width = p.data.len().checked_div(n).unwrap_or(0);
                    for c in 0..width {
                        if c > 0 {
                            w.raw(",");
                        }
                        match classes.and_then(|l| l.get(c)) {
                            Some(name) => w.string(name),
                            None => w.string(&c.to_string()),
                        }
                        w.raw(":");
                        w.element(&p.data, r * width + c);
                    }
                    w.raw("}");
                }
                w.raw("}");
            }
        }
        PredictionLayout::Regression { value } => {
            let t = &outputs[*value];
            let n = t.rows();
            let width = t.data.len().checked_div(n).unwrap_or(0);
            for r in 0..n {
                if r > 0 {
                    w.raw(",");
                }
                if width == 1 {
                    w.element(&t.data, r);
                } else {
                    w.nested(&t.data, &t.shape[1..], r * width);
                }
            }
        }
        PredictionLayout::Tensor => {
            let schema = model.runner.schema();
            let n = outputs.first().map(Tensor::rows).unwrap_or(0);
            for r in 0..n {
                if r > 0 {
                    w.raw(",");
                }
                if outputs.len() == 1 {
                    w.row(&outputs[0], r);
                } else {
                    w.raw("{");
                    for (k, (spec, t)) in schema.outputs.iter().zip(outputs).enumerate() {
                        if k > 0 {
                            w.raw(",");
                        }
                        w.string(&spec.name);
                        w.raw(":");
                        w.row(t, r);
                    }
                    w.raw("}");
                }
            }
        }
    }
    w.raw("]}");
    Ok(w.0)
}

/// Renders `{"predictions": {<output name>: [row, ...], ...}}`: every output of the model by
/// name, rows as nested lists. What `mlflow models serve` answers for an ONNX model called with
/// tensors (its pyfunc returns a dict of arrays); the endpoint option `response_format =
/// "mlflow"` selects it.
pub fn render_as_mlflow(model: &LoadedModel, outputs: &[Tensor]) -> Vec<u8> {
    let mut w = JsonWriter(Vec::with_capacity(256));
    w.raw("{\"predictions\":{");
    for (k, (spec, t)) in model.runner.schema().outputs.iter().zip(outputs).enumerate() {
        if k > 0 {
            w.raw(",");
        }
        w.string(&spec.name);
        w.raw(":[");
        for r in 0..t.rows() {
            if r > 0 {
                w.raw(",");
            }
            w.row(t, r);
        }
        w.raw("]");
    }
    w.raw("}}");
    w.0
}

fn argmax(p: &Tensor, r: usize) -> usize {
    let n = p.rows().max(1);
    let width = p.data.len() / n;
    let value = |i: usize| -> f64 { p.data.f64_at(i).unwrap_or(0.0) };
    (0..width).max_by(|&a, &b| value(r * width + a).total_cmp(&value(r * width + b)).then(b.cmp(&a))).unwrap_or(0)
}

/// Minimal JSON writer over typed tensor data (keeps f32 values in their shortest form).
struct JsonWriter(Vec<u8>);

impl JsonWriter {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn string(&mut self, s: &str) {
        let _ = serde_json::to_writer(&mut self.0, s);
    }

    fn element(&mut self, data: &TensorData, i: usize) {
        let _ = crate::with_numeric_data!(data,
            v => serde_json::to_writer(&mut self.0, &v[i]),
            h => serde_json::to_writer(&mut self.0, &h[i].to_f32()),
            b => serde_json::to_writer(&mut self.0, &String::from_utf8_lossy(&b[i])));
    }

    /// Nested arrays of `dims` starting at flat offset `start`.
    fn nested(&mut self, data: &TensorData, dims: &[i64], start: usize) {
        let Some((&d, rest)) = dims.split_first() else {
            self.element(data, start);
            return;
        };
        let stride = crate::tensor::element_count(rest).unwrap_or(1);
        self.raw("[");
        for k in 0..d.max(0) as usize {
            if k > 0 {
                self.raw(",");
            }
            self.nested(data, rest, start + k * stride);
        }
        self.raw("]");
    }

    /// Row `r` of a tensor whose first dimension is the batch.
    fn row(&mut self, t: &Tensor, r: usize) {
        let dims = t.shape.get(1..).unwrap_or(&[]);
        let width = crate::tensor::element_count(dims).unwrap_or(1);
        self.nested(&t.data, dims, r * width);
    }

    fn class_index(&mut self, c: usize, classes: Option<&[String]>) {
        match classes.and_then(|l| l.get(c)) {
            Some(name) => self.string(name),
            None => self.raw(&c.to_string()),
        }
    }

    fn class_value(&mut self, data: &TensorData, r: usize, classes: Option<&[String]>) {
        let idx = match data {
            TensorData::I64(v) => usize::try_from(v[r]).ok(),
            TensorData::I32(v) => usize::try_from(v[r]).ok(),
            _ => None,
        };
        match (idx, classes) {
            (Some(i), Some(l)) if i < l.len() => self.string(&l[i]),
            _ => self.element(data, r),
        }
    }
}
