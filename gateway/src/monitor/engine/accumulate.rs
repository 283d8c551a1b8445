//! Streaming a chunk's rows into bounded accumulators, one per group: (window, model id or all
//! models, slice or the whole). Slices are the top values of each slicing expression per window.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::columns::Columns;
use super::layout::Layout;
use super::{Monitor, MonitorError, RefreshReport, q, qerr};
use crate::inference_log::read::new_ctx;
use crate::monitor::accum::{ColAcc, GroupAcc};
use crate::monitor::spec::{Granularity, ProblemType};

/// Slices per slicing expression and window (by row count, ties by value).
const MAX_SLICE_VALUES: usize = 100;

/// One accumulator's group: a window, a model id (`None`: all primary models) and a slice
/// (`None`: the whole window).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct GroupKey {
    pub window: i64,
    pub model: Option<Arc<str>>,
    pub slice: Option<(usize, Arc<str>)>,
}

/// Custom aggregate values per (group, column or `None` for `:table`), in metric order.
pub(super) type CustomValues = HashMap<(GroupKey, Option<String>), Vec<Option<f64>>>;

impl Monitor {
    /// The finished accumulators and custom aggregates of a chunk of windows (none without files).
    pub(super) async fn chunk_groups(
        &self,
        chunk_files: &[PathBuf],
        labels: &[PathBuf],
        layout: &Layout,
        g: &Granularity,
        chunk: &[i64],
        report: &mut RefreshReport,
    ) -> Result<(HashMap<GroupKey, GroupAcc>, CustomValues), MonitorError> {
        if chunk_files.is_empty() {
            return Ok((HashMap::new(), HashMap::new()));
        }
        let (mut groups, rows) = self.accumulate(chunk_files, labels, layout, g, chunk).await?;
        report.rows_read += rows;
        for a in groups.values_mut() {
            a.finish();
        }
        let custom = self.custom_aggregates(chunk_files, labels, g, chunk, &groups).await?;
        Ok((groups, custom))
    }

    /// Top slice values per window and slicing expression.
    async fn top_slices(
        &self,
        ctx: &SessionContext,
        g: &Granularity,
        windows: &[i64],
    ) -> Result<HashMap<(i64, usize), BTreeSet<Arc<str>>>, MonitorError> {
        let mut out: HashMap<(i64, usize), BTreeSet<Arc<str>>> = HashMap::new();
        for (j, e) in self.spec.slicing_exprs.iter().enumerate() {
            let sql = format!(
                "SELECT __w, __s, count(*) AS __c FROM (SELECT {w} AS __w, CAST(({e}) AS VARCHAR) AS __s FROM v WHERE ({f}) AND ({r})) \
                 WHERE __s IS NOT NULL GROUP BY __w, __s",
                w = self.window_expr(g),
                f = self.spec.filter,
                r = self.ranges_sql(g, windows)
            );
            let batches = ctx.sql(&sql).await.map_err(qerr)?.collect().await.map_err(qerr)?;
            let mut per: HashMap<i64, Vec<(i64, Arc<str>)>> = HashMap::new();
            for b in batches {
                let w = cast(b.column(0), &DataType::Int64).map_err(qerr)?;
                let s = cast(b.column(1), &DataType::Utf8).map_err(qerr)?;
                let c = cast(b.column(2), &DataType::Int64).map_err(qerr)?;
                let (w, s, c) = (w.as_primitive::<Int64Type>(), s.as_string::<i32>(), c.as_primitive::<Int64Type>());
                for i in 0..b.num_rows() {
                    per.entry(w.value(i) * g.width_us + g.offset_us)
                        .or_default()
                        .push((c.value(i), Arc::from(s.value(i))));
                }
            }
            for (w, mut v) in per {
                v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                v.truncate(MAX_SLICE_VALUES);
                out.insert((w, j), v.into_iter().map(|(_, s)| s).collect());
            }
        }
        Ok(out)
    }

