//! Local Delta tables end to end: create, append, evolve, read back through the log, commit
//! retries, concurrent appenders, upkeep.

use std::path::PathBuf;
use std::sync::Arc;

use deltalake_core::arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use deltalake_core::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use deltalake_core::datafusion::prelude::SessionContext;

use crate::{Location, S3Options, Table, TableError, TableSpec};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-tables-{name}-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("date", DataType::Utf8, false),
    ]))
}

fn spec() -> TableSpec {
    TableSpec { schema: schema(), partition_by: vec!["date".into()], checkpoint_interval: 10 }
}

fn batch(ids: std::ops::Range<i64>, date: &str) -> RecordBatch {
    let n = (ids.end - ids.start) as usize;
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(Float64Array::from_iter_values(ids.map(|i| i as f64 / 2.0))),
            Arc::new(StringArray::from(vec![date; n])),
        ],
    )
    .unwrap()
}

async fn query_i64(t: &Table, sql: &str) -> Vec<i64> {
    let ctx = SessionContext::new();
    t.register(&ctx, "t", None).await.unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect()
}

#[tokio::test]
async fn appends_commit_once_each_and_read_back_through_the_log() {
    let dir = temp_dir("append");
    let loc = Location::Local(dir.clone());
    let mut t = Table::open_or_create(&loc, &spec()).await.unwrap();
    assert_eq!(t.version(), Some(0));
    assert_eq!(t.append(&[batch(0..10, "2026-12-04"), batch(10..15, "2026-12-05")]).await.unwrap(), 1);
    assert_eq!(t.append(&[batch(15..20, "2026-12-05")]).await.unwrap(), 2);
    let files = t.files().unwrap();
    assert_eq!(files.len(), 3);
    assert!(files.iter().all(|f| f.path.starts_with("date=2026-12-0") && f.path.ends_with(".parquet")), "{files:?}");
    assert_eq!(files.iter().map(|f| f.rows.unwrap()).sum::<usize>(), 20);
    assert!(files.iter().all(|f| f.min.contains_key("id") && f.max["id"] >= f.min["id"]));
    // partition columns are columns of the table
    assert_eq!(query_i64(&t, "SELECT count(*) FROM t WHERE date = '2026-12-05'").await, vec![10]);
    assert_eq!(query_i64(&t, "SELECT sum(id) FROM t").await, vec![190]);
    // a second reader opens the same version from the log
    let r = Table::open(&loc).await.unwrap();
    assert_eq!(r.version(), Some(2));
    // one commit per append: version files 0, 1, 2
    let log: Vec<_> = std::fs::read_dir(dir.join("_delta_log")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(log.iter().filter(|n| n.to_string_lossy().ends_with(".json")).count(), 3, "{log:?}");
}

#[tokio::test]
async fn a_retried_commit_whose_first_try_landed_does_not_append_twice() {
    let loc = Location::Local(temp_dir("retry"));
    let mut t = Table::open_or_create(&loc, &spec()).await.unwrap();
    let mut staged = t.stage(&[batch(0..7, "2026-12-05")]).await.unwrap();
    assert_eq!(t.commit(&mut staged).await.unwrap(), 1);
    // the answer was "lost": the writer tries again with the same staged files
    let mut again = staged.clone();
    again.tried = true;
    assert_eq!(t.commit(&mut again).await.unwrap(), 1);
    assert_eq!(query_i64(&t, "SELECT count(*) FROM t").await, vec![7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_lose_nothing() {
    let loc = Location::Local(temp_dir("concurrent"));
    Table::open_or_create(&loc, &spec()).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..4i64 {
        let loc = loc.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = Table::open(&loc).await.unwrap();
            for k in 0..5i64 {
                let base = (w * 5 + k) * 100;
                t.append(&[batch(base..base + 10, "2026-12-05")]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let t = Table::open(&loc).await.unwrap();
    assert_eq!(t.version(), Some(20));
    assert_eq!(query_i64(&t, "SELECT count(DISTINCT id) FROM t").await, vec![200]);
    assert_eq!(query_i64(&t, "SELECT count(*) FROM t").await, vec![200]);
}

#[tokio::test]
async fn two_creators_end_with_one_table() {
    let loc = Location::Local(temp_dir("create-race"));
    let s = spec();
    let (a, b) = tokio::join!(Table::open_or_create(&loc, &s), Table::open_or_create(&loc, &s));
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    a.append(&[batch(0..3, "2026-12-05")]).await.unwrap();
    b.append(&[batch(3..5, "2026-12-05")]).await.unwrap();
    let t = Table::open(&loc).await.unwrap();
    assert_eq!(query_i64(&t, "SELECT count(*) FROM t").await, vec![5]);
}

#[tokio::test]
async fn new_columns_evolve_the_schema_and_changed_types_are_refused() {
    let loc = Location::Local(temp_dir("evolve"));
    let mut t = Table::open_or_create(&loc, &spec()).await.unwrap();
    t.append(&[batch(0..4, "2026-12-05")]).await.unwrap();
    let wider = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("date", DataType::Utf8, false),
        Field::new("y", DataType::Int64, true),
    ]));
    let b = RecordBatch::try_new(
        wider,
        vec![
            Arc::new(Int64Array::from(vec![4, 5])),
            Arc::new(Float64Array::from(vec![1.0, 2.0])),
            Arc::new(StringArray::from(vec!["2026-12-05"; 2])),
            Arc::new(Int64Array::from(vec![40, 50])),
        ],
    )
    .unwrap();
    t.append(&[b]).await.unwrap();
    assert!(t.arrow_schema().unwrap().field_with_name("y").is_ok());
    assert_eq!(query_i64(&t, "SELECT count(y) FROM t").await, vec![2]);
    assert_eq!(query_i64(&t, "SELECT count(*) FROM t").await, vec![6]);
    // rows without the new column are still accepted (NULL)
    t.append(&[batch(6..8, "2026-12-05")]).await.unwrap();
    assert_eq!(query_i64(&t, "SELECT count(*) - count(y) FROM t").await, vec![6]);
    // a changed type is refused, the table unchanged
    let v = t.version();
    let bad = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false), Field::new("date", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec!["a"])), Arc::new(StringArray::from(vec!["2026-12-05"]))],
    )
    .unwrap();
    let e = t.append(&[bad]).await.unwrap_err();
    assert!(matches!(e, TableError::SchemaConflict { .. }) && e.is_permanent(), "{e}");
    assert_eq!(t.version(), v);
}

