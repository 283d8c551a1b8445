//! `POST /v2/models/{m}[/versions/{v}]/infer`: V2 JSON tensors and the binary tensor extension
//! (`Inference-Header-Content-Length`, `binary_data_size`, `binary_data`, `binary_data_output`).

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
use crate::core::{InferRequest, InferResponse, NamedTensor};
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
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, model, None, headers, body).await
}

pub async fn infer_v(
    State(state): State<HttpState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, model, Some(version), headers, body).await
}

async fn handle(state: HttpState, model: String, version: Option<String>, headers: HeaderMap, body: Body) -> Response {
    let mut meta = match super::predict::request_meta(headers) {
        Ok(m) => m,
        Err(e) => return super::predict::rejected(e),
    };
    let result = async {
        let headers = &meta.headers;
        match media_type(headers)?.as_deref() {
            None | Some("application/json") | Some("application/octet-stream") => {}
            Some(other) => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "Content-Type {other} is not supported; send application/json, or application/octet-stream \
                     with Inference-Header-Content-Length"
                )));
            }
        }
        let bytes = read_body(body, state.max_body_bytes, headers).await?;
        let (request, binary_outputs) = decode(headers, &bytes, model, version)?;
        // As over gRPC: the V2 request id, when given, is the request id.
        if let Some(id) = request.id.as_deref().filter(|id| !id.is_empty()) {
            check_id("id", id)?;
            meta.request_id = std::sync::Arc::from(id);
        }
        let response = state.gateway.infer(request, &meta).await?;
        let mut r = encode(&response, &binary_outputs, &meta.request_id);
        super::predict::answer_headers(&mut r, &response.served_model, &response.model.version_str, &meta.request_id);
        Ok(r)
    }
    .await;
    result.unwrap_or_else(super::predict::rejected)
}

fn bool_param(params: &Option<Map<String, Value>>, key: &str) -> Option<bool> {
    params.as_ref().and_then(|p| p.get(key)).and_then(Value::as_bool)
}

/// Splits header and binary part, decodes every input. Returns the request and, per requested
/// output (or per model output when none is named), whether it goes back as binary.
pub(crate) fn decode(
    headers: &HeaderMap,
    body: &[u8],
    model: String,
    version: Option<String>,
) -> Result<(InferRequest, OutputEncoding), ApiError> {
    let header_len = match headers.get(INFERENCE_HEADER_CONTENT_LENGTH) {
        None => body.len(),
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ApiError::bad_request("Inference-Header-Content-Length is not a number"))?;
            if n > body.len() {
                return Err(ApiError::bad_request(format!(
                    "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                    body.len()
                )));
            }
            n
        }
    };
    let (json, mut binary) = body.split_at(header_len);
    let req: V2Request<'_> = serde_json::from_slice(json)
        .map_err(|e| ApiError::bad_request(format!("invalid inference request JSON: {e}")))?;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        let dtype = DataType::from_v2_name(&input.datatype).ok_or_else(|| {
            ApiError::bad_request(format!("input '{}' has unsupported datatype '{}'", input.name, input.datatype))
        })?;
        let count = element_count(&input.shape).ok_or_else(|| {
            ApiError::bad_request(format!("input '{}' has an invalid shape {:?}", input.name, input.shape))
        })?;
        let binary_size = input.parameters.as_ref().and_then(|p| p.get("binary_data_size"));
        let data = match (binary_size, input.data) {
            (Some(size), _) => {
                let size = size.as_u64().and_then(|s| usize::try_from(s).ok()).ok_or_else(|| {
                    ApiError::bad_request(format!("input '{}': binary_data_size must be a byte count", input.name))
                })?;
                if size > binary.len() {
                    return Err(ApiError::bad_request(format!(
                        "input '{}' claims {size} bytes of binary data but only {} remain",
                        input.name,
                        binary.len()
                    )));
                }
                let (chunk, rest) = binary.split_at(size);
                binary = rest;
                TensorData::from_le_bytes(dtype, chunk, count)
                    .map_err(|e| ApiError::bad_request(format!("input '{}' binary data {e}", input.name)))?
            }
            (None, Some(raw)) => decode_data(raw.get(), dtype, count)
                .map_err(|e| ApiError::bad_request(format!("input '{}' data: {e}", input.name)))?,
            (None, None) => {
                return Err(ApiError::bad_request(format!(
                    "input '{}' has neither \"data\" nor parameters.binary_data_size",
                    input.name
                )));
            }
        };
        inputs.push(NamedTensor { name: input.name, tensor: Tensor::new(input.shape, data) });
    }
    if !binary.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} bytes of binary data are not claimed by any input",
            binary.len()
        )));
    }
    let default_binary = bool_param(&req.parameters, "binary_data_output").unwrap_or(false);
    let (names, encoding) = match req.outputs {
        None => (None, OutputEncoding::AllSame(default_binary)),
        Some(outs) => {
            let mut names = Vec::with_capacity(outs.len());
            let mut flags = Vec::with_capacity(outs.len());
            for o in outs {
                if o.parameters.as_ref().is_some_and(|p| p.contains_key("classification")) {
                    return Err(ApiError::bad_request(format!(
                        "output '{}': the classification extension is not supported",
                        o.name
                    )));
                }
                flags.push(bool_param(&o.parameters, "binary_data").unwrap_or(default_binary));
                names.push(o.name);
            }
            (Some(names), OutputEncoding::PerOutput(flags))
        }
    };
    Ok((InferRequest { model, version, id: req.id, inputs, outputs: names }, encoding))
}

/// Which outputs go back as binary.
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

fn encode(resp: &InferResponse, encoding: &OutputEncoding, request_id: &str) -> Response {
    let schema = resp.model.runner.schema();
    let mut binary = Vec::new();
    let mut outputs = Vec::with_capacity(resp.outputs.len());
    for (k, (index, tensor)) in resp.outputs.iter().enumerate() {
        let spec = &schema.outputs[*index];
        let (parameters, data) = if encoding.binary(k) {
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
        model_name: &resp.model.name,
        model_version: &resp.model.version_str,
        id: resp.id.as_deref(),
        parameters: ResponseParams {
            sluice_served_model: &resp.served_model,
            sluice_model_version: &resp.model.version_str,
            sluice_request_id: request_id,
        },
        outputs,
    };
    let mut body = match serde_json::to_vec(&header) {
        Ok(b) => b,
        Err(e) => {
            return ApiError::Core(crate::core::CoreError::Internal(format!("cannot encode response: {e}")))
                .into_response();
        }
    };
    if !(0..resp.outputs.len()).any(|k| encoding.binary(k)) {
        return super::json_response(StatusCode::OK, body);
    }
    let header_len = body.len();
    body.extend_from_slice(&binary);
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(HeaderName::from_static(INFERENCE_HEADER_CONTENT_LENGTH), HeaderValue::from(header_len));
    r
}
