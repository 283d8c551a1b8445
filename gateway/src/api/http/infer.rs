//! `POST /v2/models/{m}[/versions/{v}]/infer`: V2 JSON tensors and the binary tensor extension
//! (`Inference-Header-Content-Length`, `binary_data_size`, `binary_data`, `binary_data_output`).

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sluice_wire::{DataType, INFERENCE_HEADER_CONTENT_LENGTH};

use super::{HttpState, media_type, read_body};
use crate::api::ApiError;
use crate::api::meta::request_meta;
use crate::api::request_id::{REQUEST_ID_HEADER, RequestId};
use crate::core::{Answer, CoreError, Inputs, NamedTensor, Render, Request, Target, Transport};
use crate::limits::check_id;
use crate::tensor::json::decode_data;
use crate::tensor::{Tensor, TensorData, element_count};

#[derive(Deserialize)]
struct V2Request<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<V2Input<'a>>,
    #[serde(default)]
    outputs: Option<Vec<V2Output>>,
}

#[derive(Deserialize)]
struct V2Input<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct V2Output {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

pub async fn infer(
    State(state): State<HttpState>,
    Extension(id): Extension<RequestId>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, Target::Model { name: model, version: None }, id, headers, body).await
}

pub async fn infer_v(
    State(state): State<HttpState>,
    Extension(id): Extension<RequestId>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, Target::Model { name: model, version: Some(version) }, id, headers, body).await
}

/// V2 REST: decode (JSON or binary tensors) -> the core -> render the V2 response.
async fn handle(state: HttpState, target: Target, id: RequestId, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let transport =
            if headers.contains_key(INFERENCE_HEADER_CONTENT_LENGTH) { Transport::V2Binary } else { Transport::V2Json };
        let mut meta = request_meta(transport, id.0, headers)?;
        match media_type(&meta.headers)?.as_deref() {
            None | Some("application/json") | Some("application/octet-stream") => {}
            Some(other) => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "Content-Type {other} is not supported; send application/json, or application/octet-stream \
                     with Inference-Header-Content-Length"
                )));
            }
        }
        let bytes = read_body(body, state.max_body_bytes).await?;
        let (inputs, outputs, v2_id, encoding) = match decode(&meta.headers, &bytes) {
            Ok(d) => {
                // As over gRPC: the V2 request id, when given, is the request id.
                if let Some(id) = d.id.as_deref().filter(|id| !id.is_empty()) {
                    check_id("id", id)?;
                    meta.request_id = std::sync::Arc::from(id);
                }
                (Inputs::Tensors(d.inputs), d.outputs, d.id, d.encoding)
            }
            Err(e) => (Inputs::Invalid(e), None, None, OutputEncoding::AllSame(false)),
        };
        let request_id = meta.request_id.clone();
        let request = Request { target, inputs, outputs, id: v2_id, meta };
        let handled = state.gateway.handle(request, V2Body { encoding }).await?;
        let mut r = handled.output.into_response();
        super::predict::answer_headers(&mut r, &handled.served_model, &handled.model.version_str);
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            r.headers_mut().insert(HeaderName::from_static(REQUEST_ID_HEADER), v);
        }
        Ok(r)
    }
    .await;
    result.unwrap_or_else(super::predict::rejected)
}

fn bool_param(params: &Option<Map<String, Value>>, key: &str) -> Option<bool> {
    params.as_ref().and_then(|p| p.get(key)).and_then(Value::as_bool)
}

/// A decoded V2 REST request body.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub id: Option<String>,
    pub inputs: Vec<NamedTensor>,
    pub outputs: Option<Vec<String>>,
    /// Per requested output (or per model output when none is named): binary or JSON.
    pub encoding: OutputEncoding,
}

fn bad(msg: impl Into<String>) -> CoreError {
    CoreError::BadRequest(msg.into())
}