#[tokio::test]
async fn changes_since_lists_appends_rewrites_and_deletes() {
    let loc = Location::Local(temp_dir("changes"));
    let mut t = Table::open_or_create(&loc, &spec()).await.unwrap();
    for k in 0..4 {
        t.append(&[batch(k * 10..k * 10 + 10, "2026-12-04")]).await.unwrap();
    }
    t.append(&[batch(100..110, "2026-12-05")]).await.unwrap();
    let c = t.changes_since(2).await.unwrap();
    assert_eq!((c.version, c.added.len(), c.restart), (5, 3, false));
    let o = t.optimize(64 << 20).await.unwrap();
    assert_eq!((o.files_removed, o.files_added), (4, 1), "{o:?}");
    let c = t.changes_since(5).await.unwrap();
    assert_eq!((c.added.len(), c.rewrites.len()), (0, 1), "{c:?}");
    assert_eq!((c.rewrites[0].version, c.rewrites[0].added.len(), c.rewrites[0].removed.len()), (o.version, 1, 4));
    // the paths are the ones the snapshot lists
    let live: Vec<String> = t.files().unwrap().into_iter().map(|f| f.path).collect();
    assert!(live.iter().any(|p| *p == c.rewrites[0].added[0]), "{live:?} {c:?}");
    assert_eq!(query_i64(&t, "SELECT count(*) FROM t").await, vec![50]);
    let r = t.remove_partitions_before("date", "2026-12-05").await.unwrap();
    assert_eq!(r.files_removed, 1, "{r:?}");
    let c = t.changes_since(o.version).await.unwrap();
    assert_eq!(c.removed.len(), 1, "{c:?}");
    assert_eq!(query_i64(&t, "SELECT count(*) FROM t").await, vec![10]);
    // vacuum with no retention deletes the files no longer referenced; rows unchanged
    let on_disk = |d: &std::path::Path| -> usize {
        let mut n = 0;
        for p in std::fs::read_dir(d).unwrap().flatten() {
            if p.path().is_dir() && !p.file_name().to_string_lossy().starts_with('_') {
                n += std::fs::read_dir(p.path())
                    .unwrap()
                    .flatten()
                    .filter(|f| f.path().extension().is_some_and(|x| x == "parquet"))
                    .count();
            }
        }
        n
    };
    let dir = loc.local_path().unwrap().to_path_buf();
    assert_eq!(on_disk(&dir), 6);
    let v = t.vacuum(std::time::Duration::ZERO).await.unwrap();
    assert_eq!(v.files_deleted, 5, "{v:?}");
    assert_eq!(on_disk(&dir), 1);
    assert_eq!(query_i64(&t, "SELECT count(*) FROM t").await, vec![10]);
}

