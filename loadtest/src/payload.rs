//! Where request rows come from: a seeded standard-normal generator, rows drawn (seeded) from a
//! baseline, or the rows of a `dataframe_split` file cycled in order; and the drift shift applied
//! to one column of them.
//! A payload file that is not in `dataframe_split` form is a body sent unchanged.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::error::Error;

/// A drift injection resolved against the row layout: `x * multiply + add` on element `index`
/// of every row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    pub index: usize,
    pub add: f64,
    pub multiply: f64,
}

impl Shift {
    /// Applies the shift to one row (rows shorter than `index` are left alone).
    pub fn apply(&self, row: &mut [f64]) {
        if let Some(x) = row.get_mut(self.index) {
            *x = *x * self.multiply + self.add;
        }
    }
}

/// The rows that requests are built from.
#[derive(Debug, Clone)]
pub enum Rows {
    /// Standard normal values, element by element; request `k` draws from a generator seeded by
    /// (seed, k), so the payload of every request is reproducible whatever the timing.
    Generated { seed: u64, width: usize },
    /// Rows of a file, used in order and cycled: request `k` of `n` rows takes rows `k*n ..`.
    File { rows: Vec<Vec<f64>> },
    /// Rows drawn uniformly with replacement from a baseline; request `k` draws with a generator
    /// seeded by (seed, k), like [`Rows::Generated`].
    Sampled { seed: u64, rows: Vec<Vec<f64>> },
}

impl Rows {
    /// Values per row.
    pub fn width(&self) -> usize {
        match self {
            Rows::Generated { width, .. } => *width,
            Rows::File { rows } | Rows::Sampled { rows, .. } => rows.first().map_or(0, Vec::len),
        }
    }

    /// The `n` rows of request number `k`, with `shift` applied.
    pub fn rows_for(&self, k: u64, n: usize, shift: Option<&Shift>) -> Vec<Vec<f64>> {
        let mut out = match self {
            Rows::Generated { seed, width } => {
                let mut rng = StdRng::seed_from_u64(mix(*seed, k));
                (0..n).map(|_| (0..*width).map(|_| standard_normal(&mut rng)).collect()).collect()
            }
            Rows::File { rows } | Rows::Sampled { rows, .. } if rows.is_empty() => Vec::new(),
            Rows::Sampled { seed, rows } => {
                let mut rng = StdRng::seed_from_u64(mix(*seed, k));
                (0..n).map(|_| rows[rng.random_range(0..rows.len())].clone()).collect()
            }
            Rows::File { rows } => {
                let start = (k as usize).wrapping_mul(n);
                (0..n).filter_map(|i| rows.get(start.wrapping_add(i) % rows.len()).cloned()).collect()
            }
        };
        if let Some(s) = shift {
            out.iter_mut().for_each(|r| s.apply(r));
        }
        out
    }
}

/// SplitMix64 of (seed, k): decorrelates the per-request generator seeds.
fn mix(seed: u64, k: u64) -> u64 {
    let mut z = seed.wrapping_add(k.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One standard normal draw (Box-Muller).
pub fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// What a `--payload` file holds. A `dataframe_split` table is `{"dataframe_split": {"columns",
/// "data"}}` or a bare `{"columns": [...], "data": [[...]]}` (extra top-level keys ignored).
#[derive(Debug, Clone)]
pub enum PayloadFile {
    /// A `dataframe_split` table: rows to cycle, converted for every target.
    Rows { columns: Option<Vec<String>>, rows: Vec<Vec<f64>> },
    /// Any other JSON: a body sent as is; `rows` is how many rows it carries (for rows/s).
    Body { body: Vec<u8>, rows: usize },
}

/// Reads a payload file (see [`PayloadFile`]).
pub fn load(path: &Path) -> Result<PayloadFile, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::usage(format!("{}: not valid JSON: {e}", path.display())))?;
    parse(value, bytes).map_err(|e| Error::usage(format!("{}: {e}", path.display())))
}

