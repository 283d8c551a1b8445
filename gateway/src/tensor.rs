//! Typed tensors as they travel through the gateway: flat row-major data of a V2 datatype
//! ([`sluice_wire::DataType`]) and a shape.
//!
//! Every transport decodes into [`Tensor`] and every model output comes back as one, so the
//! conversions between wire formats (V2 JSON, V2 binary, gRPC raw and typed contents) live here.

pub mod json;

use sluice_wire::DataType;

/// Why a value could not become tensor data: the tensor layer's one error type, for JSON
/// values and for the V2 binary encoding. The text is what a client reads after the input's
/// name, so every message is worded for them; client values appear only in [`json::brief`] form.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("expected a list of rows")]
    NotRows,
    #[error("ragged array: an array where a value was expected at depth {depth}")]
    ArrayForValue { depth: usize },
    #[error("ragged array: {len} values where {expected} were expected at depth {depth}")]
    RaggedLength { len: usize, expected: i64, depth: usize },
    #[error("ragged array: expected an array at depth {depth}, got {got}")]
    RaggedNotArray { depth: usize, got: String },
    #[error("expected an array at depth {depth}, got {got}")]
    NotArray { depth: usize, got: String },
    #[error("{value} is out of range")]
    OutOfRange { value: String },
    #[error("{value} is out of range for FP32")]
    OutOfRangeF32 { value: String },
    /// Finite but beyond the largest FP16 (65504) or BF16 (about 3.4e38) value.
    #[error("{value} is out of range for {dtype}")]
    OutOfRangeHalf { value: String, dtype: DataType },
    #[error("{value} is not an integer")]
    NotInteger { value: String },
    #[error("{value} is not a number")]
    NotNumber { value: String },
    /// A value of the wrong JSON kind: `expected` is "an integer", "a number", "true/false" or
    /// "a string".
    #[error("expected {expected}, got {got}")]
    WrongKind { expected: &'static str, got: String },
    /// Malformed JSON tensor data (the parser's message, with its line and column).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("holds {len} bytes but shape needs {count} {dtype} elements ({})", needed_bytes(*.needed))]
    ByteLength { len: usize, count: usize, dtype: DataType, needed: Option<usize> },
    #[error("holds more than the {count} BYTES elements the shape needs")]
    TooManyElements { count: usize },
    #[error("BYTES element is cut short (needs a 4-byte length)")]
    ElementCutShort,
    #[error("BYTES element says {len} bytes but fewer follow")]
    ElementTruncated { len: usize },
    #[error("holds {found} BYTES elements but shape needs {count}")]
    ElementCount { found: usize, count: usize },
}

fn needed_bytes(needed: Option<usize>) -> String {
    match needed {
        Some(n) => format!("{n} bytes"),
        None => "more bytes than any request can carry".to_string(),
    }
}

/// Flat, row-major tensor elements.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    /// IEEE 754 half precision (V2 `FP16`).
    F16(Vec<half::f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// bfloat16 (V2 `BF16`).
    Bf16(Vec<half::bf16>),
    Bytes(Vec<Vec<u8>>),
}

/// Applies `$body` to the vector inside any [`TensorData`] variant, binding it as `$v`.
#[macro_export]
macro_rules! with_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::tensor::TensorData::Bool($v) => $body,
            $crate::tensor::TensorData::U8($v) => $body,
            $crate::tensor::TensorData::U16($v) => $body,
            $crate::tensor::TensorData::U32($v) => $body,
            $crate::tensor::TensorData::U64($v) => $body,
            $crate::tensor::TensorData::I8($v) => $body,
            $crate::tensor::TensorData::I16($v) => $body,
            $crate::tensor::TensorData::I32($v) => $body,
            $crate::tensor::TensorData::I64($v) => $body,
            $crate::tensor::TensorData::F16($v) => $body,
            $crate::tensor::TensorData::F32($v) => $body,
            $crate::tensor::TensorData::F64($v) => $body,
            $crate::tensor::TensorData::Bf16($v) => $body,
            $crate::tensor::TensorData::Bytes($v) => $body,
        }
    };
}

