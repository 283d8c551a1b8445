//! JSON <-> tensor conversion shared by `/predict` (MLflow formats) and V2 JSON tensors.

use serde_json::Value;
use sluice_wire::DataType;

use super::{Tensor, TensorData, TensorError};

/// A tensor from nested JSON arrays. With `stack`, the value is a list of rows (a scalar row
/// makes a `[N]` tensor).
///
/// The shape is read from the first element at each level, then every element is checked
/// against it (a ragged array is an error naming where) before anything is allocated: the
/// allocation is the number of leaves actually present, never a product of claimed lengths.
pub fn nested_tensor(v: &Value, dtype: DataType, stack: bool) -> Result<Tensor, TensorError> {
    let mut shape = Vec::new();
    let mut probe = v;
    while let Value::Array(a) = probe {
        shape.push(a.len() as i64);
        match a.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    if stack && shape.is_empty() {
        return Err(TensorError::NotRows);
    }
    let count = check_rectangular(v, &shape, 0)?;
    let mut data = TensorData::with_capacity(dtype, count);
    flatten(v, &shape, 0, &mut data)?;
    Ok(Tensor::new(shape, data))
}

/// Checks that `v` has `shape` from `depth` down, element by element; returns its leaf count.
fn check_rectangular(v: &Value, shape: &[i64], depth: usize) -> Result<usize, TensorError> {
    if depth == shape.len() {
        return match v {
            Value::Array(_) => Err(TensorError::ArrayForValue { depth }),
            _ => Ok(1),
        };
    }
    match v {
        Value::Array(a) if a.len() as i64 == shape[depth] => {
            a.iter().try_fold(0usize, |n, x| Ok(n.saturating_add(check_rectangular(x, shape, depth + 1)?)))
        }
        Value::Array(a) => Err(TensorError::RaggedLength { len: a.len(), expected: shape[depth], depth }),
        other => Err(TensorError::RaggedNotArray { depth, got: brief(other) }),
    }
}

/// Appends the leaves of `v`, which must have `shape` from `depth` down, to `out`.
pub fn flatten(v: &Value, shape: &[i64], depth: usize, out: &mut TensorData) -> Result<(), TensorError> {
    if depth == shape.len() {
        return push_leaf(out, v);
    }
    match v {
        Value::Array(a) if a.len() as i64 == shape[depth] => {
            a.iter().try_for_each(|x| flatten(x, shape, depth + 1, out))
        }
        Value::Array(a) => Err(TensorError::RaggedLength { len: a.len(), expected: shape[depth], depth }),
        _ => Err(TensorError::NotArray { depth, got: brief(v) }),
    }
}

/// A short description of a JSON value for an error message: a client's value is never echoed
/// at length (a 16 MiB string or array would make a 16 MiB error and log line).
pub fn brief(v: &Value) -> String {
    const MAX: usize = 40;
    match v {
        Value::Array(a) => format!("an array of {} values", a.len()),
        Value::Object(o) => format!("an object with {} fields", o.len()),
        Value::String(s) if s.len() > MAX => {
            let mut end = MAX;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            format!("the string \"{}...\" ({} bytes)", &s[..end], s.len())
        }
        Value::String(s) => format!("the string \"{s}\""),
        other => other.to_string(),
    }
}

/// Appends one JSON value converted to the tensor's type; errors say why it does not fit.
pub fn push_leaf(out: &mut TensorData, v: &Value) -> Result<(), TensorError> {
    fn int<T: TryFrom<i64> + TryFrom<u64>>(v: &Value) -> Result<T, TensorError> {
        let fits = || TensorError::OutOfRange { value: brief(v) };
        match v {
            Value::Bool(b) => T::try_from(i64::from(*b)).map_err(|_| fits()),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    T::try_from(i).map_err(|_| fits())
                } else if let Some(u) = n.as_u64() {
                    T::try_from(u).map_err(|_| fits())
                } else {
                    match n.as_f64() {
                        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => T::try_from(f as i64).map_err(|_| fits()),
                        _ => Err(TensorError::NotInteger { value: brief(v) }),
                    }
                }
            }
            other => Err(TensorError::WrongKind { expected: "an integer", got: brief(other) }),
        }
    }
    let float = |v: &Value| -> Result<f64, TensorError> {
        match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| TensorError::NotNumber { value: brief(v) }),
            Value::Bool(b) => Ok(f64::from(u8::from(*b))),
            Value::Null => Ok(f64::NAN),
            other => Err(TensorError::WrongKind { expected: "a number", got: brief(other) }),
        }
    };
    match out {
        TensorData::F32(d) => {
            let x = float(v)?;
            let y = x as f32;
            if x.is_finite() && !y.is_finite() {
                return Err(TensorError::OutOfRangeF32 { value: brief(v) });
            }
            d.push(y)
        }
        TensorData::F64(d) => d.push(float(v)?),
        TensorData::F16(d) => {
            let x = float(v)?;
            let y = half::f16::from_f64(x);
            if x.is_finite() && !y.is_finite() {
                return Err(TensorError::OutOfRangeHalf { value: brief(v), dtype: DataType::F16 });
            }
            d.push(y)
        }
        TensorData::Bf16(d) => {
            let x = float(v)?;
            let y = half::bf16::from_f64(x);
            if x.is_finite() && !y.is_finite() {
                return Err(TensorError::OutOfRangeHalf { value: brief(v), dtype: DataType::Bf16 });
            }
            d.push(y)
        }
        TensorData::I64(d) => d.push(int(v)?),
        TensorData::I32(d) => d.push(int(v)?),
        TensorData::I16(d) => d.push(int(v)?),
        TensorData::I8(d) => d.push(int(v)?),
        TensorData::U64(d) => d.push(int(v)?),
        TensorData::U32(d) => d.push(int(v)?),
        TensorData::U16(d) => d.push(int(v)?),
        TensorData::U8(d) => d.push(int(v)?),
        TensorData::Bool(d) => d.push(match v {
            Value::Bool(b) => *b,
            Value::Number(n) if n.as_f64() == Some(0.0) => false,
            Value::Number(n) if n.as_f64() == Some(1.0) => true,
            other => return Err(TensorError::WrongKind { expected: "true/false", got: brief(other) }),
        }),
        TensorData::Bytes(d) => match v {
            Value::String(s) => d.push(s.as_bytes().to_vec()),
            other => return Err(TensorError::WrongKind { expected: "a string", got: brief(other) }),
        },
    }
    Ok(())
}