#[tokio::test]
async fn open_tells_plain_parquet_directories_and_missing_tables_apart() {
    let dir = temp_dir("plain");
    let missing = Table::open(&Location::Local(dir.join("nothing"))).await.unwrap_err();
    assert!(matches!(missing, TableError::NotATable { .. }), "{missing}");
    std::fs::create_dir_all(dir.join("date=2026-12-05")).unwrap();
    std::fs::write(dir.join("date=2026-12-05/part-1.parquet"), b"PAR1").unwrap();
    let plain = Table::open(&Location::Local(dir)).await.unwrap_err();
    assert!(
        matches!(plain, TableError::PlainParquet { .. }) && plain.to_string().contains("sluice table convert"),
        "{plain}"
    );
}

#[tokio::test]
async fn maps_and_lists_are_written_whatever_their_arrow_field_names() {
    use deltalake_core::arrow::array::{Array, Float64Builder, ListBuilder, MapBuilder, StringBuilder};
    let mut m = MapBuilder::new(None, StringBuilder::new(), Float64Builder::new()); // "entries"/"keys"/"values"
    m.keys().append_value("fraud");
    m.values().append_value(0.25);
    m.append(true).unwrap();
    let mut l = ListBuilder::new(StringBuilder::new()); // "item"
    l.values().append_value("E1");
    l.append(true);
    let (m, l) = (m.finish(), l.finish());
    let schema = Arc::new(Schema::new(vec![
        Field::new("p", m.data_type().clone(), true),
        Field::new("codes", l.data_type().clone(), true),
        Field::new("date", DataType::Utf8, false),
    ]));
    let b = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(m), Arc::new(l), Arc::new(StringArray::from(vec!["2026-12-05"]))],
    )
    .unwrap();
    let loc = Location::Local(temp_dir("nested"));
    let spec = TableSpec { schema, partition_by: vec!["date".into()], checkpoint_interval: 10 };
    let mut t = Table::open_or_create(&loc, &spec).await.unwrap();
    t.append(std::slice::from_ref(&b)).await.unwrap();
    t.append(&[b]).await.unwrap();
    assert_eq!(query_i64(&t, "SELECT count(*) FROM t WHERE p['fraud'] = 0.25 AND codes[1] = 'E1'").await, vec![2]);
}

