//! Rows sampled from a baseline: the Parquet training sample a Sluice monitor compares traffic
//! with (`monitor.baseline`). Load drawn from it looks like the data the model was trained on,
//! so a monitor watching the run sees no drift unless a scenario injects some.
//!
//! The feature columns are the numeric and boolean columns of the file, in file order, minus
//! the monitor's label and prediction columns (`label`, `prediction`); `--columns` picks them
//! by name instead.

use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::Error;

/// Columns of a baseline that are not model inputs, by the monitor's default names.
const NOT_FEATURES: [&str; 2] = ["label", "prediction"];

/// Most rows read from a baseline (a training sample; more adds nothing to a load test).
pub const MAX_ROWS: usize = 1_000_000;

/// The feature columns and rows of a baseline file.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<f64>>,
}

fn usable(t: &DataType) -> bool {
    t.is_numeric() || *t == DataType::Boolean
}

/// Reads `path`; `columns` (when given) names the feature columns to take, in order.
pub fn load(path: &Path, columns: Option<&[String]>) -> Result<Baseline, Error> {
    let bad = |m: String| Error::usage(format!("baseline {}: {m}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(format!("not a Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let picked: Vec<usize> = match columns {
        Some(names) => names
            .iter()
            .map(|n| {
                let i = schema.index_of(n).map_err(|_| bad(format!("has no column '{n}' (--columns)")))?;
                if usable(schema.field(i).data_type()) {
                    Ok(i)
                } else {
                    Err(bad(format!("column '{n}' is {}, not a number", schema.field(i).data_type())))
                }
            })
            .collect::<Result<_, _>>()?,
        None => (0..schema.fields().len())
            .filter(|&i| {
                let f = schema.field(i);
                usable(f.data_type()) && !NOT_FEATURES.contains(&f.name().as_str())
            })
            .collect(),
    };
    if picked.is_empty() {
        return Err(bad("has no numeric feature columns".into()));
    }
    let names = picked.iter().map(|&i| schema.field(i).name().clone()).collect();
    let reader = builder.build().map_err(|e| bad(e.to_string()))?;
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let cols = picked
            .iter()
            .map(|&i| {
                let c = batch.column(i);
                let c = if *c.data_type() == DataType::Boolean {
                    arrow::compute::cast(
                        &arrow::compute::cast(c, &DataType::UInt8).map_err(|e| bad(e.to_string()))?,
                        &DataType::Float64,
                    )
                } else {
                    arrow::compute::cast(c, &DataType::Float64)
                };
                c.map_err(|e| bad(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let take = batch.num_rows().min(MAX_ROWS - rows.len());
        for r in 0..take {
            rows.push(
                cols.iter()
                    .map(|c| {
                        let a = c.as_primitive::<Float64Type>();
                        if a.is_null(r) { f64::NAN } else { a.value(r) }
                    })
                    .collect(),
            );
        }
        if rows.len() >= MAX_ROWS {
            break;
        }
    }
    if rows.is_empty() {
        return Err(bad("has no rows".into()));
    }
    Ok(Baseline { columns: names, rows })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, Float32Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn write(path: &Path) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("amount", DataType::Float32, true),
            Field::new("count", DataType::Int64, false),
            Field::new("card_present", DataType::Boolean, false),
            Field::new("country", DataType::Utf8, false),
            Field::new("label", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Float32Array::from(vec![Some(1.5), None])),
                Arc::new(Int64Array::from(vec![3, 4])),
                Arc::new(BooleanArray::from(vec![true, false])),
                Arc::new(StringArray::from(vec!["fr", "de"])),
                Arc::new(Int64Array::from(vec![0, 1])),
            ],
        )
        .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn numeric_columns_but_the_label_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.parquet");
        write(&path);
        let b = load(&path, None).unwrap();
        assert_eq!(b.columns, ["amount", "count", "card_present"]);
        assert_eq!(b.rows[0], [1.5, 3.0, 1.0]);
        assert!(b.rows[1][0].is_nan() && b.rows[1][1..] == [4.0, 0.0]);
        let picked = load(&path, Some(&["count".to_string(), "amount".to_string()])).unwrap();
        assert_eq!(
            (picked.columns.as_slice(), picked.rows[0].as_slice()),
            (&["count".to_string(), "amount".to_string()][..], &[3.0, 1.5][..])
        );
        for (cols, says) in [(vec!["nope"], "no column 'nope'"), (vec!["country"], "not a number")] {
            let cols: Vec<String> = cols.into_iter().map(String::from).collect();
            let e = load(&path, Some(&cols)).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        std::fs::write(&path, b"not parquet").unwrap();
        assert!(load(&path, None).unwrap_err().to_string().contains("not a Parquet file"));
    }
}
