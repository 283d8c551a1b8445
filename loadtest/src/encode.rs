//! Turns rows into a request for each target: an MLflow `/predict` body, a V2 JSON body, a V2
//! body with the binary tensor extension, or a gRPC `ModelInferRequest` with raw contents.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use sluice_wire::{DataType, pb};

use crate::cli::{PredictFormat, Target};
use crate::schema::InputSpec;

/// A request ready to send.
#[derive(Debug, Clone)]
pub enum Prepared {
    Http(HttpBody),
    Grpc(pb::ModelInferRequest),
}

/// An HTTP request body and the headers that describe it.
#[derive(Debug, Clone)]
pub struct HttpBody {
    pub body: Bytes,
    pub content_type: &'static str,
    /// `Inference-Header-Content-Length`: the length of the JSON header (binary tensor extension).
    pub inference_header_len: Option<usize>,
}

impl HttpBody {
    /// A JSON body.
    pub fn json(body: Vec<u8>) -> HttpBody {
        HttpBody { body: Bytes::from(body), content_type: "application/json", inference_header_len: None }
    }
}

/// Builds requests of one target from rows.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub target: Target,
    /// Model inputs (V2 and gRPC targets; empty for `/predict`).
    pub inputs: Vec<InputSpec>,
    /// Column names for `dataframe_split`.
    pub columns: Option<Vec<String>>,
    pub predict_format: PredictFormat,
    pub model: String,
    pub version: Option<String>,
}

impl Encoder {
    /// The request for `rows` (every row as wide as the inputs, checked at setup).
    pub fn encode(&self, rows: &[Vec<f64>]) -> Prepared {
        match self.target {
            Target::Predict => Prepared::Http(HttpBody::json(self.predict_body(rows))),
            Target::V2Json => Prepared::Http(HttpBody::json(self.v2_json_body(rows))),
            Target::V2Binary => Prepared::Http(self.v2_binary_body(rows)),
            Target::Grpc => Prepared::Grpc(self.grpc_request(rows)),
        }
    }

    fn predict_body(&self, rows: &[Vec<f64>]) -> Vec<u8> {
        let data: Vec<Value> = rows.iter().map(|r| Value::Array(r.iter().map(|&x| json_f64(x)).collect())).collect();
        let body = match (self.predict_format, &self.columns) {
            (PredictFormat::Instances, _) => json!({ "instances": data }),
            (PredictFormat::DataframeSplit, Some(columns)) => {
                json!({ "dataframe_split": { "columns": columns, "data": data } })
            }
            (PredictFormat::DataframeSplit, None) => json!({ "dataframe_split": { "data": data } }),
        };
        body.to_string().into_bytes()
    }

    /// Each input's values over all rows, in row-major order.
    fn columns_of<'a>(&'a self, rows: &'a [Vec<f64>]) -> impl Iterator<Item = (&'a InputSpec, Vec<f64>)> + 'a {
        let mut offset = 0;
        self.inputs.iter().map(move |spec| {
            let w = spec.row_width();
            let values = rows.iter().flat_map(|r| r.iter().skip(offset).take(w).copied()).collect();
            offset += w;
            (spec, values)
        })
    }

    fn v2_json_body(&self, rows: &[Vec<f64>]) -> Vec<u8> {
        let inputs: Vec<V2Input<'_>> = self
            .columns_of(rows)
            .map(|(spec, values)| V2Input {
                name: &spec.name,
                shape: spec.request_shape(rows.len()),
                datatype: spec.datatype.v2_name(),
                parameters: None,
                data: Some(typed(spec.datatype, &values)),
            })
            .collect();
        serde_json::to_vec(&V2Request { inputs, parameters: None }).unwrap_or_default()
    }

    /// What Triton's clients send: a JSON header with `binary_data_size` per input and
    /// `binary_data_output`, then the raw little-endian tensors in input order.
    fn v2_binary_body(&self, rows: &[Vec<f64>]) -> HttpBody {
        let mut raw = Vec::new();
        let mut inputs = Vec::new();
        for (spec, values) in self.columns_of(rows) {
            let bytes = le_bytes(spec.datatype, &values);
            inputs.push(V2Input {
                name: &spec.name,
                shape: spec.request_shape(rows.len()),
                datatype: spec.datatype.v2_name(),
                parameters: Some(json!({ "binary_data_size": bytes.len() })),
                data: None,
            });
            raw.extend_from_slice(&bytes);
        }
        let request = V2Request { inputs, parameters: Some(json!({ "binary_data_output": true })) };
        let mut body = serde_json::to_vec(&request).unwrap_or_default();
        let header_len = body.len();
        body.extend_from_slice(&raw);
        HttpBody {
            body: Bytes::from(body),
            content_type: "application/octet-stream",
            inference_header_len: Some(header_len),
        }
    }

    fn grpc_request(&self, rows: &[Vec<f64>]) -> pb::ModelInferRequest {
        let mut inputs = Vec::new();
        let mut raw = Vec::new();
        for (spec, values) in self.columns_of(rows) {
            inputs.push(pb::model_infer_request::InferInputTensor {
                name: spec.name.clone(),
                datatype: spec.datatype.v2_name().to_string(),
                shape: spec.request_shape(rows.len()),
                parameters: HashMap::new(),
                contents: None,
            });
            raw.push(le_bytes(spec.datatype, &values));
        }
        pb::ModelInferRequest {
            model_name: self.model.clone(),
            model_version: self.version.clone().unwrap_or_default(),
            id: String::new(),
            parameters: HashMap::new(),
            inputs,
            outputs: Vec::new(),
            raw_input_contents: raw,
        }
    }
}

