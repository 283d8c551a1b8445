//! JSON <-> tensor conversion shared by `/predict` (MLflow formats) and V2 JSON tensors.

use serde_json::Value;

use super::{DataType, Tensor, TensorData};

/// A tensor from nested JSON arrays. With `stack`, the value is a list of rows (a scalar row
/// makes a `[N]` tensor).
pub fn nested_tensor(v: &Value, dtype: DataType, stack: bool) -> Result<Tensor, String> {
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
        return Err("expected a list of rows".into());
    }
    let count = crate::tensor::element_count(&shape).ok_or("impossible shape")?;
    let mut data = TensorData::with_capacity(dtype, count);
    flatten(v, &shape, 0, &mut data)?;
    Ok(Tensor::new(shape, data))
}

pub fn flatten(v: &Value, shape: &[i64], depth: usize, out: &mut TensorData) -> Result<(), String> {
    if depth == shape.len() {
        return push_leaf(out, v);
    }
    match v {
        Value::Array(a) if a.len() as i64 == shape[depth] => {
            a.iter().try_for_each(|x| flatten(x, shape, depth + 1, out))
        }
        Value::Array(a) => {
            Err(format!("ragged array: {} values where {} were expected at depth {depth}", a.len(), shape[depth]))
        }
        _ => Err(format!("expected an array at depth {depth}, got {v}")),
    }
}

/// Appends one JSON value converted to the tensor's type; errors say why it does not fit.
pub fn push_leaf(out: &mut TensorData, v: &Value) -> Result<(), String> {
    fn int<T: TryFrom<i64> + TryFrom<u64>>(v: &Value) -> Result<T, String> {
        let fits = |_| format!("{v} is out of range");
        match v {
            Value::Bool(b) => T::try_from(i64::from(*b)).map_err(|_| format!("{v} is out of range")),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    T::try_from(i).map_err(fits)
                } else if let Some(u) = n.as_u64() {
                    T::try_from(u).map_err(|_| format!("{v} is out of range"))
                } else {
                    match n.as_f64() {
                        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                            T::try_from(f as i64).map_err(|_| format!("{v} is out of range"))
                        }
                        _ => Err(format!("{v} is not an integer")),
                    }
                }
            }
            other => Err(format!("expected an integer, got {other}")),
        }
    }
    let float = |v: &Value| -> Result<f64, String> {
        match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| format!("{v} is not a number")),
            Value::Bool(b) => Ok(f64::from(u8::from(*b))),
            Value::Null => Ok(f64::NAN),
            Value::String(s) => Err(format!("expected a number, got the string \"{s}\"")),
            other => Err(format!("expected a number, got {other}")),
        }
    };
    match out {
        TensorData::F32(d) => {
            let x = float(v)?;
            let y = x as f32;
            if x.is_finite() && !y.is_finite() {
                return Err(format!("{v} is out of range for FP32"));
            }
            d.push(y)
        }
        TensorData::F64(d) => d.push(float(v)?),
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
            other => return Err(format!("expected true/false, got {other}")),
        }),
        TensorData::Bytes(d) => match v {
            Value::String(s) => d.push(s.as_bytes().to_vec()),
            other => return Err(format!("expected a string, got {other}")),
        },
    }
    Ok(())
}

/// Appends every leaf of `v` (flat or nested arrays, any nesting) in row-major order.
pub fn flatten_any(v: &Value, out: &mut TensorData) -> Result<(), String> {
    match v {
        Value::Array(a) => a.iter().try_for_each(|x| flatten_any(x, out)),
        leaf => push_leaf(out, leaf),
    }
}
