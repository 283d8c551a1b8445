//! Custom aggregate metrics: SQL aggregates (DataFusion) per window, model and slice, over the
//! same rows the accumulators saw, attached to the profile rows of their groups.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::prelude::SessionContext;

use super::accumulate::{CustomValues, GroupKey};
use super::{Monitor, MonitorError, q, qerr};
use crate::inference_log::read::new_ctx;
use crate::monitor::accum::GroupAcc;
use crate::monitor::rows::ProfileRow;
use crate::monitor::spec::{CustomKind, CustomMetric, Granularity};

impl Monitor {
    /// (SQL expression, column it belongs to; None = `:table`) for an aggregate metric.
    pub(super) fn aggregate_exprs(&self, m: &CustomMetric) -> Vec<(String, Option<String>)> {
        let fill = |col: Option<&str>| {
            let mut d = m.definition.replace("{{prediction_col}}", &q(&self.spec.prediction_col));
            d = d.replace("{{label_col}}", &q(&self.spec.label_col));
            if let Some(c) = col {
                d = d.replace("{{input_column}}", &q(c));
            }
            d
        };
        if m.input_columns.is_empty() {
            vec![(fill(None), None)]
        } else {
            m.input_columns.iter().map(|c| (fill(Some(c)), Some(c.clone()))).collect()
        }
    }

    /// Custom aggregate metrics per group: (group, column or None) -> values in metric order.
    pub(super) async fn custom_aggregates(
        &self,
        files: &[PathBuf],
        labels: &[PathBuf],
        g: &Granularity,
        windows: &[i64],
        groups: &HashMap<GroupKey, GroupAcc>,
    ) -> Result<CustomValues, MonitorError> {
        let aggs: Vec<&CustomMetric> =
            self.spec.custom_metrics.iter().filter(|m| m.kind == CustomKind::Aggregate).collect();
        let mut out: CustomValues = HashMap::new();
        if aggs.is_empty() {
            return Ok(out);
        }
        let ctx = new_ctx();
        self.view(&ctx, files, labels).await?;
        // every (metric index, expression, column)
        let mut exprs: Vec<(usize, String, Option<String>)> = Vec::new();
        for (i, m) in aggs.iter().enumerate() {
            for (e, c) in self.aggregate_exprs(m) {
                exprs.push((i, e, c));
            }
        }
        let s = &self.spec;
        let has_shadow = layout_has_shadow(&ctx).await;
        let variants: Vec<(bool, Option<usize>)> = [true, false]
            .into_iter()
            .flat_map(|per_model| {
                std::iter::once((per_model, None)).chain((0..s.slicing_exprs.len()).map(move |j| (per_model, Some(j))))
            })
            .collect();
        for (per_model, slice) in variants {
            let model = if per_model {
                format!("CAST(({}) AS VARCHAR)", s.model_id_col)
            } else {
                "CAST(NULL AS VARCHAR)".into()
            };
            let sl = match slice {
                Some(j) => {
                    format!("CAST(({}) AS VARCHAR)", s.slicing_exprs.get(j).map(String::as_str).unwrap_or("NULL"))
                }
                None => "CAST(NULL AS VARCHAR)".into(),
            };
            let shadow = if per_model || !has_shadow { "TRUE" } else { "NOT coalesce(is_shadow, FALSE)" };
            let cols: Vec<String> =
                exprs.iter().enumerate().map(|(k, (_, e, _))| format!("CAST(({e}) AS DOUBLE) AS __m{k}")).collect();
            let sql = format!(
                "SELECT {w} AS __w, {model} AS __model, {sl} AS __s, {cols} FROM v WHERE ({f}) AND ({r}) AND {shadow} \
                 GROUP BY {w}, {model}, {sl}",
                w = self.window_expr(g),
                cols = cols.join(", "),
                f = s.filter,
                r = self.ranges_sql(g, windows),
            );
            let batches = ctx
                .sql(&sql)
                .await
                .map_err(|e| MonitorError::Config(format!("custom metrics: {e}")))?
                .collect()
                .await
                .map_err(qerr)?;
            for b in batches {
                let w = cast(b.column(0), &DataType::Int64).map_err(qerr)?;
                let m = cast(b.column(1), &DataType::Utf8).map_err(qerr)?;
                let sv = cast(b.column(2), &DataType::Utf8).map_err(qerr)?;
                let (w, m, sv) = (w.as_primitive::<Int64Type>(), m.as_string::<i32>(), sv.as_string::<i32>());
                for r in 0..b.num_rows() {
                    if (slice.is_some() && sv.is_null(r)) || (per_model && m.is_null(r)) {
                        continue;
                    }
                    let key = GroupKey {
                        window: w.value(r) * g.width_us + g.offset_us,
                        model: per_model.then(|| Arc::from(m.value(r))),
                        slice: slice.map(|j| (j, Arc::from(sv.value(r)))),
                    };
                    if !groups.contains_key(&key) {
                        continue;
                    }
                    for (k, (i, _, c)) in exprs.iter().enumerate() {
                        let v = b.column(3 + k);
                        let v = cast(v, &DataType::Float64).map_err(qerr)?;
                        let v = v.as_primitive::<Float64Type>();
                        let val = (!v.is_null(r)).then(|| v.value(r));
                        let slot = out.entry((key.clone(), c.clone())).or_insert_with(|| vec![None; aggs.len()]);
                        if let Some(x) = slot.get_mut(*i) {
                            *x = val;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Sets the custom aggregate values of `rows` (of group `k`); none computed: all null.
    pub(super) fn fill_custom(&self, rows: &mut [ProfileRow], k: &GroupKey, custom: &CustomValues) {
        let naggs = self.spec.custom_metrics.iter().filter(|m| m.kind == CustomKind::Aggregate).count();
        for r in rows.iter_mut() {
            let col = (r.column_name != ":table").then(|| r.column_name.clone());
            r.custom = custom.get(&(k.clone(), col)).cloned().unwrap_or_else(|| vec![None; naggs]);
        }
    }
}

async fn layout_has_shadow(ctx: &SessionContext) -> bool {
    match ctx.table("v").await {
        Ok(df) => df.schema().as_arrow().field_with_name("is_shadow").is_ok(),
        Err(_) => false,
    }
}
