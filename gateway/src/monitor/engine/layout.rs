//! The monitored columns (from the spec, or, as Lakehouse Monitoring does, every numeric, string and
//! boolean column that is not a system column) and
//! how to read them, checked against the table's schema; and the fingerprint of the spec and
//! columns the outputs were computed with.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};

use super::{Monitor, MonitorError, qerr};
use crate::inference_log::read::new_ctx;
use crate::monitor::spec::ProblemType;

/// The monitored columns and how to read them.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub names: Vec<String>,
    pub numeric: Vec<bool>,
    pub has_proba: bool,
    pub view_schema: SchemaRef,
}

/// System columns of an inference table (Sluice's, and Databricks' own names) that are not
/// profiled by default.
const SYSTEM_COLUMNS: &[&str] = &[
    "request_id",
    "client_request_id",
    "databricks_request_id",
    "row_index",
    "timestamp",
    "timestamp_ms",
    "date",
    "endpoint",
    "served_model",
    "served_entity_id",
    "model_name",
    "model_version",
    "is_shadow",
    "status_code",
    "error",
    "latency_ms",
    "execution_ms",
    "execution_time_ms",
    "queue_ms",
    "batch_size",
    "sampling_fraction",
    "requester",
    "request",
    "response",
    "request_json",
    "response_json",
    "request_metadata",
    "logging_error_codes",
    "probabilities",
    "label_value",
];

pub(super) fn is_numeric(t: &DataType) -> bool {
    t.is_numeric()
}

pub(super) fn is_stringish(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Boolean)
}

fn column_list(schema: &Schema) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

impl Monitor {
    /// Reads the schema of the table and its labels, settles the problem type, checks the spec
    /// against it and works out the layout; a new fingerprint starts the outputs over.
    pub(super) async fn prepare_layout(
        &mut self,
        files: &[std::path::PathBuf],
        labels: &[std::path::PathBuf],
    ) -> Result<Layout, MonitorError> {
        let ctx = new_ctx();
        self.view(&ctx, files, labels).await?;
        let vschema: SchemaRef = Arc::new(ctx.table("v").await.map_err(qerr)?.schema().as_arrow().clone());
        let tschema: SchemaRef = Arc::new(ctx.table("t").await.map_err(qerr)?.schema().as_arrow().clone());
        self.resolve_problem_type(&tschema);
        self.check(tschema).await?;
        let layout = self.layout(vschema, !labels.is_empty())?;
        let fp = self.fingerprint(&layout);
        if self.state.fingerprint != fp {
            self.reset_outputs(fp).await?;
        }
        Ok(layout)
    }

    /// The monitored columns, checked against the view's schema.
    pub(super) fn layout(&self, schema: SchemaRef, has_labels: bool) -> Result<Layout, MonitorError> {
        let s = &self.spec;
        let names: Vec<String> = match &s.columns {
            Some(c) => c.clone(),
            None => {
                // every feature column, numeric or categorical (strings, booleans), as Lakehouse
                // Monitoring profiles them; nested and time columns are left out
                let own = [&s.prediction_col, &s.label_col, &s.timestamp_col, &s.model_id_col];
                let mut v: Vec<String> = schema
                    .fields()
                    .iter()
                    .filter(|f| is_numeric(f.data_type()) || is_stringish(f.data_type()))
                    .map(|f| f.name().clone())
                    .filter(|n| !SYSTEM_COLUMNS.contains(&n.as_str()) && !own.contains(&n))
                    .collect();
                if schema.field_with_name(&s.prediction_col).is_ok() {
                    v.push(s.prediction_col.clone());
                }
                if has_labels {
                    match s.problem_type {
                        ProblemType::Classification => v.push(s.label_col.clone()),
                        ProblemType::Regression => v.push("label_value".into()),
                    }
                }
                v
            }
        };
        let mut numeric = Vec::new();
        for n in &names {
            let f = schema.field_with_name(n).map_err(|_| {
                MonitorError::Config(format!(
                    "monitored column '{n}' is not in the table (columns: {})",
                    column_list(&schema)
                ))
            })?;
            let t = f.data_type();
            if is_numeric(t) {
                numeric.push(true);
            } else if is_stringish(t) {
                numeric.push(false);
            } else {
                return Err(MonitorError::Config(format!(
                    "column '{n}' has type {t}; only numeric and string columns can be monitored"
                )));
            }
        }
        for c in [&s.timestamp_col, &s.prediction_col] {
            if schema.field_with_name(c).is_err() {
                return Err(MonitorError::Config(format!(
                    "column '{c}' is not in the table (columns: {})",
                    column_list(&schema)
                )));
            }
        }
        let has_proba = s.problem_type == ProblemType::Classification
            && matches!(schema.field_with_name("probabilities").map(|f| f.data_type().clone()), Ok(DataType::Map(..)));
        Ok(Layout { names, numeric, has_proba, view_schema: schema })
    }

    fn fingerprint(&self, layout: &Layout) -> String {
        format!("v2|{:?}|{:?}", self.spec_for_fingerprint(), layout.names)
    }

    pub(super) fn spec_for_fingerprint(&self) -> String {
        let s = &self.spec;
        format!(
            "{:?}|{:?}|{}|{}|{}|{}|{:?}|{}|{:?}|{}|{:?}",
            s.problem_type,
            s.granularities,
            s.timestamp_col,
            s.model_id_col,
            s.prediction_col,
            s.label_col,
            s.slicing_exprs,
            s.filter,
            s.baseline,
            s.max_exact_values,
            s.custom_metrics
        )
    }

    /// Without a configured problem type: classification when the prediction is a string.
    pub fn resolve_problem_type(&mut self, schema: &Schema) {
        if self.spec.infer_problem_type
            && let Ok(f) = schema.field_with_name(&self.spec.prediction_col)
        {
            self.spec.problem_type =
                if is_stringish(f.data_type()) { ProblemType::Classification } else { ProblemType::Regression };
        }
    }
}