/// A float as JSON (NaN and infinities become null, which Sluice reads as NaN).
fn json_f64(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn round_to(x: f64, lo: f64, hi: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.round().clamp(lo, hi) }
}

/// A V2 REST inference request (the fields the load tester sends).
#[derive(Debug, Serialize)]
struct V2Request<'a> {
    inputs: Vec<V2Input<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Debug, Serialize)]
struct V2Input<'a> {
    name: &'a str,
    shape: Vec<i64>,
    datatype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Typed>,
}

/// Flat tensor data in its JSON form; FP32 is written as the shortest f32 text ("0.1", not
/// "0.10000000149011612"), NaN as null.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Typed {
    Bool(Vec<bool>),
    Unsigned(Vec<u64>),
    Signed(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<String>),
}

/// Integers are rounded (unsigned: of |x|) and clamped to the type; BOOL is x > 0; BYTES is the
/// number written out.
fn typed(dtype: DataType, values: &[f64]) -> Typed {
    let v = values.iter().copied();
    match dtype {
        DataType::Bool => Typed::Bool(v.map(|x| x > 0.0).collect()),
        DataType::U8 | DataType::U16 | DataType::U32 | DataType::U64 => {
            Typed::Unsigned(v.map(|x| as_u64(dtype, x)).collect())
        }
        DataType::I8 | DataType::I16 | DataType::I32 | DataType::I64 => {
            Typed::Signed(v.map(|x| as_i64(dtype, x)).collect())
        }
        DataType::F32 => Typed::F32(v.map(|x| x as f32).collect()),
        DataType::F64 => Typed::F64(v.collect()),
        // the half value the server will hold, written as its (exact) f32
        DataType::F16 => Typed::F32(v.map(|x| half::f16::from_f64(x).to_f32()).collect()),
        DataType::Bf16 => Typed::F32(v.map(|x| half::bf16::from_f64(x).to_f32()).collect()),
        DataType::Bytes => Typed::Bytes(v.map(|x| x.to_string()).collect()),
    }
}

fn as_u64(dtype: DataType, x: f64) -> u64 {
    let hi = match dtype {
        DataType::U8 => f64::from(u8::MAX),
        DataType::U16 => f64::from(u16::MAX),
        DataType::U32 => f64::from(u32::MAX),
        _ => u64::MAX as f64,
    };
    round_to(x.abs(), 0.0, hi) as u64
}

fn as_i64(dtype: DataType, x: f64) -> i64 {
    let (lo, hi) = match dtype {
        DataType::I8 => (f64::from(i8::MIN), f64::from(i8::MAX)),
        DataType::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
        DataType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        _ => (i64::MIN as f64, i64::MAX as f64),
    };
    round_to(x, lo, hi) as i64
}

