//! The monitor's persisted state (saved durably with its previous version; a torn state file
//! falls back to that version instead of silently recomputing everything and forgetting alerts),
//! and the reset of its outputs when its spec changes.

use std::path::Path;

use super::*;

fn monitor(out: &Path) -> Monitor {
    let spec = super::super::spec::validate(&Default::default(), "m", Path::new("."), None).unwrap();
    Monitor::new(spec, out.join("t"), None, out.to_path_buf())
}

fn firing() -> AlertState {
    AlertState { firing: true, value: Some(0.5), window_start: Some(7), since_us: Some(1), ..AlertState::default() }
}

#[test]
fn a_torn_state_file_falls_back_to_the_previous_one() {
    let out = tempfile::tempdir().unwrap();
    let mut m = monitor(out.path());
    m.state_mut().refreshes = 1;
    m.state_mut().alerts.insert("a".into(), firing());
    m.save_state().unwrap();
    m.state_mut().refreshes = 2;
    m.save_state().unwrap();
    assert_eq!(monitor(out.path()).state().refreshes, 2);
    // cut the state file short, as a crash on a disk that lied about a flush could
    let path = m.state_path();
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let resumed = monitor(out.path());
    assert_eq!(resumed.state().refreshes, 1, "the previous good version is used");
    assert_eq!(resumed.state().alerts.get("a"), Some(&firing()), "alert state survives");
    // with no usable version at all, the monitor starts fresh
    std::fs::write(crate::durable::prev_path(&path), b"{").unwrap();
    assert_eq!(monitor(out.path()).state().refreshes, 0);
}

/// A spec change (or an upgrade that bumps the fingerprint) starts the outputs over: a Delta
/// metric table is emptied by one commit (its history stays), and a metric table of the layout
/// before Delta (plain Parquet files per granularity directory) is deleted, to be recomputed.
#[tokio::test]
async fn resetting_the_outputs_empties_delta_metric_tables_and_deletes_the_plain_parquet_layout() {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use sluice_tables::{Location, Table, TableSpec};

    let out = tempfile::tempdir().unwrap();
    let mut m = monitor(out.path());
    let old = m.profile_dir().join("1h");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("20261126T000000Z.parquet"), b"PAR1").unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
    let spec = TableSpec { schema: schema.clone(), partition_by: Vec::new(), checkpoint_interval: 100 };
    let drift = Location::Local(m.drift_dir());
    let mut t = Table::open_or_create(&drift, &spec).await.unwrap();
    let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
    let before = t.append(&[batch]).await.unwrap();
    assert_eq!(t.files().unwrap().len(), 1);

    m.reset_outputs("v2|new".into()).await.unwrap();
    assert!(!m.profile_dir().exists(), "the plain-Parquet metric table is deleted");
    let t = Table::open(&drift).await.unwrap();
    assert_eq!(t.files().unwrap(), Vec::new(), "the Delta metric table is emptied");
    assert_eq!(t.version(), Some(before + 1), "by one commit");
    assert_eq!(m.state().fingerprint, "v2|new");
}

/// Rewrites (optimize) of files already read are renames; a rewrite that folds in a file not
/// read yet is not, and neither is one that comes after a rewrite that was not.
#[test]
fn rewrites_of_files_already_read_are_renames() {
    use super::files::renames;
    use sluice_tables::Rewrite;
    let rw = |version, removed: &[&str], added: &[&str]| Rewrite {
        version,
        removed: removed.iter().map(|s| s.to_string()).collect(),
        added: added.iter().map(|s| s.to_string()).collect(),
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<std::collections::HashSet<_>>();
    let read = |p: &str| ["a", "b", "c"].contains(&p);

    // a, b compacted into x, then x and c into y: both renames, only y is new on disk
    let r = renames(&[rw(5, &["a", "b"], &["x"]), rw(6, &["x", "c"], &["y"])], read);
    assert_eq!((r.added, r.removed), (set(&["y"]), set(&["a", "b", "c"])));

    // d was appended after the last refresh: compacting it with a is not a rename
    let r = renames(&[rw(5, &["a", "d"], &["x"])], read);
    assert_eq!((r.added, r.removed), (set(&[]), set(&[])));

    // x holds unread rows, so a later rewrite of x is not a rename either
    let r = renames(&[rw(5, &["a", "d"], &["x"]), rw(6, &["x", "b"], &["y"])], read);
    assert_eq!((r.added, r.removed), (set(&[]), set(&[])));

    // a file replaced twice (a log that names it again) is not read twice over
    let r = renames(&[rw(5, &["a"], &["x"]), rw(6, &["a"], &["y"])], read);
    assert_eq!((r.added, r.removed), (set(&["x"]), set(&["a"])));

    // an add without a remove is no rename of anything
    let r = renames(&[rw(5, &[], &["x"])], read);
    assert_eq!((r.added, r.removed), (set(&[]), set(&[])));
}
