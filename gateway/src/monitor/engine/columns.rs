//! Typed views of one record batch: the accumulating query's (timestamp, model, shadow flag,
//! monitored columns, label, prediction, probabilities, slices) or the baseline's (monitored
//! columns and slices).

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};

use super::layout::{Layout, is_stringish};
use super::{MonitorError, qerr};

/// Monitored columns of a batch: numeric ones as f64, the others as strings.
type TypedColumns = (Vec<Option<datafusion::arrow::array::Float64Array>>, Vec<Option<StrCol>>);

/// Typed views of one batch of the main query.
pub(super) struct Columns {
    pub ts: Vec<Option<i64>>,
    pub model: StrCol,
    shadow: Option<datafusion::arrow::array::BooleanArray>,
    nums: Vec<Option<datafusion::arrow::array::Float64Array>>,
    strs: Vec<Option<StrCol>>,
    label: Option<datafusion::arrow::array::ArrayRef>,
    pred: Option<datafusion::arrow::array::ArrayRef>,
    proba: Option<datafusion::arrow::array::MapArray>,
    slices: Vec<StrCol>,
}

pub(super) struct StrCol(datafusion::arrow::array::StringArray);

impl StrCol {
    pub(super) fn new(a: &datafusion::arrow::array::ArrayRef) -> Result<StrCol, MonitorError> {
        let c = cast(a, &DataType::Utf8).map_err(qerr)?;
        Ok(StrCol(c.as_string::<i32>().clone()))
    }
    pub(super) fn get(&self, r: usize) -> Option<&str> {
        (r < self.0.len() && !self.0.is_null(r)).then(|| self.0.value(r))
    }
}

impl Columns {
    fn typed(batch: &RecordBatch, first: usize, ncols: usize, layout: &Layout) -> Result<TypedColumns, MonitorError> {
        let mut nums = Vec::with_capacity(ncols);
        let mut strs = Vec::with_capacity(ncols);
        for i in 0..ncols {
            let a = batch.column(first + i);
            if layout.numeric.get(i).copied().unwrap_or(false) {
                let c = cast(a, &DataType::Float64).map_err(qerr)?;
                nums.push(Some(c.as_primitive::<Float64Type>().clone()));
                strs.push(None);
            } else {
                nums.push(None);
                strs.push(Some(StrCol::new(a)?));
            }
        }
        Ok((nums, strs))
    }

    pub(super) fn new(
        batch: &RecordBatch,
        ncols: usize,
        nslices: usize,
        layout: &Layout,
    ) -> Result<Columns, MonitorError> {
        let ts = cast(batch.column(0), &DataType::Int64).map_err(qerr)?;
        let ts: Vec<Option<i64>> = ts.as_primitive::<Int64Type>().iter().collect();
        let model = StrCol::new(batch.column(1))?;
        let shadow = batch.column(2).as_boolean_opt().cloned();
        let (nums, strs) = Self::typed(batch, 3, ncols, layout)?;
        let norm = |a: &datafusion::arrow::array::ArrayRef| {
            let to = if is_stringish(a.data_type()) { DataType::Utf8 } else { DataType::Float64 };
            cast(a, &to).map_err(qerr)
        };
        let label = Some(norm(batch.column(3 + ncols))?);
        let pred = Some(norm(batch.column(4 + ncols))?);
        let mut next = 5 + ncols;
        let proba = if layout.has_proba {
            next += 1;
            batch.column(next - 1).as_map_opt().cloned()
        } else {
            None
        };
        let mut slices = Vec::new();
        for j in 0..nslices {
            slices.push(StrCol::new(batch.column(next + j))?);
        }
        Ok(Columns { ts, model, shadow, nums, strs, label, pred, proba, slices })
    }

    pub(super) fn baseline(
        batch: &RecordBatch,
        ncols: usize,
        nslices: usize,
        layout: &Layout,
    ) -> Result<Columns, MonitorError> {
        let (nums, strs) = Self::typed(batch, 0, ncols, layout)?;
        let mut slices = Vec::new();
        for j in 0..nslices {
            slices.push(StrCol::new(batch.column(ncols + j))?);
        }
        let empty: datafusion::arrow::array::ArrayRef =
            Arc::new(datafusion::arrow::array::StringArray::from(Vec::<Option<&str>>::new()));
        Ok(Columns {
            ts: Vec::new(),
            model: StrCol::new(&empty)?,
            shadow: None,
            nums,
            strs,
            label: None,
            pred: None,
            proba: None,
            slices,
        })
    }

    pub(super) fn shadow(&self, r: usize) -> bool {
        self.shadow.as_ref().is_some_and(|s| r < s.len() && !s.is_null(r) && s.value(r))
    }
    pub(super) fn num(&self, i: usize, r: usize) -> Option<f64> {
        let a = self.nums.get(i)?.as_ref()?;
        (r < a.len() && !a.is_null(r)).then(|| a.value(r))
    }
    pub(super) fn str(&self, i: usize, r: usize) -> Option<&str> {
        self.strs.get(i)?.as_ref()?.get(r)
    }
    pub(super) fn slice(&self, j: usize, r: usize) -> Option<&str> {
        self.slices.get(j)?.get(r)
    }
    pub(super) fn label_str(&self, r: usize) -> Option<&str> {
        let a = self.label.as_ref()?.as_string_opt::<i32>()?;
        (r < a.len() && !a.is_null(r)).then(|| a.value(r))
    }
    pub(super) fn pred_str(&self, r: usize) -> Option<&str> {
        let a = self.pred.as_ref()?.as_string_opt::<i32>()?;
        (r < a.len() && !a.is_null(r)).then(|| a.value(r))
    }
    pub(super) fn label_num(&self, r: usize) -> Option<f64> {
        let a = self.label.as_ref()?.as_primitive_opt::<Float64Type>()?;
        (r < a.len() && !a.is_null(r)).then(|| a.value(r))
    }
    pub(super) fn pred_num(&self, r: usize) -> Option<f64> {
        let a = self.pred.as_ref()?.as_primitive_opt::<Float64Type>()?;
        (r < a.len() && !a.is_null(r)).then(|| a.value(r))
    }
    pub(super) fn proba(&self, r: usize) -> Option<Vec<(String, f64)>> {
        let m = self.proba.as_ref()?;
        if r >= m.len() || m.is_null(r) {
            return None;
        }
        let entries = m.value(r);
        let keys = cast(entries.column(0), &DataType::Utf8).ok()?;
        let vals = cast(entries.column(1), &DataType::Float64).ok()?;
        let (k, v) = (keys.as_string::<i32>(), vals.as_primitive::<Float64Type>());
        let mut out = Vec::with_capacity(k.len());
        for i in 0..k.len() {
            if !k.is_null(i) && !v.is_null(i) {
                out.push((k.value(i).to_string(), v.value(i)));
            }
        }
        Some(out)
    }
}
