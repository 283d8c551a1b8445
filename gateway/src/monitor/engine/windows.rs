//! Which windows a refresh recomputes, and in which chunks it reads them: the windows the new,
//! changed or removed files span, the ones new labels touch, and the SQL that selects windows.
//! The planning is pure functions over file footers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};

use super::{FileInfo, Monitor, MonitorError, q, qerr, register_files};
use crate::inference_log::read::new_ctx;
use crate::monitor::spec::Granularity;

/// Rows read per chunk of windows (an estimate from file footers).
pub const CHUNK_ROWS: u64 = 2_000_000;

/// Windows of `g` that the rows of `files` fall in (by their timestamp ranges).
pub(super) fn touched(g: &Granularity, files: &[FileInfo]) -> BTreeSet<i64> {
    let mut touched: BTreeSet<i64> = BTreeSet::new();
    for f in files {
        if f.max_ts < f.min_ts {
            continue;
        }
        let mut w = g.window_of(f.min_ts);
        while w <= f.max_ts {
            touched.insert(w);
            w += g.width_us;
        }
    }
    touched
}

/// The files whose timestamp range overlaps window `w`.
pub(super) fn overlapping<'a>(
    all: &'a BTreeMap<String, (PathBuf, FileInfo)>,
    g: &'a Granularity,
    w: i64,
) -> impl Iterator<Item = (&'a PathBuf, &'a FileInfo)> + 'a {
    all.values().filter(move |(_, i)| i.max_ts >= w && i.min_ts < w + g.width_us).map(|(p, i)| (p, i))
}

/// Rows of window `w`, estimated from the footers (rows spread evenly over each file's range).
pub(super) fn estimate_rows(all: &BTreeMap<String, (PathBuf, FileInfo)>, g: &Granularity, w: i64) -> u64 {
    overlapping(all, g, w)
        .map(|(_, i)| {
            let span = (i.max_ts - i.min_ts + 1).max(1) as f64;
            let ov = ((i.max_ts + 1).min(w + g.width_us) - i.min_ts.max(w)).max(0) as f64;
            (i.rows as f64 * (ov / span).min(1.0)).ceil() as u64
        })
        .sum()
}

/// Windows in time order, cut into chunks of about [`CHUNK_ROWS`] rows (a window is never split;
/// one larger than the limit is a chunk of its own).
pub(super) fn chunks(needed: BTreeSet<i64>, estimate: impl Fn(i64) -> u64) -> Vec<Vec<i64>> {
    let mut chunks: Vec<Vec<i64>> = Vec::new();
    let mut cur: Vec<i64> = Vec::new();
    let mut cur_rows = 0u64;
    for w in needed {
        let e = estimate(w);
        if !cur.is_empty() && cur_rows + e > CHUNK_ROWS {
            chunks.push(std::mem::take(&mut cur));
            cur_rows = 0;
        }
        cur.push(w);
        cur_rows += e;
    }
    if !cur.is_empty() {
        chunks.push(cur);
    }
    chunks
}

/// The files a chunk of windows reads, in path order.
pub(super) fn files_of(all: &BTreeMap<String, (PathBuf, FileInfo)>, g: &Granularity, chunk: &[i64]) -> Vec<PathBuf> {
    let mut s: BTreeSet<PathBuf> = BTreeSet::new();
    for w in chunk {
        s.extend(overlapping(all, g, *w).map(|(p, _)| p.clone()));
    }
    s.into_iter().collect()
}

impl Monitor {
    /// Windows of granularity `g` holding rows that the new label files label.
    pub(super) async fn labeled_windows(
        &self,
        files: &[PathBuf],
        new_labels: &[PathBuf],
        g: &Granularity,
    ) -> Result<BTreeSet<i64>, MonitorError> {
        let ctx = new_ctx();
        register_files(&ctx, "t", files).await?;
        register_files(&ctx, "nl", new_labels).await?;
        let ts = q(&self.spec.timestamp_col);
        let w = format!("(CAST(t.{ts} AS BIGINT) - {off}) / {width}", off = g.offset_us, width = g.width_us);
        let t_schema = ctx.table("t").await.map_err(qerr)?.schema().as_arrow().clone();
        let client = if t_schema.field_with_name("client_request_id").is_ok() {
            format!(" UNION SELECT DISTINCT {w} AS w FROM t JOIN nl ON t.client_request_id = nl.client_request_id")
        } else {
            String::new()
        };
        let sql = format!("SELECT DISTINCT {w} AS w FROM t JOIN nl ON t.request_id = nl.request_id{client}");
        let batches = ctx.sql(&sql).await.map_err(qerr)?.collect().await.map_err(qerr)?;
        let mut out = BTreeSet::new();
        for b in batches {
            let a = cast(b.column(0), &DataType::Int64).map_err(qerr)?;
            for v in a.as_primitive::<Int64Type>().iter().flatten() {
                out.insert(v * g.width_us + g.offset_us);
            }
        }
        Ok(out)
    }

    pub(super) fn ranges_sql(&self, g: &Granularity, windows: &[i64]) -> String {
        let ts = format!("CAST({} AS BIGINT)", q(&self.spec.timestamp_col));
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for &w in windows {
            match ranges.last_mut() {
                Some(r) if r.1 == w => r.1 = w + g.width_us,
                _ => ranges.push((w, w + g.width_us)),
            }
        }
        let parts: Vec<String> = ranges.iter().map(|(a, b)| format!("({ts} >= {a} AND {ts} < {b})")).collect();
        if parts.is_empty() { "FALSE".into() } else { parts.join(" OR ") }
    }

    pub(super) fn window_expr(&self, g: &Granularity) -> String {
        format!("((CAST({} AS BIGINT) - {}) / {})", q(&self.spec.timestamp_col), g.offset_us, g.width_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(min_ts: i64, max_ts: i64, rows: u64) -> FileInfo {
        FileInfo { size: 1, rows, min_ts, max_ts }
    }

    #[test]
    fn a_file_touches_every_window_its_range_spans() {
        let g = Granularity::parse("1 minute").unwrap();
        let m = 60_000_000;
        let got = touched(&g, &[info(m + 5, 3 * m, 10), info(10 * m, 10 * m, 1), info(1, 0, 0)]);
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![m, 2 * m, 3 * m, 10 * m]);
    }

    #[test]
    fn chunks_keep_time_order_and_cut_at_the_row_limit() {
        let needed: BTreeSet<i64> = (0..5).collect();
        let got = chunks(needed, |w| if w == 2 { CHUNK_ROWS } else { CHUNK_ROWS / 3 });
        assert_eq!(got, vec![vec![0, 1], vec![2], vec![3, 4]]);
        assert!(chunks(BTreeSet::new(), |_| 0).is_empty());
    }

    #[test]
    fn rows_are_estimated_by_the_share_of_a_file_in_a_window() {
        let g = Granularity::parse("1 minute").unwrap();
        let m = 60_000_000;
        let all: BTreeMap<String, (PathBuf, FileInfo)> =
            [("a".to_string(), (PathBuf::from("a"), info(0, 2 * m - 1, 100)))].into_iter().collect();
        assert_eq!(estimate_rows(&all, &g, 0), 50);
        assert_eq!(estimate_rows(&all, &g, m), 50);
        assert_eq!(estimate_rows(&all, &g, 2 * m), 0);
        assert_eq!(files_of(&all, &g, &[m, 2 * m]), vec![PathBuf::from("a")]);
    }
}