#[test]
fn siblings_share_the_parent() {
    let o = S3Options::default();
    let s3 = Location::parse("s3://bucket/tables/fraud", &o).unwrap();
    assert_eq!(s3.sibling("fraud_labels"), Location::parse("s3://bucket/tables/fraud_labels", &o).unwrap());
    let top = Location::parse("s3://bucket/fraud", &o).unwrap();
    assert_eq!(top.sibling("fraud_labels"), Location::parse("s3://bucket/fraud_labels", &o).unwrap());
    assert_eq!(Location::Local("/d/fraud".into()).sibling("fraud_labels"), Location::Local("/d/fraud_labels".into()));
}

fn window_schema() -> SchemaRef {
    use deltalake_core::arrow::datatypes::{Fields, TimeUnit};
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let window = Fields::from(vec![Field::new("start", ts.clone(), false), Field::new("end", ts, false)]);
    Arc::new(Schema::new(vec![
        Field::new("window", DataType::Struct(window), true),
        Field::new("granularity", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
    ]))
}

/// `n` rows of window `w` (hours) of granularity `g`, with values `v`.
fn window_batch(g: &str, w: i64, v: i64, n: usize) -> RecordBatch {
    use deltalake_core::arrow::array::{StructArray, TimestampMicrosecondArray};
    let h = 3_600_000_000i64;
    let schema = window_schema();
    let DataType::Struct(fields) = schema.field(0).data_type().clone() else { unreachable!() };
    let start = TimestampMicrosecondArray::from(vec![w * h; n]).with_timezone("UTC");
    let end = TimestampMicrosecondArray::from(vec![(w + 1) * h; n]).with_timezone("UTC");
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StructArray::new(fields, vec![Arc::new(start), Arc::new(end)], None)),
            Arc::new(StringArray::from(vec![g; n])),
            Arc::new(Int64Array::from(vec![v; n])),
        ],
    )
    .unwrap()
}

