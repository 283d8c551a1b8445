//! Custom metrics, evaluated by DataFusion: aggregate metrics run as SQL aggregates over the rows
//! (in the engine); derived metrics are expressions over the metric columns of the same profile
//! row; drift metrics compare a current row (`{{current_df}}`) with its reference (`{{base_df}}`).
//! Metric columns are the profile's numeric metrics (`precision.macro` is `precision_macro`)
//! plus the aggregate metrics by name.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::error::MonitorError;
use super::rows::{DriftRow, ProfileRow};
use super::spec::{CustomKind, CustomMetric, PROFILE_METRICS};

fn column_name(metric: &str) -> String {
    metric.replace('.', "_")
}

/// Schema of the metric table derived/drift expressions run over.
pub fn metric_schema(aggregates: &[String]) -> SchemaRef {
    let mut fields: Vec<Field> = vec![Field::new("__i", DataType::Int64, false)];
    fields.extend(PROFILE_METRICS.iter().map(|m| Field::new(column_name(m), DataType::Float64, true)));
    fields.extend(aggregates.iter().map(|a| Field::new(a, DataType::Float64, true)));
    Arc::new(Schema::new(fields))
}

/// `{{current_df}}.x - {{base_df}}.x` -> `current_df.x - base_df.x`.
pub fn drift_sql(definition: &str) -> String {
    definition.replace("{{current_df}}", "current_df").replace("{{base_df}}", "base_df")
}

fn metric_batch(rows: &[&ProfileRow], aggregates: &[String]) -> Result<RecordBatch, MonitorError> {
    let schema = metric_schema(aggregates);
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from((0..rows.len() as i64).collect::<Vec<_>>()))];
    for m in PROFILE_METRICS {
        cols.push(Arc::new(rows.iter().map(|r| r.metric(m)).collect::<Float64Array>()));
    }
    for (i, _) in aggregates.iter().enumerate() {
        cols.push(Arc::new(rows.iter().map(|r| r.custom.get(i).copied().flatten()).collect::<Float64Array>()));
    }
    RecordBatch::try_new(schema, cols).map_err(|e| MonitorError::Query(e.to_string()))
}

async fn run(ctx: &SessionContext, sql: &str, name: &str, n: usize) -> Result<Vec<Option<f64>>, MonitorError> {
    let batches = ctx
        .sql(sql)
        .await
        .map_err(|e| MonitorError::Config(format!("custom metric '{name}': {e}")))?
        .collect()
        .await
        .map_err(|e| MonitorError::Config(format!("custom metric '{name}': {e}")))?;
    let mut out = vec![None; n];
    for b in batches {
        let idx = cast(b.column(0), &DataType::Int64).map_err(|e| MonitorError::Query(e.to_string()))?;
        let val = cast(b.column(1), &DataType::Float64).map_err(|e| MonitorError::Query(e.to_string()))?;
        let (idx, val) = (idx.as_primitive::<Int64Type>(), val.as_primitive::<Float64Type>());
        for r in 0..b.num_rows() {
            if let Some(slot) = out.get_mut(idx.value(r) as usize) {
                *slot = (!val.is_null(r)).then(|| val.value(r)).filter(|v| v.is_finite());
            }
        }
    }
    Ok(out)
}

fn aggregate_names(metrics: &[CustomMetric]) -> Vec<String> {
    metrics.iter().filter(|m| m.kind == CustomKind::Aggregate).map(|m| m.name.clone()).collect()
}

/// Appends each derived metric's value to every row's `custom` (after the aggregates).
pub async fn derived(metrics: &[CustomMetric], rows: &mut [ProfileRow]) -> Result<(), MonitorError> {
    let derived: Vec<&CustomMetric> = metrics.iter().filter(|m| m.kind == CustomKind::Derived).collect();
    if derived.is_empty() || rows.is_empty() {
        return Ok(());
    }
    let aggs = aggregate_names(metrics);
    let refs: Vec<&ProfileRow> = rows.iter().collect();
    let batch = metric_batch(&refs, &aggs)?;
    let ctx = crate::analysis::session(SessionConfig::new());
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(|e| MonitorError::Query(e.to_string()))?;
    ctx.register_table("m", Arc::new(table)).map_err(|e| MonitorError::Query(e.to_string()))?;
    let n = rows.len();
    let mut values = Vec::new();
    for m in &derived {
        values.push(run(&ctx, &format!("SELECT __i, CAST(({}) AS DOUBLE) FROM m", m.definition), &m.name, n).await?);
    }
    for (i, r) in rows.iter_mut().enumerate() {
        r.custom.resize(aggs.len(), None);
        for v in &values {
            r.custom.push(v.get(i).copied().flatten());
        }
    }
    Ok(())
}

/// Fills each drift row's custom drift metrics: `current[i]` indexes `profile` for drift row i,
/// `reference[i]` is its comparison profile row.
pub async fn drift_metrics(
    metrics: &[CustomMetric],
    profile: &[ProfileRow],
    current: &[usize],
    reference: &[ProfileRow],
    drift: &mut [DriftRow],
) -> Result<(), MonitorError> {
    let drifts: Vec<&CustomMetric> = metrics.iter().filter(|m| m.kind == CustomKind::Drift).collect();
    if drifts.is_empty() || drift.is_empty() {
        return Ok(());
    }
    let aggs = aggregate_names(metrics);
    let cur: Vec<&ProfileRow> = current.iter().filter_map(|&i| profile.get(i)).collect();
    let base: Vec<&ProfileRow> = reference.iter().collect();
    if cur.len() != drift.len() || base.len() != drift.len() {
        return Err(MonitorError::Query("internal: drift rows and their profiles do not line up".into()));
    }
    let ctx = crate::analysis::session(SessionConfig::new());
    for (name, rows) in [("current_df", &cur), ("base_df", &base)] {
        let batch = metric_batch(rows, &aggs)?;
        let t = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(|e| MonitorError::Query(e.to_string()))?;
        ctx.register_table(name, Arc::new(t)).map_err(|e| MonitorError::Query(e.to_string()))?;
    }
    let n = drift.len();
    let mut values = Vec::new();
    for m in &drifts {
        let sql = format!(
            "SELECT current_df.__i, CAST(({}) AS DOUBLE) FROM current_df JOIN base_df ON current_df.__i = base_df.__i",
            drift_sql(&m.definition)
        );
        values.push(run(&ctx, &sql, &m.name, n).await?);
    }
    for (i, r) in drift.iter_mut().enumerate() {
        r.custom = values.iter().map(|v| v.get(i).copied().flatten()).collect();
    }
    Ok(())
}