/// Decodes JSON tensor data (a value, or flat or nested arrays of values) straight into a
/// [`TensorData`] of `dtype`, without building a JSON tree: the memory it takes is the decoded
/// elements themselves. `claimed` (the element count the shape says) only sizes the first
/// reservation, bounded by what `json` can hold; nesting depth is bounded by serde_json's
/// recursion limit (128).
pub fn decode_data(json: &str, dtype: DataType, claimed: usize) -> Result<TensorData, TensorError> {
    // Two bytes per element at least: a digit and a separator.
    let mut data = TensorData::with_capacity(dtype, super::reserve(claimed, json.len().saturating_add(1), 2));
    let mut de = serde_json::Deserializer::from_str(json);
    serde::de::DeserializeSeed::deserialize(Leaves(&mut data), &mut de)?;
    de.end()?;
    Ok(data)
}

/// Appends the leaves of one JSON value (recursing into arrays) to a [`TensorData`].
struct Leaves<'a>(&'a mut TensorData);

impl<'de> serde::de::DeserializeSeed<'de> for Leaves<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Leaves<'_> {
    fn push<E: serde::de::Error>(self, v: Value) -> Result<(), E> {
        push_leaf(self.0, &v).map_err(E::custom)
    }
}

impl<'de> serde::de::Visitor<'de> for Leaves<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a tensor value or nested arrays of them")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Leaves(out) = self;
        while seq.next_element_seed(Leaves(&mut *out))?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<(), E> {
        self.push(Value::Bool(b))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<(), E> {
        self.push(Value::from(n))
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<(), E> {
        self.push(Value::from(n))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<(), E> {
        match serde_json::Number::from_f64(n) {
            Some(n) => self.push(Value::Number(n)),
            None => Err(E::custom(format!("{n} is not a finite number"))),
        }
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        match self.0 {
            TensorData::Bytes(d) => {
                d.push(s.as_bytes().to_vec());
                Ok(())
            }
            _ => self.push(Value::String(s.to_owned())),
        }
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.push(Value::Null)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(serde::de::Error::custom("expected a value or an array, got an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every leaf of `v` in row-major order, through a JSON tree: the reference for decode_data.
    fn flatten_any(v: &Value, out: &mut TensorData) -> Result<(), TensorError> {
        match v {
            Value::Array(a) => a.iter().try_for_each(|x| flatten_any(x, out)),
            leaf => push_leaf(out, leaf),
        }
    }

    #[test]
    fn ragged_arrays_are_refused_before_allocating() {
        // The first element claims 50,000 x 50,000 x 50,000; the rest is not there.
        let mut inner = vec![Value::from(0.0); 50_000];
        inner[0] = Value::Array(vec![Value::from(0.0); 50_000]);
        let mut outer = vec![Value::from(0.0); 50_000];
        outer[0] = Value::Array(inner);
        let err = nested_tensor(&Value::Array(outer), DataType::F32, true).unwrap_err().to_string();
        assert!(err.contains("ragged"), "{err}");
        let ok = nested_tensor(&serde_json::json!([[1, 2], [3, 4]]), DataType::F32, true).unwrap();
        assert_eq!(ok.shape, vec![2, 2]);
        let err = nested_tensor(&serde_json::json!([[1, 2], [3, [4]]]), DataType::F32, true).unwrap_err().to_string();
        assert_eq!(err, "ragged array: an array where a value was expected at depth 2");
    }

    #[test]
    fn decode_data_matches_flatten_any() {
        for (json, dtype) in [
            ("[[1, 2.5], [3, -4]]", DataType::F32),
            ("[1, 2, 3]", DataType::I64),
            ("7", DataType::I32),
            ("[[true], [false]]", DataType::Bool),
            ("[\"a\", \"\"]", DataType::Bytes),
            ("[null, 1]", DataType::F64),
        ] {
            let v: Value = serde_json::from_str(json).unwrap();
            let mut want = TensorData::with_capacity(dtype, 0);
            flatten_any(&v, &mut want).unwrap();
            // Compared as bytes: NaN (from null) is not equal to itself.
            assert_eq!(decode_data(json, dtype, 4).unwrap().to_le_bytes(), want.to_le_bytes(), "{json}");
        }
    }

    #[test]
    fn decode_data_errors_and_bounds() {
        assert!(decode_data("[1, {\"a\": 1}]", DataType::F32, 2).is_err());
        assert!(decode_data("[\"x\"]", DataType::F32, 1).is_err());
        assert!(decode_data("[1, 2] 3", DataType::F32, 2).is_err());
        assert!(decode_data("[1e400]", DataType::F64, 1).is_err());
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(decode_data(&deep, DataType::F32, 1).is_err());
        // A huge claimed count reserves only what the text can hold.
        let d = decode_data("[1, 2]", DataType::F64, usize::MAX).unwrap();
        assert_eq!(d.len(), 2);
        let long = "x".repeat(100);
        let err =
            push_leaf(&mut TensorData::with_capacity(DataType::F32, 0), &Value::String(long)).unwrap_err().to_string();
        assert!(err.len() < 100, "{err}");
    }

    #[test]
    fn json_numbers_become_half_floats_rounded_to_nearest() {
        let d = decode_data("[1, 0.1, 65504, -2.5, null]", DataType::F16, 5).unwrap();
        let TensorData::F16(v) = &d else { panic!("{d:?}") };
        assert_eq!(v[0], half::f16::ONE);
        assert_eq!(v[1], half::f16::from_f64(0.1));
        assert_eq!(v[1].to_f64(), 0.0999755859375, "the FP16 nearest to 0.1");
        assert_eq!((v[2].to_f64(), v[3].to_f64()), (65504.0, -2.5));
        assert!(v[4].is_nan());
        let err = decode_data("[70000]", DataType::F16, 1).unwrap_err().to_string();
        assert_eq!(err, "70000 is out of range for FP16 at line 1 column 6");
        let d = decode_data("[1e38, 0.1]", DataType::Bf16, 2).unwrap();
        let TensorData::Bf16(v) = &d else { panic!("{d:?}") };
        assert_eq!(v[1].to_f64(), 0.10009765625, "the BF16 nearest to 0.1");
        assert!(decode_data("[1e39]", DataType::Bf16, 1).unwrap_err().to_string().contains("out of range for BF16"));
        assert!(decode_data("[\"x\"]", DataType::F16, 1).is_err());
    }
}
