//! An OpenAPI 3 document of an endpoint's query route (`GET
//! /api/2.0/serving-endpoints/{name}/openapi`, as Databricks serves it), generated from the
//! served model's features or input tensors and what its `/predict` answer holds.

use serde_json::{Value, json};
use sluice_wire::DataType;

use crate::registry::{FeatureLayout, LoadedModel, PredictionLayout};

/// JSON Schema of one element of `dtype`.
fn element(dtype: DataType) -> Value {
    match dtype.v2_name() {
        "BOOL" => json!({"type": "boolean"}),
        "BYTES" => json!({"type": "string"}),
        n if n.starts_with("INT") || n.starts_with("UINT") => json!({"type": "integer", "format": n.to_lowercase()}),
        n => json!({"type": "number", "format": n.to_lowercase()}),
    }
}

/// (feature, element schema) of a model with named features.
fn features(m: &LoadedModel) -> Option<Vec<(String, Value)>> {
    let names = m.features.as_ref()?;
    let inputs = &m.runner.schema().inputs;
    let of = |i: usize| inputs.get(i).map_or(json!({"type": "number"}), |t| element(t.dtype));
    Some(match m.feature_layout.as_ref()? {
        FeatureLayout::Packed { input } => names.iter().map(|n| (n.clone(), of(*input))).collect(),
        FeatureLayout::PerInput { inputs: idx } => names.iter().zip(idx).map(|(n, i)| (n.clone(), of(*i))).collect(),
    })
}

/// Nested arrays of `depth` around `leaf`.
fn nested(leaf: Value, depth: usize) -> Value {
    (0..depth).fold(leaf, |inner, _| json!({"type": "array", "items": inner}))
}

fn request_schema(m: Option<&LoadedModel>) -> Value {
    let Some(m) = m else {
        return json!({"type": "object", "description": "dataframe_split, dataframe_records, instances or inputs"});
    };
    let extra = json!({
        "params": {"type": "object", "description": "MLflow inference parameters (accepted; ONNX models take none)"},
        "client_request_id": {"type": "string", "description": "logged with the request in the inference table"},
    });
    let with_extra = |mut formats: Vec<Value>| {
        for f in formats.iter_mut() {
            if let (Some(props), Some(more)) = (f["properties"].as_object_mut(), extra.as_object()) {
                props.extend(more.clone());
            }
        }
        json!({"oneOf": formats})
    };
    match features(m) {
        Some(cols) => {
            let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
            let record = json!({
                "type": "object",
                "properties": cols.iter().map(|(n, s)| (n.clone(), s.clone())).collect::<serde_json::Map<_, _>>(),
                "required": names,
            });
            let cell = json!({"oneOf": cols.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>()});
            with_extra(vec![
                json!({"type": "object", "required": ["dataframe_split"], "properties": {"dataframe_split": {
                "type": "object", "required": ["columns", "data"],
                "properties": {
                    "columns": {"type": "array", "items": {"type": "string", "enum": names}},
                    "data": {"type": "array", "items": {"type": "array", "items": cell}},
                    "index": {"type": "array"},
                }}}}),
                json!({"type": "object", "required": ["dataframe_records"], "properties": {
                    "dataframe_records": {"type": "array", "items": record}}}),
                json!({"type": "object", "required": ["instances"], "properties": {
                    "instances": {"type": "array", "items": record}}}),
                json!({"type": "object", "required": ["inputs"], "properties": {
                    "inputs": {"type": "object", "properties": cols.iter()
                        .map(|(n, s)| (n.clone(), json!({"type": "array", "items": s})))
                        .collect::<serde_json::Map<_, _>>()}}}),
            ])
        }
        None => {
            let inputs = &m.runner.schema().inputs;
            let tensors: serde_json::Map<String, Value> =
                inputs.iter().map(|t| (t.name.clone(), nested(element(t.dtype), t.shape.len().max(1)))).collect();
            let only = inputs.first().map(|t| nested(element(t.dtype), t.shape.len().max(1)));
            let mut formats = vec![json!({"type": "object", "required": ["inputs"], "properties": {
                "inputs": {"type": "object", "properties": tensors.clone(), "required": tensors.keys().collect::<Vec<_>>()}}})];
            if inputs.len() == 1
                && let Some(t) = only
            {
                formats.push(json!({"type": "object", "required": ["instances"], "properties": {"instances": t}}));
            }
            with_extra(formats)
        }
    }
}

fn answer_schema(m: Option<&LoadedModel>, mlflow: bool) -> Value {
    if mlflow {
        // every output by name, rows as lists (`response_format = "mlflow"`)
        let outputs: serde_json::Map<String, Value> = m
            .map(|m| {
                m.runner
                    .schema()
                    .outputs
                    .iter()
                    .map(|t| (t.name.clone(), nested(element(t.dtype), t.shape.len().max(1))))
                    .collect()
            })
            .unwrap_or_default();
        return json!({"type": "object", "required": ["predictions"], "properties": {
            "predictions": {"type": "object", "properties": outputs}}});
    }
    let item = match m.map(|m| (&m.prediction, m)) {
        Some((PredictionLayout::Classification { probabilities, .. }, m)) => {
            let mut props =
                json!({"label": {"description": "the predicted class (its name when the manifest names classes)"}});
            if probabilities.is_some() {
                let classes = m.manifest.class_labels.clone().unwrap_or_default();
                props["probabilities"] = json!({
                    "type": "object",
                    "description": "probability per class",
                    "properties": classes.iter().map(|c| (c.clone(), json!({"type": "number"}))).collect::<serde_json::Map<_, _>>(),
                    "additionalProperties": {"type": "number"},
                });
            }
            json!({"type": "object", "properties": props, "required": ["label"]})
        }
        Some((PredictionLayout::Regression { .. }, _)) => json!({"type": "number"}),
        _ => json!({"description": "one row of the model's outputs"}),
    };
    json!({
        "type": "object",
        "required": ["predictions"],
        "properties": {"predictions": {"type": "array", "items": item}},
    })
}

/// The document for endpoint `name`, whose served models take what `model` takes (every
/// served model of an endpoint takes the same inputs); `None`: not loaded here. `mlflow`: the
/// endpoint answers in MLflow's shape.
pub fn document(name: &str, model: Option<&LoadedModel>, mlflow: bool) -> Value {
    let path = format!("/serving-endpoints/{name}/invocations");
    let error = json!({"type": "object", "properties": {
        "error_code": {"type": "string"}, "message": {"type": "string"}, "error": {"type": "string"}}});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": format!("Sluice serving endpoint {name}"),
            "version": env!("CARGO_PKG_VERSION"),
            "description": model.map(|m| format!("served model inputs of {} version {}", m.name, m.version_str)),
        },
        "paths": {path: {"post": {
            "summary": format!("Query serving endpoint {name}"),
            "operationId": format!("query_{}", name.replace('-', "_")),
            "requestBody": {"required": true, "content": {"application/json": {"schema": request_schema(model)}}},
            "responses": {
                "200": {
                    "description": "the predictions; the header served-model-name says which served model answered",
                    "headers": {"served-model-name": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": answer_schema(model, mlflow)}},
                },
                "400": {"description": "a request the model cannot take", "content": {"application/json": {"schema": error.clone()}}},
                "404": {"description": "no such endpoint", "content": {"application/json": {"schema": error}}},
            },
        }}},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    })
}