/// Raw little-endian bytes of a tensor, as the binary extension and `raw_input_contents` carry
/// them (BYTES: each element as a 4-byte little-endian length and its bytes).
pub fn le_bytes(dtype: DataType, values: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.element_size().unwrap_or(8));
    for &x in values {
        match dtype {
            DataType::Bool => out.push(u8::from(x > 0.0)),
            DataType::U8 => out.push(as_u64(dtype, x) as u8),
            DataType::U16 => out.extend_from_slice(&(as_u64(dtype, x) as u16).to_le_bytes()),
            DataType::U32 => out.extend_from_slice(&(as_u64(dtype, x) as u32).to_le_bytes()),
            DataType::U64 => out.extend_from_slice(&as_u64(dtype, x).to_le_bytes()),
            DataType::I8 => out.extend_from_slice(&(as_i64(dtype, x) as i8).to_le_bytes()),
            DataType::I16 => out.extend_from_slice(&(as_i64(dtype, x) as i16).to_le_bytes()),
            DataType::I32 => out.extend_from_slice(&(as_i64(dtype, x) as i32).to_le_bytes()),
            DataType::I64 => out.extend_from_slice(&as_i64(dtype, x).to_le_bytes()),
            DataType::F32 => out.extend_from_slice(&(x as f32).to_le_bytes()),
            DataType::F64 => out.extend_from_slice(&x.to_le_bytes()),
            DataType::F16 => out.extend_from_slice(&half::f16::from_f64(x).to_le_bytes()),
            DataType::Bf16 => out.extend_from_slice(&half::bf16::from_f64(x).to_le_bytes()),
            DataType::Bytes => {
                let s = x.to_string();
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_per_datatype() {
        assert_eq!(le_bytes(DataType::F32, &[1.5]), 1.5f32.to_le_bytes());
        assert_eq!(le_bytes(DataType::I8, &[-300.0, 2.4]), [i8::MIN as u8, 2]);
        assert_eq!(le_bytes(DataType::U16, &[-2.6]), 3u16.to_le_bytes(), "unsigned: |x| rounded");
        assert_eq!(le_bytes(DataType::Bool, &[0.3, -0.3]), [1, 0]);
        assert_eq!(le_bytes(DataType::Bytes, &[2.5]), [3, 0, 0, 0, b'2', b'.', b'5']);
        assert_eq!(le_bytes(DataType::I64, &[f64::NAN]), 0i64.to_le_bytes());
        // FP16 1.0 = 0x3C00, BF16 1.0 = 0x3F80, little-endian
        assert_eq!(le_bytes(DataType::F16, &[1.0, 0.1]), [0x00, 0x3C, 0x66, 0x2E]);
        assert_eq!(le_bytes(DataType::Bf16, &[1.0]), [0x80, 0x3F]);
        let json = serde_json::to_string(&typed(DataType::F16, &[0.1])).unwrap();
        assert_eq!(json, "[0.099975586]", "the FP16 value the server holds, as f32 text");
    }

    fn encoder(format: PredictFormat, columns: Option<Vec<String>>) -> Encoder {
        Encoder {
            target: Target::Predict,
            inputs: vec![],
            columns,
            predict_format: format,
            model: String::new(),
            version: None,
        }
    }

    fn body(p: Prepared) -> serde_json::Value {
        match p {
            Prepared::Http(h) => serde_json::from_slice(&h.body).unwrap(),
            Prepared::Grpc(_) => panic!("predict is HTTP"),
        }
    }

    #[test]
    fn predict_bodies() {
        let rows = vec![vec![1.0, f64::NAN]];
        let cols = Some(vec!["a".to_string(), "b".to_string()]);
        assert_eq!(
            body(encoder(PredictFormat::DataframeSplit, cols).encode(&rows)),
            json!({"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, null]]}})
        );
        assert_eq!(
            body(encoder(PredictFormat::DataframeSplit, None).encode(&rows)),
            json!({"dataframe_split": {"data": [[1.0, null]]}})
        );
        assert_eq!(body(encoder(PredictFormat::Instances, None).encode(&rows)), json!({"instances": [[1.0, null]]}));
    }

    #[test]
    fn fp32_json_is_short() {
        let spec = InputSpec::new("x", "FP32", vec![-1, 1]).unwrap();
        let e = Encoder { target: Target::V2Json, inputs: vec![spec], ..encoder(PredictFormat::DataframeSplit, None) };
        let Prepared::Http(h) = e.encode(&[vec![0.1]]) else { panic!("V2 JSON is HTTP") };
        let text = String::from_utf8(h.body.to_vec()).unwrap();
        assert_eq!(text, r#"{"inputs":[{"name":"x","shape":[1,1],"datatype":"FP32","data":[0.1]}]}"#);
    }
}