/// Why a table payload (`dataframe_split`, or bare `columns` + `data`) cannot be sent as rows.
/// Values are quoted as JSON.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("column names must be strings, got {got}")]
    ColumnName { got: Value },
    #[error("columns must be an array of names, got {got}")]
    Columns { got: Value },
    #[error("data must be an array of rows")]
    NoData,
    #[error("row {row} of data is not an array")]
    RowNotArray { row: usize },
    #[error("row {row}, column {column}: {value} is not a number, bool or null")]
    Cell { row: usize, column: usize, value: Value },
    #[error("data has no rows")]
    NoRows,
    #[error("row {row} has {len} values but row 0 has {width}")]
    RowWidth { row: usize, len: usize, width: usize },
    #[error("{columns} columns but rows have {width} values")]
    ColumnCount { columns: usize, width: usize },
}

/// Classifies a parsed payload (`raw` is its text, kept for bodies sent as is).
pub fn parse(value: Value, raw: Vec<u8>) -> Result<PayloadFile, PayloadError> {
    let rows_of_arrays =
        |v: &Value| v.get("data").and_then(Value::as_array).is_some_and(|d| d.iter().all(Value::is_array));
    let split = match &value {
        Value::Object(m) if m.get("dataframe_split").is_some_and(Value::is_object) => m.get("dataframe_split"),
        // A bare table: `data` rows with `columns` (other keys, like a fixture's notes, are ignored),
        // or `data` alone.
        Value::Object(m)
            if rows_of_arrays(&value)
                && (m.get("columns").is_some_and(Value::is_array) || m.keys().all(|k| k == "data" || k == "index")) =>
        {
            Some(&value)
        }
        _ => None,
    };
    let Some(split) = split else {
        let rows = body_rows(&value);
        return Ok(PayloadFile::Body { body: raw, rows });
    };
    let columns = match split.get("columns") {
        None | Some(Value::Null) => None,
        Some(Value::Array(cols)) => Some(
            cols.iter()
                .map(|c| c.as_str().map(str::to_string).ok_or_else(|| PayloadError::ColumnName { got: c.clone() }))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(other) => return Err(PayloadError::Columns { got: other.clone() }),
    };
    let Some(Value::Array(data)) = split.get("data") else {
        return Err(PayloadError::NoData);
    };
    let mut rows = Vec::with_capacity(data.len());
    for (r, row) in data.iter().enumerate() {
        let Value::Array(cells) = row else { return Err(PayloadError::RowNotArray { row: r }) };
        let row = cells
            .iter()
            .enumerate()
            .map(|(c, v)| cell(v).ok_or_else(|| PayloadError::Cell { row: r, column: c, value: v.clone() }))
            .collect::<Result<Vec<f64>, _>>()?;
        rows.push(row);
    }
    let Some(width) = rows.first().map(Vec::len) else { return Err(PayloadError::NoRows) };
    if let Some((r, row)) = rows.iter().enumerate().find(|(_, row)| row.len() != width) {
        return Err(PayloadError::RowWidth { row: r, len: row.len(), width });
    }
    if let Some(cols) = columns.as_ref().filter(|c| c.len() != width) {
        return Err(PayloadError::ColumnCount { columns: cols.len(), width });
    }
    Ok(PayloadFile::Rows { columns, rows })
}

fn cell(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Null => Some(f64::NAN),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Rows carried by a body sent as is: MLflow `dataframe_records` / `instances` / `inputs`, or the
/// first dimension of the first V2 input; 1 when it cannot tell.
pub fn body_rows(value: &Value) -> usize {
    let len = |v: Option<&Value>| v.and_then(Value::as_array).map(Vec::len);
    let rows = len(value.get("dataframe_records")).or_else(|| len(value.get("instances"))).or_else(|| {
        match value.get("inputs") {
            Some(Value::Array(items)) if items.first().is_some_and(|i| i.get("shape").is_some()) => items
                .first()
                .and_then(|i| i.get("shape"))
                .and_then(|s| s.get(0))
                .and_then(Value::as_u64)
                .map(|n| n as usize),
            Some(Value::Array(items)) => Some(items.len()),
            Some(Value::Object(cols)) => cols.values().next().and_then(Value::as_array).map(Vec::len),
            _ => None,
        }
    });
    rows.unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<PayloadFile, PayloadError> {
        parse(serde_json::from_str(s).unwrap(), s.as_bytes().to_vec())
    }

    #[test]
    fn tables_become_rows_and_other_json_is_a_body() {
        let PayloadFile::Rows { columns, rows } =
            parse_str(r#"{"columns": ["a", "b"], "data": [[1, 2.5], [null, true]], "notes": [1]}"#).unwrap()
        else {
            panic!("a bare table is rows")
        };
        assert_eq!(columns.unwrap(), ["a", "b"]);
        assert_eq!(rows[0], [1.0, 2.5]);
        assert!(rows[1][0].is_nan() && rows[1][1] == 1.0);
        let PayloadFile::Rows { columns, .. } = parse_str(r#"{"dataframe_split": {"data": [[1]]}}"#).unwrap() else {
            panic!("dataframe_split is rows")
        };
        assert_eq!(columns, None);
        let cases = [
            (r#"{"instances": [[1, 2], [3, 4], [5, 6]]}"#, 3),
            (r#"{"dataframe_records": [{"a": 1}]}"#, 1),
            (r#"{"inputs": {"a": [1, 2]}}"#, 2),
            (r#"{"inputs": [{"name": "x", "shape": [4, 8], "datatype": "FP32", "data": []}]}"#, 4),
            (r#"{"whatever": 1}"#, 1),
        ];
        for (text, n) in cases {
            match parse_str(text).unwrap() {
                PayloadFile::Body { body, rows } => assert_eq!((body.as_slice(), rows), (text.as_bytes(), n), "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn sampled_rows_are_reproducible_draws_of_the_baseline() {
        let base: Vec<Vec<f64>> = (0..100).map(|i| vec![f64::from(i), -f64::from(i)]).collect();
        let rows = Rows::Sampled { seed: 7, rows: base.clone() };
        let a = rows.rows_for(3, 50, None);
        assert_eq!(a, rows.rows_for(3, 50, None), "the same request draws the same rows");
        assert_ne!(a, rows.rows_for(4, 50, None));
        assert!(a.iter().all(|r| base.contains(r)));
        // every row is drawn about equally often over many requests
        let mut seen = vec![0u32; 100];
        for k in 0..400 {
            for r in rows.rows_for(k, 25, None) {
                seen[r[0] as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&n| (50..=160).contains(&n)), "{seen:?}");
        let shift = Shift { index: 1, add: 1.0, multiply: 2.0 };
        let shifted = rows.rows_for(3, 50, Some(&shift));
        assert!(shifted.iter().zip(&a).all(|(s, r)| s[0] == r[0] && s[1] == r[1] * 2.0 + 1.0));
        assert!(Rows::Sampled { seed: 1, rows: vec![] }.rows_for(0, 3, None).is_empty());
    }

    #[test]
    fn bad_tables_are_refused() {
        for bad in [
            r#"{"columns": ["a"], "data": [[1], [1, 2]]}"#,
            r#"{"columns": ["a", "b"], "data": [[1]]}"#,
            r#"{"columns": ["a"], "data": [["x"]]}"#,
            r#"{"columns": ["a"], "data": []}"#,
            r#"{"dataframe_split": {"columns": [1], "data": [[1]]}}"#,
        ] {
            assert!(parse_str(bad).is_err(), "{bad}");
        }
        for (bad, message) in [
            (r#"{"columns": ["a"], "data": [[1, "x"]]}"#, r#"row 0, column 1: "x" is not a number, bool or null"#),
            (r#"{"columns": [1], "data": [[1]]}"#, "column names must be strings, got 1"),
            (r#"{"data": [[1], [1, 2]]}"#, "row 1 has 2 values but row 0 has 1"),
        ] {
            assert_eq!(parse_str(bad).unwrap_err().to_string(), message, "{bad}");
        }
    }
}
