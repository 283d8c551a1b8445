//! Validation of request tensors against a model's schema, and output selection.

use super::{CoreError, NamedTensor};
use crate::registry::LoadedModel;
use crate::tensor::{Tensor, TensorData, element_count};

/// Indices of the outputs to return, in request order; all outputs when none are named.
pub fn select_outputs(model: &LoadedModel, names: Option<&[String]>) -> Result<Vec<usize>, CoreError> {
    let schema = model.runner.schema();
    match names {
        None => Ok((0..schema.outputs.len()).collect()),
        Some(names) => names
            .iter()
            .map(|n| {
                schema.output_index(n).ok_or_else(|| {
                    CoreError::BadRequest(format!(
                        "unknown output '{n}' for model '{}'; outputs are {:?}",
                        model.name,
                        schema.outputs.iter().map(|o| &o.name).collect::<Vec<_>>()
                    ))
                })
            })
            .collect(),
    }
}

/// Validates named inputs against the schema and returns them in schema order.
pub fn order_inputs(model: &LoadedModel, inputs: Vec<NamedTensor>) -> Result<Vec<Tensor>, CoreError> {
    let schema = model.runner.schema();
    let names = || schema.inputs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>();
    let mut slots: Vec<Option<Tensor>> = vec![None; schema.inputs.len()];
    for input in inputs {
        let i = schema.input_index(&input.name).ok_or_else(|| {
            CoreError::BadRequest(format!(
                "unknown input '{}' for model '{}'; inputs are {:?}",
                input.name,
                model.name,
                names()
            ))
        })?;
        if slots[i].is_some() {
            return Err(CoreError::BadRequest(format!("input '{}' is given twice", input.name)));
        }
        slots[i] = Some(input.tensor);
    }
    let mut ordered = Vec::with_capacity(slots.len());
    let mut batch: Option<i64> = None;
    for (spec, slot) in schema.inputs.iter().zip(slots) {
        let t = slot.ok_or_else(|| {
            CoreError::BadRequest(format!("missing input '{}' for model '{}'", spec.name, model.name))
        })?;
        check_tensor(&spec.name, spec, &t)?;
        if spec.has_batch_dim() {
            let rows = t.shape[0];
            match batch {
                Some(b) if b != rows => {
                    return Err(CoreError::BadRequest(format!(
                        "inputs disagree on the batch size: '{}' has {rows} rows, another input has {b}",
                        spec.name
                    )));
                }
                _ => batch = Some(rows),
            }
        }
        ordered.push(t);
    }
    Ok(ordered)
}

/// Checks datatype, shape and element count of one input against its spec.
fn check_tensor(name: &str, spec: &crate::runtime::TensorSpec, t: &Tensor) -> Result<(), CoreError> {
    if t.dtype() != spec.dtype {
        return Err(CoreError::BadRequest(format!(
            "input '{name}' has datatype {} but the model expects {}",
            t.dtype(),
            spec.dtype
        )));
    }
    let shape_ok = t.shape.len() == spec.shape.len()
        && t.shape.iter().zip(&spec.shape).all(|(&got, &want)| got >= 0 && (want < 0 || got == want));
    if !shape_ok {
        return Err(CoreError::BadRequest(format!(
            "input '{name}' has shape {:?} but the model expects {:?} (-1 = any size)",
            t.shape, spec.shape
        )));
    }
    if spec.has_batch_dim() && t.shape[0] == 0 {
        return Err(CoreError::BadRequest(format!("input '{name}' has no rows")));
    }
    let expected = element_count(&t.shape)
        .ok_or_else(|| CoreError::BadRequest(format!("input '{name}' has an impossible shape {:?}", t.shape)))?;
    if t.data.len() != expected {
        return Err(CoreError::BadRequest(format!(
            "input '{name}' has {} elements but shape {:?} needs {expected}",
            t.data.len(),
            t.shape
        )));
    }
    if let TensorData::Bytes(items) = &t.data
        && items.iter().any(|b| std::str::from_utf8(b).is_err())
    {
        return Err(CoreError::BadRequest(format!("input '{name}' holds BYTES that are not UTF-8 strings")));
    }
    Ok(())
}
