//! Input and output schemas, read from the ONNX Runtime session at load time.

use ort::value::{Outlet, TensorElementType, ValueType};
use sluice_wire::DataType;

/// One input or output tensor of a model: name, element type, shape (-1 = any size).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// True when the first dimension is dynamic, i.e. rows of several requests can be stacked.
    pub fn has_batch_dim(&self) -> bool {
        self.shape.first() == Some(&-1)
    }
}

/// Why a session's schema cannot be served; `kind` is "input" or "output".
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{kind} '{name}' has element type {ty}, which Sluice does not serve")]
    UnsupportedType { kind: &'static str, name: String, ty: String },
    #[error(
        "{kind} '{name}' is a {value_type}, not a tensor; export the model without ZipMap \
         (skl2onnx: options={{'zipmap': False}})"
    )]
    NotTensor { kind: &'static str, name: String, value_type: String },
}

/// A model's inputs and outputs, in session order.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSchema {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl ModelSchema {
    /// Reads the schema of a session's outlets; errors name the tensor and the unsupported type.
    pub fn from_outlets(inputs: &[Outlet], outputs: &[Outlet]) -> Result<ModelSchema, SchemaError> {
        let conv = |o: &Outlet, kind: &'static str| -> Result<TensorSpec, SchemaError> {
            match o.dtype() {
                ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
                    name: o.name().to_string(),
                    dtype: element_type(*ty).ok_or_else(|| SchemaError::UnsupportedType {
                        kind,
                        name: o.name().to_string(),
                        ty: format!("{ty:?}"),
                    })?,
                    shape: shape.iter().copied().collect(),
                }),
                other => {
                    Err(SchemaError::NotTensor { kind, name: o.name().to_string(), value_type: format!("{other:?}") })
                }
            }
        };
        Ok(ModelSchema {
            inputs: inputs.iter().map(|o| conv(o, "input")).collect::<Result<_, _>>()?,
            outputs: outputs.iter().map(|o| conv(o, "output")).collect::<Result<_, _>>()?,
        })
    }

    /// Whether requests can be stacked along the first dimension: every input and output has a
    /// dynamic first dimension.
    pub fn batchable(&self) -> bool {
        self.inputs.iter().chain(&self.outputs).all(TensorSpec::has_batch_dim)
    }

    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|t| t.name == name)
    }

    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|t| t.name == name)
    }
}

fn element_type(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::U8,
        TensorElementType::Uint16 => DataType::U16,
        TensorElementType::Uint32 => DataType::U32,
        TensorElementType::Uint64 => DataType::U64,
        TensorElementType::Int8 => DataType::I8,
        TensorElementType::Int16 => DataType::I16,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::Float16 => DataType::F16,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_wording() {
        let e = SchemaError::NotTensor { kind: "output", name: "probs".into(), value_type: "Map".into() };
        assert_eq!(
            e.to_string(),
            "output 'probs' is a Map, not a tensor; export the model without ZipMap (skl2onnx: options={'zipmap': False})"
        );
        let e = SchemaError::UnsupportedType { kind: "input", name: "x".into(), ty: "Complex64".into() };
        assert_eq!(e.to_string(), "input 'x' has element type Complex64, which Sluice does not serve");
    }
}
