//! The KServe V2 tensor datatypes that Sluice serves and its load tester sends: one table of the
//! V2 names, the Triton model-config names and the element sizes of the binary encodings.
//!
//! FP16 (IEEE half) and BF16 (bfloat16) are 2-byte floats: JSON carries them as numbers, the
//! binary encodings as their little-endian bits; gRPC has no typed contents field for them, so
//! they travel in `raw_input_contents` / `raw_output_contents` only.

use std::fmt;

/// A KServe V2 tensor datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
    Bf16,
    Bytes,
}

impl DataType {
    /// Every datatype, in the order of the V2 specification's table.
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::U8,
        DataType::U16,
        DataType::U32,
        DataType::U64,
        DataType::I8,
        DataType::I16,
        DataType::I32,
        DataType::I64,
        DataType::F16,
        DataType::F32,
        DataType::F64,
        DataType::Bf16,
        DataType::Bytes,
    ];

    /// The V2 protocol name (`FP32`, `INT64`, `BYTES`...).
    pub fn v2_name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::U16 => "UINT16",
            DataType::U32 => "UINT32",
            DataType::U64 => "UINT64",
            DataType::I8 => "INT8",
            DataType::I16 => "INT16",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F16 => "FP16",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::Bf16 => "BF16",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses a V2 datatype name; `None` for unknown names.
    pub fn from_v2_name(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.v2_name() == name)
    }

    /// The Triton model-config name (`TYPE_FP32`...; BYTES is `TYPE_STRING`), as
    /// [`crate::pb::DataType`] spells it.
    pub fn triton_config_name(self) -> &'static str {
        match self {
            DataType::Bool => "TYPE_BOOL",
            DataType::U8 => "TYPE_UINT8",
            DataType::U16 => "TYPE_UINT16",
            DataType::U32 => "TYPE_UINT32",
            DataType::U64 => "TYPE_UINT64",
            DataType::I8 => "TYPE_INT8",
            DataType::I16 => "TYPE_INT16",
            DataType::I32 => "TYPE_INT32",
            DataType::I64 => "TYPE_INT64",
            DataType::F16 => "TYPE_FP16",
            DataType::F32 => "TYPE_FP32",
            DataType::F64 => "TYPE_FP64",
            DataType::Bf16 => "TYPE_BF16",
            DataType::Bytes => "TYPE_STRING",
        }
    }

    /// Whether elements are floating point (FP16, FP32, FP64, BF16).
    pub fn is_float(self) -> bool {
        matches!(self, DataType::F16 | DataType::F32 | DataType::F64 | DataType::Bf16)
    }

    /// Bytes per element in the V2 binary encoding and gRPC raw contents; `None` for BYTES, whose
    /// elements are each a 4-byte little-endian length followed by that many bytes.
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 | DataType::F16 | DataType::Bf16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
            DataType::Bytes => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v2_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::from_v2_name(d.v2_name()), Some(d));
            assert_eq!(d.to_string(), d.v2_name());
        }
        for unsupported in ["fp16", "FP8", "fp32", "", "STRING"] {
            assert_eq!(DataType::from_v2_name(unsupported), None, "{unsupported}");
        }
    }

    #[test]
    fn triton_names_are_the_protos() {
        for d in DataType::ALL {
            let name = d.triton_config_name();
            assert!(crate::pb::DataType::from_str_name(name).is_some(), "{name} is not in inference.proto");
        }
    }

    #[test]
    fn element_sizes() {
        let sizes: Vec<Option<usize>> = DataType::ALL.iter().map(|d| d.element_size()).collect();
        let expected = [1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 8, 2].map(Some);
        assert_eq!(sizes[..13], expected);
        assert_eq!(DataType::Bytes.element_size(), None);
    }
}