/// Applies `$body` to the vector inside the numeric [`TensorData`] variants with a native Rust
/// element type, binding it as `$v`; FP16 and BF16 (`half`'s types, which serde would write as
/// their bits) evaluate `$half` with the vector bound as `$h`; BYTES evaluates `$bytes` with the
/// vector bound as `$b`.
#[macro_export]
macro_rules! with_numeric_data {
    ($data:expr, $v:ident => $body:expr, $h:ident => $half:expr, $b:ident => $bytes:expr) => {
        match $data {
            $crate::tensor::TensorData::F16($h) => $half,
            $crate::tensor::TensorData::Bf16($h) => $half,
            $crate::tensor::TensorData::Bool($v) => $body,
            $crate::tensor::TensorData::U8($v) => $body,
            $crate::tensor::TensorData::U16($v) => $body,
            $crate::tensor::TensorData::U32($v) => $body,
            $crate::tensor::TensorData::U64($v) => $body,
            $crate::tensor::TensorData::I8($v) => $body,
            $crate::tensor::TensorData::I16($v) => $body,
            $crate::tensor::TensorData::I32($v) => $body,
            $crate::tensor::TensorData::I64($v) => $body,
            $crate::tensor::TensorData::F32($v) => $body,
            $crate::tensor::TensorData::F64($v) => $body,
            $crate::tensor::TensorData::Bytes($b) => $bytes,
        }
    };
}

impl TensorData {
    pub fn dtype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::U8(_) => DataType::U8,
            TensorData::U16(_) => DataType::U16,
            TensorData::U32(_) => DataType::U32,
            TensorData::U64(_) => DataType::U64,
            TensorData::I8(_) => DataType::I8,
            TensorData::I16(_) => DataType::I16,
            TensorData::I32(_) => DataType::I32,
            TensorData::I64(_) => DataType::I64,
            TensorData::F16(_) => DataType::F16,
            TensorData::Bf16(_) => DataType::Bf16,
            TensorData::F32(_) => DataType::F32,
            TensorData::F64(_) => DataType::F64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        with_tensor_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty vector of the given type with room for `cap` elements.
    pub fn with_capacity(dtype: DataType, cap: usize) -> TensorData {
        match dtype {
            DataType::Bool => TensorData::Bool(Vec::with_capacity(cap)),
            DataType::U8 => TensorData::U8(Vec::with_capacity(cap)),
            DataType::U16 => TensorData::U16(Vec::with_capacity(cap)),
            DataType::U32 => TensorData::U32(Vec::with_capacity(cap)),
            DataType::U64 => TensorData::U64(Vec::with_capacity(cap)),
            DataType::I8 => TensorData::I8(Vec::with_capacity(cap)),
            DataType::I16 => TensorData::I16(Vec::with_capacity(cap)),
            DataType::I32 => TensorData::I32(Vec::with_capacity(cap)),
            DataType::I64 => TensorData::I64(Vec::with_capacity(cap)),
            DataType::F16 => TensorData::F16(Vec::with_capacity(cap)),
            DataType::Bf16 => TensorData::Bf16(Vec::with_capacity(cap)),
            DataType::F32 => TensorData::F32(Vec::with_capacity(cap)),
            DataType::F64 => TensorData::F64(Vec::with_capacity(cap)),
            DataType::Bytes => TensorData::Bytes(Vec::with_capacity(cap)),
        }
    }

    /// Appends `other` (same type) to `self`. Returns false on a type mismatch.
    pub fn extend_from(&mut self, other: &TensorData) -> bool {
        macro_rules! ext {
            ($($var:ident),*) => {
                match (self, other) {
                    $((TensorData::$var(a), TensorData::$var(b)) => { a.extend_from_slice(b); true })*
                    _ => false,
                }
            };
        }
        ext!(Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, F32, F64, Bf16, Bytes)
    }

    /// Elements `[start, end)` as a new vector of the same type.
    pub fn slice(&self, start: usize, end: usize) -> TensorData {
        macro_rules! sl {
            ($($var:ident),*) => {
                match self { $(TensorData::$var(v) => TensorData::$var(v[start..end].to_vec()),)* }
            };
        }
        sl!(Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, F32, F64, Bf16, Bytes)
    }