    /// Streams the rows of `windows` into per-group accumulators.
    async fn accumulate(
        &self,
        files: &[PathBuf],
        labels: &[PathBuf],
        layout: &Layout,
        g: &Granularity,
        windows: &[i64],
    ) -> Result<(HashMap<GroupKey, GroupAcc>, u64), MonitorError> {
        let ctx = new_ctx();
        self.view(&ctx, files, labels).await?;
        let tops = self.top_slices(&ctx, g, windows).await?;
        let s = &self.spec;
        let mut select = vec![
            format!("CAST({} AS BIGINT) AS __ts", q(&s.timestamp_col)),
            format!("CAST(({}) AS VARCHAR) AS __model", s.model_id_col),
            if layout.view_schema.field_with_name("is_shadow").is_ok() {
                "coalesce(is_shadow, FALSE) AS __shadow".to_string()
            } else {
                "FALSE AS __shadow".to_string()
            },
        ];
        for (i, n) in layout.names.iter().enumerate() {
            let ty = if layout.numeric.get(i).copied().unwrap_or(false) { "DOUBLE" } else { "VARCHAR" };
            select.push(format!("CAST({} AS {ty}) AS __c{i}", q(n)));
        }
        match s.problem_type {
            ProblemType::Classification => {
                select.push(format!("CAST({} AS VARCHAR) AS __label", q(&s.label_col)));
                select.push(format!("CAST({} AS VARCHAR) AS __pred", q(&s.prediction_col)));
            }
            ProblemType::Regression => {
                let label = if s.label_col == "label" { "label_value".to_string() } else { q(&s.label_col) };
                select.push(format!("TRY_CAST({label} AS DOUBLE) AS __label"));
                select.push(format!("TRY_CAST({} AS DOUBLE) AS __pred", q(&s.prediction_col)));
            }
        }
        if layout.has_proba {
            select.push("probabilities AS __proba".into());
        }
        for (j, e) in s.slicing_exprs.iter().enumerate() {
            select.push(format!("CAST(({e}) AS VARCHAR) AS __s{j}"));
        }
        let sql =
            format!("SELECT {} FROM v WHERE ({}) AND ({})", select.join(", "), s.filter, self.ranges_sql(g, windows));
        let mut stream = ctx.sql(&sql).await.map_err(qerr)?.execute_stream().await.map_err(qerr)?;
        let mut groups: HashMap<GroupKey, GroupAcc> = HashMap::new();
        let mut models: HashMap<String, Arc<str>> = HashMap::new();
        let mut rows = 0u64;
        let cap = s.max_exact_values;
        let ncols = layout.names.len();
        let nslices = s.slicing_exprs.len();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(qerr)?;
            rows += batch.num_rows() as u64;
            let b = Columns::new(&batch, ncols, nslices, layout)?;
            for r in 0..batch.num_rows() {
                let Some(ts) = b.ts.get(r).copied().flatten() else { continue };
                let w = g.window_of(ts);
                let model: Option<Arc<str>> =
                    b.model.get(r).map(|m| models.entry(m.to_string()).or_insert_with(|| Arc::from(m)).clone());
                let mut slices: Vec<Option<(usize, Arc<str>)>> = vec![None];
                for j in 0..nslices {
                    if let Some(v) = b.slice(j, r)
                        && let Some(top) = tops.get(&(w, j))
                        && let Some(v) = top.get(v)
                    {
                        slices.push(Some((j, v.clone())));
                    }
                }
                let mut model_keys: Vec<Option<Arc<str>>> = vec![model.clone()];
                if !b.shadow(r) {
                    model_keys.push(None);
                }
                let proba = b.proba(r);
                for m in &model_keys {
                    for sl in &slices {
                        let key = GroupKey { window: w, model: m.clone(), slice: sl.clone() };
                        let acc = groups.entry(key).or_insert_with(|| GroupAcc::new(&layout.numeric));
                        acc.rows += 1;
                        for (i, c) in acc.cols.iter_mut().enumerate() {
                            match c {
                                ColAcc::Num(a) => a.push(b.num(i, r), cap),
                                ColAcc::Str(a) => a.push(b.str(i, r)),
                            }
                        }
                        match s.problem_type {
                            ProblemType::Classification => {
                                if let (Some(t), Some(p)) = (b.label_str(r), b.pred_str(r)) {
                                    acc.quality.push_class(t, p, proba.clone(), cap);
                                }
                            }
                            ProblemType::Regression => {
                                if let (Some(t), Some(p)) = (b.label_num(r), b.pred_num(r))
                                    && t.is_finite()
                                    && p.is_finite()
                                {
                                    acc.quality.push_value(t, p);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok((groups, rows))
    }
}
