//! One recomputed window: its profile rows per group, its drift rows (against the window before
//! and against the baseline), custom derived and drift metrics, and its rows staged into the two metric tables.

use std::collections::HashMap;
use std::sync::Arc;

use super::accumulate::{CustomValues, GroupKey};
use super::baseline::BaselineGroups;
use super::layout::Layout;
use super::{Monitor, MonitorError, qerr};
use crate::monitor::accum::GroupAcc;
use crate::monitor::output::{MetricTables, Pending};
use crate::monitor::rows::{self, DriftRow, ProfileRow, RowKey};
use crate::monitor::spec::{CustomKind, Granularity};
use crate::monitor::{custom, output};

impl Monitor {
    /// Profile and drift rows of window `w`.
    pub(super) async fn window_rows(
        &self,
        g: &Granularity,
        w: i64,
        groups: &HashMap<GroupKey, GroupAcc>,
        custom: &CustomValues,
        layout: &Layout,
        baseline: Option<&BaselineGroups>,
    ) -> Result<(Vec<ProfileRow>, Vec<DriftRow>), MonitorError> {
        let gran: Arc<str> = Arc::from(g.name.as_str());
        let mut keys: Vec<&GroupKey> = groups.keys().filter(|k| k.window == w).collect();
        keys.sort();
        let mut profile = Vec::new();
        let mut drift = Vec::new();
        // for each drift row, its comparison profile row (only custom drift metrics read them)
        let want_refs = self.spec.custom_metrics.iter().any(|m| m.kind == CustomKind::Drift);
        let mut refs: Vec<ProfileRow> = Vec::new();
        let mut cur_for_drift: Vec<usize> = Vec::new();
        let mut baseline_rows: Vec<ProfileRow> = Vec::new();
        for k in keys {
            let Some(acc) = groups.get(k) else { continue };
            let row_key = |start: i64| RowKey {
                window_start: start,
                window_end: start + g.width_us,
                granularity: gran.clone(),
                model_id: k.model.clone(),
                slice_key: k
                    .slice
                    .as_ref()
                    .and_then(|(j, _)| self.spec.slicing_exprs.get(*j).map(|e| Arc::from(e.as_str()))),
                slice_value: k.slice.as_ref().map(|(_, v)| v.clone()),
            };
            let key = row_key(w);
            let mut p = rows::profile(&key, &layout.names, acc, self.spec.problem_type);
            self.fill_custom(&mut p, k, custom);
            let first = profile.len();
            profile.extend(p);
            let prev_key = GroupKey { window: w - g.width_us, model: k.model.clone(), slice: k.slice.clone() };
            if let Some(prev) = groups.get(&prev_key) {
                let d = rows::drift(&key, &layout.names, acc, prev, "CONSECUTIVE", Some((w - g.width_us, w)));
                let mut pp = Vec::new();
                if want_refs {
                    pp = rows::profile(&row_key(w - g.width_us), &layout.names, prev, self.spec.problem_type);
                    self.fill_custom(&mut pp, &prev_key, custom);
                }
                for (i, r) in d.into_iter().enumerate() {
                    drift.push(r);
                    cur_for_drift.push(first + i);
                    if let Some(p) = pp.get(i).or(pp.first()) {
                        refs.push(p.clone());
                    }
                }
            }
            if let Some(b) = baseline {
                let bkey = match &k.slice {
                    Some((j, v)) if !b.unsliced.get(*j).copied().unwrap_or(true) => Some((*j, v.clone())),
                    _ => None,
                };
                let (bacc, bprof) = match (b.groups.get(&bkey), b.profile.get(&bkey)) {
                    (Some(a), Some(p)) => (Some(a), Some(p)),
                    _ if bkey.is_some() => (None, None),
                    _ => (b.groups.get(&None), b.profile.get(&None)),
                };
                if let (Some(bacc), Some(bprof)) = (bacc, bprof) {
                    let d = rows::drift(&key, &layout.names, acc, bacc, "BASELINE", None);
                    for (i, r) in d.into_iter().enumerate() {
                        drift.push(r);
                        cur_for_drift.push(first + i);
                        if let Some(p) = bprof.get(i).or(bprof.first()) {
                            refs.push(p.clone());
                        }
                    }
                    // the baseline's profile beside the window's, as Lakehouse Monitoring writes
                    // it (log_type BASELINE): once per window and slice, not per model
                    if k.model.is_none() {
                        baseline_rows.extend(bprof.iter().map(|p| ProfileRow {
                            key: key.clone(),
                            log_type: "BASELINE",
                            ..p.clone()
                        }));
                    }
                }
            }
        }
        // derived metrics over profile rows, then drift metrics over (current, reference) pairs
        custom::derived(&self.spec.custom_metrics, &mut profile).await?;
        custom::drift_metrics(&self.spec.custom_metrics, &profile, &cur_for_drift, &refs, &mut drift).await?;
        // after the INPUT rows (drift rows point into those by index); their custom values were
        // computed with the baseline
        profile.extend(baseline_rows);
        Ok((profile, drift))
    }

    /// Stages window `w`'s profile and drift rows (committed with the granularity's other
    /// recomputed windows).
    pub(super) async fn stage_window(
        &self,
        tables: &mut MetricTables,
        pending: &mut Pending,
        w: i64,
        profile: &[ProfileRow],
        drift: &[DriftRow],
    ) -> Result<(), MonitorError> {
        let custom_profile = self.custom_names(&[CustomKind::Aggregate, CustomKind::Derived]);
        let custom_drift = self.custom_names(&[CustomKind::Drift]);
        let pb = output::profile_batch(profile, &custom_profile).map_err(qerr)?;
        let db = output::drift_batch(drift, &custom_drift).map_err(qerr)?;
        tables.stage(pending, w, &pb, &db).await
    }
}
