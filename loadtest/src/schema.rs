//! The model inputs that requests are built for, read from the server's KServe V2 metadata
//! (`GET {url}/v2/models/{model}` over HTTP, `ModelMetadata` over gRPC).
//!
//! A request of N rows fills every input's first (batch) dimension with N. A "row" is the
//! concatenation, in input order, of one batch entry of every input: `[-1, 8]` contributes 8
//! values, `[-1]` and `[-1, 1]` one each. Sluice exposes no feature names in its metadata, so
//! column names come from `--columns` or the payload file.

use serde::Deserialize;
use sluice_wire::DataType;

use crate::error::Error;

/// One model input as the metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub datatype: DataType,
    /// As in the metadata; -1 marks a dynamic dimension (only the first may be dynamic).
    pub shape: Vec<i64>,
}

impl InputSpec {
    /// Builds a spec, checking that only the first dimension is dynamic.
    pub fn new(name: &str, datatype: &str, shape: Vec<i64>) -> Result<InputSpec, Error> {
        let dtype = DataType::from_v2_name(datatype).ok_or_else(|| {
            Error::usage(format!("input '{name}' has datatype {datatype}, which sluice-loadtest cannot generate"))
        })?;
        if shape.is_empty() {
            return Err(Error::usage(format!("input '{name}' is a scalar (shape []); it has no batch dimension")));
        }
        if shape.iter().skip(1).any(|&d| d < 1) {
            return Err(Error::usage(format!(
                "input '{name}' has shape {shape:?}: only the first (batch) dimension may be dynamic"
            )));
        }
        Ok(InputSpec { name: name.to_string(), datatype: dtype, shape })
    }

    /// Values per row: the product of the non-batch dimensions.
    pub fn row_width(&self) -> usize {
        self.shape.iter().skip(1).map(|&d| d.max(1) as usize).product()
    }

    /// The shape of a request of `rows` rows.
    pub fn request_shape(&self, rows: usize) -> Vec<i64> {
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = rows as i64;
        }
        shape
    }

    /// `Err` when the batch dimension is fixed and differs from `rows`.
    pub fn check_rows(&self, rows: usize) -> Result<(), Error> {
        match self.shape.first() {
            Some(&d) if d >= 0 && d as usize != rows => Err(Error::usage(format!(
                "input '{}' has a fixed first dimension {d} (shape {:?}); use --rows {d}",
                self.name, self.shape
            ))),
            _ => Ok(()),
        }
    }
}

/// Total row width of a set of inputs.
pub fn row_width(inputs: &[InputSpec]) -> usize {
    inputs.iter().map(InputSpec::row_width).sum()
}

#[derive(Debug, Deserialize)]
struct MetadataJson {
    #[serde(default)]
    inputs: Vec<TensorJson>,
}

#[derive(Debug, Deserialize)]
struct TensorJson {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

/// Parses a V2 REST model metadata answer.
pub fn parse_metadata(value: serde_json::Value) -> Result<Vec<InputSpec>, Error> {
    let meta: MetadataJson = serde_json::from_value(value)
        .map_err(|e| Error::connect(format!("model metadata is not KServe V2 metadata: {e}")))?;
    to_specs(meta.inputs.into_iter().map(|t| (t.name, t.datatype, t.shape)))
}

/// Builds specs from (name, datatype, shape) triples, refusing an input-less model.
pub fn to_specs(inputs: impl Iterator<Item = (String, String, Vec<i64>)>) -> Result<Vec<InputSpec>, Error> {
    let specs = inputs.map(|(n, d, s)| InputSpec::new(&n, &d, s)).collect::<Result<Vec<_>, _>>()?;
    if specs.is_empty() {
        return Err(Error::connect("model metadata lists no inputs"));
    }
    Ok(specs)
}

/// The V2 REST path of a model (and version): `/v2/models/{m}[/versions/{v}]`.
pub fn model_path(model: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("/v2/models/{model}/versions/{v}"),
        None => format!("/v2/models/{model}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let x = InputSpec::new("x", "FP32", vec![-1, 2, 3]).unwrap();
        assert_eq!(x.row_width(), 6);
        assert_eq!(x.request_shape(5), [5, 2, 3]);
        assert!(x.check_rows(7).is_ok());
        let v = InputSpec::new("v", "INT64", vec![-1]).unwrap();
        assert_eq!((v.row_width(), v.request_shape(2)), (1, vec![2]));
        assert_eq!(row_width(&[x, v]), 7);
        let fixed = InputSpec::new("f", "FP64", vec![1, 8]).unwrap();
        assert!(fixed.check_rows(1).is_ok() && fixed.check_rows(2).is_err());
        assert!(InputSpec::new("d", "FP32", vec![-1, -1]).is_err(), "only the batch dim may be dynamic");
        assert_eq!(InputSpec::new("h", "FP16", vec![-1, 2]).unwrap().datatype, DataType::F16);
        assert!(InputSpec::new("h", "FP8", vec![-1, 2]).is_err());
        assert!(InputSpec::new("s", "FP32", vec![]).is_err());
        assert!(parse_metadata(serde_json::json!({"name": "m", "inputs": []})).is_err());
        let specs =
            parse_metadata(serde_json::json!({"inputs": [{"name": "i", "datatype": "BOOL", "shape": [-1, 3]}]}));
        assert_eq!(specs.unwrap()[0].datatype, DataType::Bool);
        assert_eq!(model_path("m", Some("2")), "/v2/models/m/versions/2");
    }
}