/// Splits header and binary part, decodes every input.
pub(crate) fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Decoded, CoreError> {
    let header_len = match headers.get(INFERENCE_HEADER_CONTENT_LENGTH) {
        None => body.len(),
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| bad("Inference-Header-Content-Length is not a number"))?;
            if n > body.len() {
                return Err(bad(format!(
                    "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                    body.len()
                )));
            }
            n
        }
    };
    let (json, mut binary) = body.split_at(header_len);
    let req: V2Request<'_> =
        serde_json::from_slice(json).map_err(|e| bad(format!("invalid inference request JSON: {e}")))?;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        let dtype = DataType::from_v2_name(&input.datatype)
            .ok_or_else(|| bad(format!("input '{}' has unsupported datatype '{}'", input.name, input.datatype)))?;
        let count = element_count(&input.shape)
            .ok_or_else(|| bad(format!("input '{}' has an invalid shape {:?}", input.name, input.shape)))?;
        let binary_size = input.parameters.as_ref().and_then(|p| p.get("binary_data_size"));
        let data = match (binary_size, input.data) {
            (Some(size), _) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| bad(format!("input '{}': binary_data_size must be a byte count", input.name)))?;
                if size > binary.len() {
                    return Err(bad(format!(
                        "input '{}' claims {size} bytes of binary data but only {} remain",
                        input.name,
                        binary.len()
                    )));
                }
                let (chunk, rest) = binary.split_at(size);
                binary = rest;
                TensorData::from_le_bytes(dtype, chunk, count)
                    .map_err(|e| bad(format!("input '{}' binary data {e}", input.name)))?
            }
            (None, Some(raw)) => {
                decode_data(raw.get(), dtype, count).map_err(|e| bad(format!("input '{}' data: {e}", input.name)))?
            }
            (None, None) => {
                return Err(bad(format!(
                    "input '{}' has neither \"data\" nor parameters.binary_data_size",
                    input.name
                )));
            }
        };
        inputs.push(NamedTensor { name: input.name, tensor: Tensor::new(input.shape, data) });
    }
    if !binary.is_empty() {
        return Err(bad(format!("{} bytes of binary data are not claimed by any input", binary.len())));
    }
    let default_binary = bool_param(&req.parameters, "binary_data_output").unwrap_or(false);
    let (names, encoding) = match req.outputs {
        None => (None, OutputEncoding::AllSame(default_binary)),
        Some(outs) => {
            let mut names = Vec::with_capacity(outs.len());
            let mut flags = Vec::with_capacity(outs.len());
            for o in outs {
                if o.parameters.as_ref().is_some_and(|p| p.contains_key("classification")) {
                    return Err(bad(format!("output '{}': the classification extension is not supported", o.name)));
                }
                flags.push(bool_param(&o.parameters, "binary_data").unwrap_or(default_binary));
                names.push(o.name);
            }
            (Some(names), OutputEncoding::PerOutput(flags))
        }
    };
    Ok(Decoded { id: req.id, inputs, outputs: names, encoding })
}

/// Which outputs go back as binary.
#[derive(Debug)]
pub(crate) enum OutputEncoding {
    AllSame(bool),
    PerOutput(Vec<bool>),
}

impl OutputEncoding {
    fn binary(&self, i: usize) -> bool {
        match self {
            OutputEncoding::AllSame(b) => *b,
            OutputEncoding::PerOutput(v) => v.get(i).copied().unwrap_or(false),
        }
    }
}

struct DataRef<'a>(&'a TensorData);

impl Serialize for DataRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::with_numeric_data!(self.0,
            v => v.serialize(s),
            h => s.collect_seq(h.iter().map(|x| x.to_f32())),
            b => s.collect_seq(b.iter().map(|x| String::from_utf8_lossy(x))))
    }
}

#[derive(Serialize)]
struct BinaryParams {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct OutputJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<DataRef<'a>>,
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    parameters: ResponseParams<'a>,
    outputs: Vec<OutputJson<'a>>,
}

/// Who served the request, as V2 response parameters (the same names as over gRPC).
#[derive(Serialize)]
struct ResponseParams<'a> {
    sluice_served_model: &'a str,
    sluice_model_version: &'a str,
    sluice_request_id: &'a str,
}

/// Renders a V2 REST response: JSON, or a JSON header followed by binary outputs.
struct V2Body {
    encoding: OutputEncoding,
}

/// A rendered V2 REST response body; `header_len` is set when binary outputs follow the JSON.
pub(crate) struct V2Response {
    body: Vec<u8>,
    header_len: Option<usize>,
}

impl Render for V2Body {
    type Output = V2Response;

    fn render(&self, a: Answer<'_>) -> Result<V2Response, CoreError> {
        let schema = a.model.runner.schema();
        let mut binary = Vec::new();
        let mut outputs = Vec::with_capacity(a.selected.len());
        for (k, &index) in a.selected.iter().enumerate() {
            let tensor = &a.outputs[index];
            let spec = &schema.outputs[index];
            let (parameters, data) = if self.encoding.binary(k) {
                let before = binary.len();
                tensor.data.write_le_bytes(&mut binary);
                (Some(BinaryParams { binary_data_size: binary.len() - before }), None)
            } else {
                (None, Some(DataRef(&tensor.data)))
            };
            outputs.push(OutputJson {
                name: &spec.name,
                datatype: tensor.dtype().v2_name(),
                shape: &tensor.shape,
                parameters,
                data,
            });
        }
        let header = ResponseJson {
            model_name: &a.model.name,
            model_version: &a.model.version_str,
            id: a.id,
            parameters: ResponseParams {
                sluice_served_model: a.served_model,
                sluice_model_version: &a.model.version_str,
                sluice_request_id: a.request_id,
            },
            outputs,
        };
        let mut body =
            serde_json::to_vec(&header).map_err(|e| CoreError::Internal(format!("cannot encode response: {e}")))?;
        if !(0..a.selected.len()).any(|k| self.encoding.binary(k)) {
            return Ok(V2Response { body, header_len: None });
        }
        let header_len = body.len();
        body.extend_from_slice(&binary);
        Ok(V2Response { body, header_len: Some(header_len) })
    }
}

impl IntoResponse for V2Response {
    fn into_response(self) -> Response {
        let Some(header_len) = self.header_len else {
            return super::json_response(StatusCode::OK, self.body);
        };
        let mut r = (StatusCode::OK, self.body).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        h.insert(HeaderName::from_static(INFERENCE_HEADER_CONTENT_LENGTH), HeaderValue::from(header_len));
        r
    }
}