/// Replaces the rows of windows `ws` of granularity `g` by `batches` (one file each), as the
/// monitor does.
async fn replace_windows(t: &mut Table, g: &str, ws: &[i64], batches: &[RecordBatch]) -> u64 {
    let h = 3_600_000_000i64;
    let mut staged = t.stage(&[]).await.unwrap();
    for b in batches {
        staged.merge(t.stage(std::slice::from_ref(b)).await.unwrap());
    }
    let list = ws.iter().map(|w| (w * h).to_string()).collect::<Vec<_>>().join(", ");
    let predicate = format!("granularity = '{g}' AND CAST(\"window\"['start'] AS BIGINT) IN ({list})");
    let starts: Vec<i64> = ws.iter().map(|w| w * h).collect();
    let g = g.to_string();
    t.replace(&mut staged, &predicate, &move |f| {
        f.all_text("granularity", &g) && starts.iter().any(|s| f.all_time("window.start", *s))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn replace_swaps_exactly_the_selected_rows_in_one_commit_even_after_a_concurrent_commit() {
    let loc = Location::Local(temp_dir("replace"));
    let spec = TableSpec { schema: window_schema(), partition_by: vec![], checkpoint_interval: 10 };
    let mut t = Table::open_or_create(&loc, &spec).await.unwrap();
    let first = replace_windows(
        &mut t,
        "1 hour",
        &[0, 1, 2],
        &[window_batch("1 hour", 0, 1, 3), window_batch("1 hour", 1, 1, 4), window_batch("1 hour", 2, 1, 5)],
    )
    .await;
    replace_windows(&mut t, "1 day", &[0], &[window_batch("1 day", 0, 1, 12)]).await;
    let files = t.files().unwrap();
    assert_eq!(files.len(), 4, "one file per window: {files:?}");
    assert!(
        files.iter().any(|f| f.all_time("window.start", 3_600_000_000) && f.all_text("granularity", "1 hour")),
        "{files:?}"
    );
    // hour 1 recomputed: its 4 rows become 2, nothing else changes
    let v = replace_windows(&mut t, "1 hour", &[1], &[window_batch("1 hour", 1, 7, 2)]).await;
    assert_eq!(v, first + 2, "one commit");
    let sum = "SELECT sum(v) FROM t";
    let count = "SELECT count(*) FROM t";
    assert_eq!(query_i64(&t, count).await, vec![3 + 2 + 5 + 12]);
    assert_eq!(query_i64(&t, sum).await, vec![3 + 14 + 5 + 12]);
    // a stale writer: another handle commits first (a window of its own, then hour 2 again);
    // the stale handle's replace reloads and removes what is there now
    let mut stale = Table::open(&loc).await.unwrap();
    replace_windows(&mut t, "1 hour", &[3], &[window_batch("1 hour", 3, 1, 1)]).await;
    replace_windows(&mut t, "1 hour", &[2], &[window_batch("1 hour", 2, 2, 6)]).await;
    replace_windows(&mut stale, "1 hour", &[2], &[window_batch("1 hour", 2, 3, 1)]).await;
    let t = Table::open(&loc).await.unwrap();
    assert_eq!(query_i64(&t, count).await, vec![3 + 2 + 1 + 12 + 1]);
    assert_eq!(query_i64(&t, sum).await, vec![3 + 14 + 3 + 12 + 1]);
    // a window that now has no rows: only removes
    let mut t = t;
    replace_windows(&mut t, "1 day", &[0], &[]).await;
    assert_eq!(query_i64(&t, count).await, vec![3 + 2 + 1 + 1]);
    // the log says what each replace replaced
    let log =
        std::fs::read_to_string(loc.local_path().unwrap().join(format!("_delta_log/{:020}.json", first))).unwrap();
    assert!(log.contains("\"mode\":\"Overwrite\"") && log.contains("predicate"), "{log}");
}

/// A compaction by another handle (another process) is what a reader that refreshes lists, and
/// the compacted files carry the same Arrow types as the appended ones (delta-rs' rewrite scan
/// defaults to view types: `Utf8View` beside `Utf8` breaks readers that merge file schemas).
#[tokio::test]
async fn compacted_files_are_listed_after_a_refresh_and_keep_the_appends_arrow_types() {
    use deltalake_core::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
        Field::new("date", DataType::Utf8, false),
    ]));
    let spec = TableSpec { schema: schema.clone(), partition_by: vec!["date".into()], checkpoint_interval: 10 };
    let loc = Location::Local(temp_dir("refresh-after-optimize"));
    let dir = loc.local_path().unwrap().to_path_buf();
    let mut w = Table::open_or_create(&loc, &spec).await.unwrap();
    for k in 0..3 {
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(k * 10..k * 10 + 10)),
                Arc::new(StringArray::from(vec!["v"; 10])),
                Arc::new(StringArray::from(vec!["2026-12-04"; 10])),
            ],
        )
        .unwrap();
        w.append(&[b]).await.unwrap();
    }
    let file_schema = |path: &str| {
        let f = std::fs::File::open(dir.join(path)).unwrap();
        ParquetRecordBatchReaderBuilder::try_new(f).unwrap().schema().clone()
    };
    let mut r = Table::open(&loc).await.unwrap();
    let appended = r.files().unwrap();
    assert_eq!(appended.len(), 3);
    let o = Table::open(&loc).await.unwrap().optimize(64 << 20).await.unwrap();
    assert_eq!((o.files_removed, o.files_added), (3, 1));
    r.refresh().await.unwrap();
    assert_eq!(r.version(), Some(o.version));
    let compacted = r.files().unwrap();
    assert_eq!(compacted.len(), 1, "{compacted:?}");
    let (before, after) = (file_schema(&appended[0].path), file_schema(&compacted[0].path));
    assert_eq!(after.field_with_name("s").unwrap().data_type(), &DataType::Utf8);
    assert_eq!(after.fields(), before.fields());
    assert_eq!(query_i64(&r, "SELECT count(*) FROM t").await, vec![30]);
}
