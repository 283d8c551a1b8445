//! The baseline's accumulators: the baseline table read once per layout, whole and per slice
//! (a slicing expression that the baseline cannot evaluate compares with the whole baseline).

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;

use super::columns::Columns;
use super::layout::Layout;
use super::{Monitor, MonitorError, q, qerr, register_files};
use crate::inference_log::read::new_ctx;
use crate::monitor::accum::{ColAcc, GroupAcc};
use crate::monitor::rows::{self, ProfileRow, RowKey};
use crate::monitor::spec::CustomKind;

/// The baseline's accumulators: whole (`None`) and per slice.
#[derive(Debug, Default)]
pub(super) struct BaselineGroups {
    pub groups: HashMap<Option<(usize, Arc<str>)>, GroupAcc>,
    /// Slice expressions that cannot be evaluated on the baseline (compare with the whole).
    pub unsliced: Vec<bool>,
    pub profile: HashMap<Option<(usize, Arc<str>)>, Vec<ProfileRow>>,
}

impl Monitor {
    /// Baseline accumulators, computed once per layout.
    pub(super) async fn baseline_groups(
        &mut self,
        layout: &Layout,
    ) -> Result<Option<Arc<BaselineGroups>>, MonitorError> {
        let Some(path) = self.spec.baseline.clone() else { return Ok(None) };
        let fp = format!("{:?}|{:?}", layout.names, layout.numeric);
        if let Some((f, b)) = &self.baseline
            && *f == fp
        {
            return Ok(Some(b.clone()));
        }
        if !path.is_file() {
            return Err(MonitorError::Config(format!("baseline {} is not a file", path.display())));
        }
        let ctx = new_ctx();
        register_files(&ctx, "b", std::slice::from_ref(&path)).await?;
        let schema = ctx.table("b").await.map_err(qerr)?.schema().as_arrow().clone();
        let mut select = Vec::new();
        for (i, n) in layout.names.iter().enumerate() {
            let ty = if layout.numeric.get(i).copied().unwrap_or(false) { "DOUBLE" } else { "VARCHAR" };
            if schema.field_with_name(n).is_ok() {
                select.push(format!("CAST({} AS {ty}) AS __c{i}", q(n)));
            } else {
                select.push(format!("CAST(NULL AS {ty}) AS __c{i}"));
            }
        }
        let mut unsliced = Vec::new();
        for (j, e) in self.spec.slicing_exprs.iter().enumerate() {
            let ok = ctx.sql(&format!("SELECT CAST(({e}) AS VARCHAR) FROM b")).await.is_ok();
            unsliced.push(!ok);
            select.push(if ok {
                format!("CAST(({e}) AS VARCHAR) AS __s{j}")
            } else {
                format!("CAST(NULL AS VARCHAR) AS __s{j}")
            });
        }
        let sql = format!("SELECT {} FROM b", select.join(", "));
        let mut stream = ctx.sql(&sql).await.map_err(qerr)?.execute_stream().await.map_err(qerr)?;
        let mut groups: HashMap<Option<(usize, Arc<str>)>, GroupAcc> = HashMap::new();
        let ncols = layout.names.len();
        let nslices = self.spec.slicing_exprs.len();
        let cap = self.spec.max_exact_values;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(qerr)?;
            let b = Columns::baseline(&batch, ncols, nslices, layout)?;
            for r in 0..batch.num_rows() {
                let mut keys: Vec<Option<(usize, Arc<str>)>> = vec![None];
                for j in 0..nslices {
                    if let Some(v) = b.slice(j, r) {
                        keys.push(Some((j, Arc::from(v))));
                    }
                }
                for k in keys {
                    let acc = groups.entry(k).or_insert_with(|| GroupAcc::new(&layout.numeric));
                    acc.rows += 1;
                    for (i, c) in acc.cols.iter_mut().enumerate() {
                        match c {
                            ColAcc::Num(a) => a.push(b.num(i, r), cap),
                            ColAcc::Str(a) => a.push(b.str(i, r)),
                        }
                    }
                }
            }
        }
        let mut profile = HashMap::new();
        for (k, a) in groups.iter_mut() {
            a.finish();
            let key = RowKey {
                window_start: 0,
                window_end: 0,
                granularity: Arc::from(""),
                model_id: None,
                slice_key: None,
                slice_value: k.as_ref().map(|(_, v)| v.clone()),
            };
            let mut rows = rows::profile(&key, &layout.names, a, self.spec.problem_type);
            let naggs = self.spec.custom_metrics.iter().filter(|m| m.kind == CustomKind::Aggregate).count();
            for r in rows.iter_mut() {
                r.custom = vec![None; naggs];
            }
            crate::monitor::custom::derived(&self.spec.custom_metrics, &mut rows).await?;
            profile.insert(k.clone(), rows);
        }
        let b = Arc::new(BaselineGroups { groups, unsliced, profile });
        self.baseline = Some((fp, b.clone()));
        Ok(Some(b))
    }
}