    /// The V2 binary encoding: little-endian elements; BYTES as 4-byte length + bytes each.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.dtype().element_size().unwrap_or(8));
        self.write_le_bytes(&mut out);
        out
    }

    /// Appends the V2 binary encoding to `out`.
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        match self {
            TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
            TensorData::Bytes(v) => {
                for s in v {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s);
                }
            }
            TensorData::U8(v) => out.extend_from_slice(v),
            TensorData::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
            TensorData::U16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::U32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::U64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::I16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::F16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Bf16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }

    /// Element `i` as f64 (BYTES: `None`; BOOL as 0/1), for the inference table and analyses.
    pub fn f64_at(&self, i: usize) -> Option<f64> {
        Some(match self {
            TensorData::Bool(v) => f64::from(u8::from(*v.get(i)?)),
            TensorData::U8(v) => f64::from(*v.get(i)?),
            TensorData::U16(v) => f64::from(*v.get(i)?),
            TensorData::U32(v) => f64::from(*v.get(i)?),
            TensorData::U64(v) => *v.get(i)? as f64,
            TensorData::I8(v) => f64::from(*v.get(i)?),
            TensorData::I16(v) => f64::from(*v.get(i)?),
            TensorData::I32(v) => f64::from(*v.get(i)?),
            TensorData::I64(v) => *v.get(i)? as f64,
            TensorData::F16(v) => v.get(i)?.to_f64(),
            TensorData::F32(v) => f64::from(*v.get(i)?),
            TensorData::F64(v) => *v.get(i)?,
            TensorData::Bf16(v) => v.get(i)?.to_f64(),
            TensorData::Bytes(_) => return None,
        })
    }

    /// Decodes the V2 binary encoding of `count` elements (`None`: as many as the bytes hold,
    /// BYTES only). Errors say what is wrong with the bytes.
    pub fn from_le_bytes(dtype: DataType, bytes: &[u8], count: usize) -> Result<TensorData, TensorError> {
        if let Some(size) = dtype.element_size()
            && count.checked_mul(size) != Some(bytes.len())
        {
            return Err(TensorError::ByteLength { len: bytes.len(), count, dtype, needed: count.checked_mul(size) });
        }
        macro_rules! num {
            ($var:ident, $t:ty, $n:expr) => {
                TensorData::$var(
                    bytes
                        .chunks_exact($n)
                        .map(|c| {
                            let mut a = [0u8; $n];
                            a.copy_from_slice(c);
                            <$t>::from_le_bytes(a)
                        })
                        .collect(),
                )
            };
        }
        Ok(match dtype {
            DataType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
            DataType::U8 => TensorData::U8(bytes.to_vec()),
            DataType::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
            DataType::U16 => num!(U16, u16, 2),
            DataType::U32 => num!(U32, u32, 4),
            DataType::U64 => num!(U64, u64, 8),
            DataType::I16 => num!(I16, i16, 2),
            DataType::I32 => num!(I32, i32, 4),
            DataType::I64 => num!(I64, i64, 8),
            DataType::F32 => num!(F32, f32, 4),
            DataType::F64 => num!(F64, f64, 8),
            DataType::F16 => num!(F16, half::f16, 2),
            DataType::Bf16 => num!(Bf16, half::bf16, 2),
            DataType::Bytes => {
                // Every element takes at least its 4-byte length: the bytes present bound the
                // count, whatever the shape claims.
                let mut items = Vec::with_capacity(reserve(count, bytes.len(), 4));
                let mut rest = bytes;
                while !rest.is_empty() {
                    if items.len() == count {
                        return Err(TensorError::TooManyElements { count });
                    }
                    if rest.len() < 4 {
                        return Err(TensorError::ElementCutShort);
                    }
                    let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    if rest.len() < 4 + n {
                        return Err(TensorError::ElementTruncated { len: n });
                    }
                    items.push(rest[4..4 + n].to_vec());
                    rest = &rest[4 + n..];
                }
                if items.len() != count {
                    return Err(TensorError::ElementCount { found: items.len(), count });
                }
                TensorData::Bytes(items)
            }
        })
    }
}

/// A named tensor: shape plus flat row-major data.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<i64>,
    pub data: TensorData,
}

impl Tensor {
    pub fn new(shape: Vec<i64>, data: TensorData) -> Tensor {
        Tensor { shape, data }
    }

    pub fn dtype(&self) -> DataType {
        self.data.dtype()
    }

