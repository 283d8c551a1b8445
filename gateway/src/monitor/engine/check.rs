//! Every expression of the spec (model id, filter, slices, custom metrics) planned against the
//! table's schema before any work, so a bad one is reported by name instead of failing a refresh
//! halfway.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;

use super::{Monitor, MonitorError, q, qerr};
use crate::inference_log::read::new_ctx;
use crate::monitor::custom;
use crate::monitor::spec::CustomKind;

impl Monitor {
    /// Plans every expression of the spec against the table's schema, so a bad expression is
    /// reported (naming it) before any work. `schema` is the inference table's (no labels).
    pub async fn check(&self, schema: SchemaRef) -> Result<(), MonitorError> {
        let ctx = new_ctx();
        let empty = MemTable::try_new(schema.clone(), vec![vec![]]).map_err(qerr)?;
        ctx.register_table("t", Arc::new(empty)).map_err(qerr)?;
        let has = |c: &str| schema.field_with_name(c).is_ok();
        let sql = if has("label") {
            "SELECT * FROM t".to_string()
        } else {
            "SELECT t.*, CAST(NULL AS VARCHAR) AS label, CAST(NULL AS DOUBLE) AS label_value FROM t".to_string()
        };
        let df = ctx.sql(&sql).await.map_err(qerr)?;
        let vschema = Arc::new(df.schema().as_arrow().clone());
        ctx.register_table("v", df.into_view()).map_err(qerr)?;
        // the monitored columns exist and have usable types
        self.layout(vschema, true)?;
        let plan = |sql: String, what: String| {
            let ctx = ctx.clone();
            async move {
                match ctx.sql(&sql).await {
                    Ok(df) => df
                        .create_physical_plan()
                        .await
                        .map(|_| ())
                        .map_err(|e| MonitorError::Config(format!("{what}: {e}"))),
                    Err(e) => Err(MonitorError::Config(format!("{what}: {e}"))),
                }
            }
        };
        let s = &self.spec;
        plan(
            format!("SELECT CAST(({}) AS VARCHAR) FROM v", s.model_id_col),
            format!("model_id_col '{}'", s.model_id_col),
        )
        .await?;
        plan(format!("SELECT * FROM v WHERE {}", s.filter), format!("filter '{}'", s.filter)).await?;
        for e in &s.slicing_exprs {
            plan(format!("SELECT CAST(({e}) AS VARCHAR) FROM v"), format!("slicing expression '{e}'")).await?;
        }
        for m in &s.custom_metrics {
            let what = format!("custom metric '{}'", m.name);
            match m.kind {
                CustomKind::Aggregate => {
                    // as the refresh runs it: grouped, so a non-aggregate expression is refused
                    let w = format!("(CAST({} AS BIGINT) / 1000000)", q(&s.timestamp_col));
                    for (expr, _) in self.aggregate_exprs(m) {
                        plan(format!("SELECT {w}, CAST(({expr}) AS DOUBLE) FROM v GROUP BY {w}"), what.clone()).await?;
                    }
                }
                CustomKind::Derived | CustomKind::Drift => {}
            }
        }
        // derived and drift metrics: plan over a one-row table of metric columns
        let metrics = custom::metric_schema(&self.custom_names(&[CustomKind::Aggregate]));
        let mctx = new_ctx();
        for n in ["m", "current_df", "base_df"] {
            let t = MemTable::try_new(metrics.clone(), vec![vec![]]).map_err(qerr)?;
            mctx.register_table(n, Arc::new(t)).map_err(qerr)?;
        }
        for m in &s.custom_metrics {
            let sql = match m.kind {
                CustomKind::Derived => format!("SELECT CAST(({}) AS DOUBLE) FROM m", m.definition),
                CustomKind::Drift => {
                    format!("SELECT CAST(({}) AS DOUBLE) FROM current_df, base_df", custom::drift_sql(&m.definition))
                }
                CustomKind::Aggregate => continue,
            };
            let what = format!("custom metric '{}'", m.name);
            let r = match mctx.sql(&sql).await {
                Ok(df) => df.create_physical_plan().await.map(|_| ()),
                Err(e) => Err(e),
            };
            r.map_err(|e| MonitorError::Config(format!("{what}: {e}")))?;
        }
        Ok(())
    }
}
