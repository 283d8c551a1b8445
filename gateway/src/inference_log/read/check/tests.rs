//! Verdicts on real Parquet files: whole, cut short, foreign and evolved.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::record_batch::RecordBatch;

use super::*;

fn schema(cols: &[(&str, DataType, bool)]) -> SchemaRef {
    Arc::new(Schema::new(cols.iter().map(|(n, t, null)| Field::new(*n, t.clone(), *null)).collect::<Vec<_>>()))
}

fn table_schema() -> SchemaRef {
    schema(&[("request_id", DataType::Utf8, false), ("ts", DataType::Int64, false), ("x", DataType::Float64, true)])
}

/// Writes a file of `schema` (3 rows) as `dir/<name>`.
fn write(dir: &Path, name: &str, schema: SchemaRef) -> PathBuf {
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.data_type() {
                DataType::Utf8 => Arc::new(StringArray::from(vec!["a", "b", "c"])),
                DataType::Int64 => Arc::new(Int64Array::from(vec![1, 2, 3])),
                _ => Arc::new(Float64Array::from(vec![0.5, 1.5, 2.5])),
            }
        })
        .collect();
    let batch = RecordBatch::try_new(schema, cols).unwrap();
    let path = dir.join(name);
    let file = File::create(&path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    path
}

fn cut_in_half(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

fn verdicts(dir: &Path) -> Vec<(String, Option<SkipReason>)> {
    check_dir(dir)
        .into_iter()
        .map(|c| (c.path.file_name().unwrap().to_string_lossy().into_owned(), c.problem.map(|p| p.0)))
        .collect()
}

#[test]
fn cut_and_foreign_files_are_skipped_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "part-1.parquet", table_schema());
    write(d, "part-2.parquet", table_schema());
    cut_in_half(&write(d, "part-3.parquet", table_schema()));
    std::fs::write(d.join("part-4.parquet"), b"").unwrap();
    // the same column with another type, and a file without the table's required columns
    write(d, "part-5.parquet", schema(&[("request_id", DataType::Int64, false), ("ts", DataType::Int64, false)]));
    write(d, "part-6.parquet", schema(&[("other", DataType::Float64, true)]));
    let v = verdicts(d);
    assert_eq!(
        v,
        vec![
            ("part-1.parquet".into(), None),
            ("part-2.parquet".into(), None),
            ("part-3.parquet".into(), Some(SkipReason::Unreadable)),
            ("part-4.parquet".into(), Some(SkipReason::Unreadable)),
            ("part-5.parquet".into(), Some(SkipReason::IncompatibleSchema)),
            ("part-6.parquet".into(), Some(SkipReason::IncompatibleSchema)),
        ]
    );
    let problems: Vec<String> = check_dir(d).into_iter().filter_map(|c| c.problem.map(|p| p.1)).collect();
    assert!(problems[2].contains("'request_id' is Int64"), "{problems:?}");
    assert!(problems[3].contains("no column 'request_id'"), "{problems:?}");
    assert_eq!(usable_files(d).len(), 2);
}

#[test]
fn the_writers_schema_wins_over_a_majority_of_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("fraud");
    std::fs::create_dir_all(&d).unwrap();
    let foreign = schema(&[("request_id", DataType::Int64, false), ("ts", DataType::Int64, false)]);
    write(&d, "part-1.parquet", foreign.clone());
    write(&d, "part-2.parquet", foreign);
    write(&d, "part-3.parquet", table_schema());
    // without a known schema, the schema most files share is the table's
    let v = verdicts(&d);
    assert_eq!(v.iter().filter(|x| x.1.is_none()).count(), 2, "{v:?}");
    assert_eq!(v[2].1, Some(SkipReason::IncompatibleSchema));
    expect_schema(&d, table_schema());
    let v = verdicts(&d);
    assert_eq!(
        v.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![Some(SkipReason::IncompatibleSchema), Some(SkipReason::IncompatibleSchema), None]
    );
}

#[test]
fn files_of_an_evolved_layout_stay_usable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // an older file without the nullable column `x` but with a column since removed
    write(
        d,
        "part-1.parquet",
        schema(&[("request_id", DataType::Utf8, false), ("ts", DataType::Int64, false), ("old", DataType::Utf8, true)]),
    );
    write(d, "part-2.parquet", table_schema());
    write(d, "part-3.parquet", table_schema());
    assert!(verdicts(d).iter().all(|v| v.1.is_none()), "{:?}", verdicts(d));
    // two files that disagree on a column the table does not have: the older is skipped
    write(
        d,
        "part-4.parquet",
        schema(&[
            ("request_id", DataType::Utf8, false),
            ("ts", DataType::Int64, false),
            ("old", DataType::Int64, true),
        ]),
    );
    let v = verdicts(d);
    assert_eq!(v[0].1, Some(SkipReason::IncompatibleSchema), "{v:?}");
    assert!(v[1..].iter().all(|x| x.1.is_none()), "{v:?}");
}

#[test]
fn a_replaced_file_is_checked_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "part-1.parquet", table_schema());
    let p = write(d, "part-2.parquet", table_schema());
    assert_eq!(usable_files(d).len(), 2);
    cut_in_half(&p);
    assert_eq!(usable_files(d), vec![d.join("part-1.parquet")]);
    write(d, "part-2.parquet", table_schema());
    assert_eq!(usable_files(d).len(), 2);
    std::fs::remove_file(&p).unwrap();
    assert_eq!(usable_files(d).len(), 1);
}

#[test]
fn tables_are_labelled_with_their_directory_name() {
    assert_eq!(table_label(Path::new("/d/fraud_drift_metrics")), "fraud_drift_metrics");
    assert_eq!(table_label(Path::new("/d/fraud")), "fraud");
}