    /// Size of the first (batch) dimension; 1 for scalars.
    pub fn rows(&self) -> usize {
        self.shape.first().map(|&d| d.max(0) as usize).unwrap_or(1)
    }
}

/// Room to reserve for `claimed` elements that arrive encoded in `available` bytes, at least
/// `min_encoded` bytes each. Every decoder sizes its allocations through this, so a number a
/// client wrote (a shape, a count) never reserves more than the request's own bytes can fill.
pub fn reserve(claimed: usize, available: usize, min_encoded: usize) -> usize {
    claimed.min(available / min_encoded.max(1))
}

/// Number of elements a shape holds, or `None` when a dimension is negative or it overflows.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_round_trip_every_type() {
        let cases = vec![
            TensorData::Bool(vec![true, false]),
            TensorData::U8(vec![1, 255]),
            TensorData::U16(vec![1, 65535]),
            TensorData::U32(vec![7, u32::MAX]),
            TensorData::U64(vec![7, u64::MAX]),
            TensorData::I8(vec![-1, 127]),
            TensorData::I16(vec![-300, 300]),
            TensorData::I32(vec![-70000, 70000]),
            TensorData::I64(vec![i64::MIN, 3]),
            TensorData::F32(vec![1.5, -0.25]),
            TensorData::F64(vec![1e300, -2.5]),
            TensorData::F16(vec![half::f16::from_f32(1.5), half::f16::from_f32(-65504.0)]),
            TensorData::Bf16(vec![half::bf16::from_f32(1.5), half::bf16::from_f32(-3.0e38)]),
            TensorData::Bytes(vec![b"ab".to_vec(), Vec::new()]),
        ];
        for data in cases {
            let bytes = data.to_le_bytes();
            let back = TensorData::from_le_bytes(data.dtype(), &bytes, 2).unwrap();
            assert_eq!(back, data);
            assert_eq!(DataType::from_v2_name(data.dtype().v2_name()), Some(data.dtype()));
        }
    }

    #[test]
    fn half_floats_are_their_little_endian_bits() {
        // 1.0 is 0x3C00 in FP16 and 0x3F80 in BF16
        let f = TensorData::F16(vec![half::f16::ONE]);
        assert_eq!(f.to_le_bytes(), [0x00, 0x3C]);
        let b = TensorData::Bf16(vec![half::bf16::ONE]);
        assert_eq!(b.to_le_bytes(), [0x80, 0x3F]);
        assert_eq!((f.f64_at(0), b.f64_at(0), f.f64_at(1)), (Some(1.0), Some(1.0), None));
        let err = TensorData::from_le_bytes(DataType::F16, &[0u8; 3], 2).unwrap_err().to_string();
        assert_eq!(err, "holds 3 bytes but shape needs 2 FP16 elements (4 bytes)");
    }

    #[test]
    fn binary_size_mismatch_is_an_error() {
        let err = TensorData::from_le_bytes(DataType::F32, &[0u8; 7], 2).unwrap_err().to_string();
        assert_eq!(err, "holds 7 bytes but shape needs 2 FP32 elements (8 bytes)");
        assert!(TensorData::from_le_bytes(DataType::Bytes, &[5, 0, 0, 0, 1], 1).is_err());
    }

    #[test]
    fn claimed_counts_never_size_allocations() {
        // A shape of 2^43 BYTES elements over a 9-byte payload: an error, not a 2^43 reservation.
        let err = TensorData::from_le_bytes(DataType::Bytes, &[1, 0, 0, 0, 7, 1, 0, 0, 0], 8_796_093_022_208);
        assert!(err.is_err());
        // count * size overflowing usize is a size mismatch, not a wrap or a panic.
        let err = TensorData::from_le_bytes(DataType::F64, &[0u8; 8], usize::MAX / 4).unwrap_err().to_string();
        assert!(err.contains("more bytes than any request can carry"), "{err}");
        // More BYTES elements than the shape says.
        assert!(TensorData::from_le_bytes(DataType::Bytes, &[0, 0, 0, 0, 0, 0, 0, 0], 1).is_err());
        assert_eq!(reserve(usize::MAX, 100, 4), 25);
        assert_eq!(reserve(3, 100, 4), 3);
        assert_eq!(reserve(3, 100, 0), 3);
    }

    #[test]
    fn element_count_rejects_negative_and_overflow() {
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[-1, 3]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }
}
