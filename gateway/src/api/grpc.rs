//! gRPC transport: `inference.GRPCInferenceService` (KServe V2 plus Triton's ModelConfig and
//! ModelStatistics), calling the same core functions as HTTP.

use std::sync::Arc;

use sluice_wire::{DataType, pb};
use tonic::{Request, Response, Status};

use super::{ApiError, v2};
use crate::api::access::{self, Caller};
use crate::api::meta::request_meta;
use crate::api::request_id;
use crate::auth::AuthError;
use crate::core::{Answer, CoreError, Gateway, Inputs, NamedTensor, Render, Request as CoreRequest, Target, Transport};
use crate::limits::check_id;
use crate::tensor::{Tensor, TensorData, element_count};

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::model_infer_request::InferInputTensor;
use pb::model_infer_response::InferOutputTensor;

/// The gRPC service over a gateway.
#[derive(Debug, Clone)]
pub struct GrpcService {
    gateway: Arc<Gateway>,
}

impl GrpcService {
    /// A tonic server for this service, accepting messages up to `max_message_bytes`.
    pub fn server(gateway: Arc<Gateway>, max_message_bytes: usize) -> GrpcInferenceServiceServer<GrpcService> {
        GrpcInferenceServiceServer::new(GrpcService { gateway })
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(usize::MAX)
    }

    /// The core request of a ModelInfer call: the request id is the V2 `id` when given (else
    /// `x-request-id` metadata, else generated), capped like every id; a message that does not
    /// decode still goes to the core, which answers and counts it.
    fn request(&self, headers: http::HeaderMap, r: pb::ModelInferRequest) -> Result<CoreRequest, ApiError> {
        let request_id = match Some(r.id.as_str()).filter(|id| !id.is_empty()) {
            Some(id) => {
                check_id("id", id)?;
                Arc::from(id)
            }
            None => request_id::from_headers(&headers)?,
        };
        let meta = request_meta(Transport::Grpc, request_id, headers)?;
        let version = Some(r.model_version.clone()).filter(|v| !v.is_empty());
        let target = Target::Model { name: r.model_name.clone(), version };
        Ok(match decode(r) {
            Ok(d) => CoreRequest { target, inputs: Inputs::Tensors(d.inputs), outputs: d.outputs, id: d.id, meta },
            Err(e) => CoreRequest { target, inputs: Inputs::Invalid(e), outputs: None, id: None, meta },
        })
    }

    /// A model (or endpoint) name resolved as for the HTTP metadata calls.
    fn resolve(&self, name: &str, version: &str) -> Result<v2::Resolved, Status> {
        v2::resolve(&self.gateway.snapshot(), name, Some(version)).map_err(|e| Status::from(ApiError::from(e)))
    }
}

fn bad(msg: String) -> CoreError {
    CoreError::BadRequest(msg)
}

#[tonic::async_trait]
impl GrpcInferenceService for GrpcService {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: self.gateway.is_ready() }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = req.into_inner();
        let found = self.resolve(&r.name, &r.version).is_ok();
        Ok(Response::new(pb::ModelReadyResponse { ready: found && self.gateway.is_ready() }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let m = v2::server_metadata();
        Ok(Response::new(pb::ServerMetadataResponse {
            name: m.name.into(),
            version: m.version.into(),
            extensions: m.extensions.iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let m = self.resolve(&r.name, &r.version)?.metadata();
        let conv = |t: v2::TensorMetadata| pb::model_metadata_response::TensorMetadata {
            name: t.name,
            datatype: t.datatype.into(),
            shape: t.shape,
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform.into(),
            inputs: m.inputs.into_iter().map(conv).collect(),
            outputs: m.outputs.into_iter().map(conv).collect(),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let headers = req.metadata().clone().into_headers();
        let caller = req.extensions().get::<Caller>().cloned().unwrap_or_default();
        let r = req.into_inner();
        let raw = !r.raw_input_contents.is_empty();
        let result = async {
            // the stack checked the token; the scope needs the model name
            if let Some(p) = &caller.0 {
                let need = access::model_need(&r.model_name, &self.gateway.snapshot());
                if !p.may(&need) {
                    return Err(ApiError::from(AuthError::Denied {
                        principal: p.name.clone(),
                        need: need.to_string(),
                    }));
                }
            }
            let request = self.request(headers, r)?;
            Ok(self.gateway.handle(request, GrpcBody { raw }).await?.output)
        }
        .await;
        result.map(Response::new).map_err(|e: ApiError| {
            crate::metrics::rejected("grpc", e.kind());
            Status::from(e)
        })
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = req.into_inner();
        let c = self.resolve(&r.name, &r.version)?.config();
        let dtype = |name: &str| pb::DataType::from_str_name(name).map(|d| d as i32).unwrap_or(0);
        let input = c
            .input
            .into_iter()
            .map(|t| pb::ModelInput { name: t.name, data_type: dtype(t.data_type), dims: t.dims, optional: false })
            .collect();
        let output = c
            .output
            .into_iter()
            .map(|t| pb::ModelOutput { name: t.name, data_type: dtype(t.data_type), dims: t.dims })
            .collect();
        let instance_group = c
            .instance_group
            .into_iter()
            .map(|g| pb::ModelInstanceGroup {
                name: g.name,
                count: g.count,
                gpus: g.gpus,
                kind: pb::model_instance_group::Kind::from_str_name(g.kind).map(|k| k as i32).unwrap_or(0),
            })
            .collect();
        let scheduling_choice = c.dynamic_batching.map(|b| {
            pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
                preferred_batch_size: b.preferred_batch_size,
                max_queue_delay_microseconds: b.max_queue_delay_microseconds,
            })
        });
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(pb::ModelConfig {
                name: c.name,
                platform: c.platform.into(),
                backend: c.backend.into(),
                max_batch_size: c.max_batch_size,
                input,
                output,
                instance_group,
                scheduling_choice,
            }),
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let r = req.into_inner();
        let stats = if r.name.is_empty() {
            v2::StatisticsResponse {
                model_stats: self.gateway.snapshot().registry.iter().map(|m| v2::model_statistics(m)).collect(),
            }
        } else {
            self.resolve(&r.name, &r.version)?.statistics()
        };
        let d = |x: v2::Duration| Some(pb::StatisticDuration { count: x.count, ns: x.ns });
        let model_stats = stats
            .model_stats
            .into_iter()
            .map(|s| {
                let i = s.inference_stats;
                pb::ModelStatistics {
                    name: s.name,
                    version: s.version,
                    last_inference: s.last_inference,
                    inference_count: s.inference_count,
                    execution_count: s.execution_count,
                    inference_stats: Some(pb::InferStatistics {
                        success: d(i.success),
                        fail: d(i.fail),
                        queue: d(i.queue),
                        compute_input: d(i.compute_input),
                        compute_infer: d(i.compute_infer),
                        compute_output: d(i.compute_output),
                        cache_hit: d(i.cache_hit),
                        cache_miss: d(i.cache_miss),
                    }),
                    batch_stats: s
                        .batch_stats
                        .into_iter()
                        .map(|b| pb::InferBatchStatistics {
                            batch_size: b.batch_size,
                            compute_input: d(b.compute_input),
                            compute_infer: d(b.compute_infer),
                            compute_output: d(b.compute_output),
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }
}

fn string_param(s: &str) -> pb::InferParameter {
    pb::InferParameter { parameter_choice: Some(pb::infer_parameter::ParameterChoice::StringParam(s.to_string())) }
}

/// A decoded ModelInfer request.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub id: Option<String>,
    pub inputs: Vec<NamedTensor>,
    pub outputs: Option<Vec<String>>,
}

/// Decodes a ModelInfer request: raw contents (one per input, in order) or typed contents.
pub(crate) fn decode(r: pb::ModelInferRequest) -> Result<Decoded, CoreError> {
    let raw = r.raw_input_contents;
    if !raw.is_empty() && raw.len() != r.inputs.len() {
        return Err(bad(format!(
            "raw_input_contents has {} entries but there are {} inputs",
            raw.len(),
            r.inputs.len()
        )));
    }
    let mut inputs = Vec::with_capacity(r.inputs.len());
    for (i, mut input) in r.inputs.into_iter().enumerate() {
        let dtype = DataType::from_v2_name(&input.datatype)
            .ok_or_else(|| bad(format!("input '{}' has unsupported datatype '{}'", input.name, input.datatype)))?;
        let count = element_count(&input.shape)
            .ok_or_else(|| bad(format!("input '{}' has an invalid shape {:?}", input.name, input.shape)))?;
        let data = if let Some(bytes) = raw.get(i) {
            if input.contents.is_some() {
                return Err(bad(format!("input '{}' has both contents and raw_input_contents", input.name)));
            }
            TensorData::from_le_bytes(dtype, bytes, count)
                .map_err(|e| bad(format!("input '{}' raw_input_contents {e}", input.name)))?
        } else {
            typed_contents(&mut input, dtype)?
        };
        inputs.push(NamedTensor { name: input.name, tensor: Tensor::new(input.shape, data) });
    }
    let outputs = (!r.outputs.is_empty()).then(|| r.outputs.into_iter().map(|o| o.name).collect());
    Ok(Decoded { id: Some(r.id).filter(|v| !v.is_empty()), inputs, outputs })
}

/// The typed contents of an input, moved out of the message (no copy of the client's data).
fn typed_contents(input: &mut InferInputTensor, dtype: DataType) -> Result<TensorData, CoreError> {
    let c = input
        .contents
        .take()
        .ok_or_else(|| bad(format!("input '{}' has neither contents nor raw_input_contents", input.name)))?;
    fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(v: &[S], name: &str) -> Result<Vec<T>, CoreError> {
        v.iter()
            .map(|&x| T::try_from(x).map_err(|_| bad(format!("input '{name}': {x} is out of range for its datatype"))))
            .collect()
    }
    let n = &input.name;
    Ok(match dtype {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::I8 => TensorData::I8(narrow(&c.int_contents, n)?),
        DataType::I16 => TensorData::I16(narrow(&c.int_contents, n)?),
        DataType::I32 => TensorData::I32(c.int_contents),
        DataType::I64 => TensorData::I64(c.int64_contents),
        DataType::U8 => TensorData::U8(narrow(&c.uint_contents, n)?),
        DataType::U16 => TensorData::U16(narrow(&c.uint_contents, n)?),
        DataType::U32 => TensorData::U32(c.uint_contents),
        DataType::U64 => TensorData::U64(c.uint64_contents),
        DataType::F32 => TensorData::F32(c.fp32_contents),
        DataType::F64 => TensorData::F64(c.fp64_contents),
        DataType::Bytes => TensorData::Bytes(c.bytes_contents),
        DataType::F16 | DataType::Bf16 => {
            return Err(bad(format!(
                "input '{n}' is {dtype}, which has no typed contents field in the KServe protocol; send it in \
                 raw_input_contents (little-endian, 2 bytes an element), as tritonclient does"
            )));
        }
    })
}

/// Renders outputs as raw bytes (when the request used raw inputs, as Triton does, or when an
/// output is FP16/BF16, which has no typed contents field) or typed contents.
struct GrpcBody {
    raw: bool,
}

impl Render for GrpcBody {
    type Output = pb::ModelInferResponse;

    fn render(&self, a: Answer<'_>) -> Result<pb::ModelInferResponse, CoreError> {
        let schema = a.model.runner.schema();
        let mut outputs = Vec::with_capacity(a.selected.len());
        let mut raw_output_contents = Vec::new();
        // raw_output_contents holds every output or none
        let raw =
            self.raw || a.selected.iter().any(|&i| matches!(a.outputs[i].dtype(), DataType::F16 | DataType::Bf16));
        for &index in a.selected {
            let tensor = &a.outputs[index];
            let contents = if raw {
                raw_output_contents.push(tensor.data.to_le_bytes());
                None
            } else {
                Some(to_contents(tensor.data.clone()))
            };
            outputs.push(InferOutputTensor {
                name: schema.outputs[index].name.clone(),
                datatype: tensor.dtype().v2_name().into(),
                shape: tensor.shape.clone(),
                parameters: Default::default(),
                contents,
            });
        }
        Ok(pb::ModelInferResponse {
            model_name: a.model.name.clone(),
            model_version: a.model.version_str.clone(),
            id: a.id.unwrap_or_default().to_string(),
            parameters: [
                (sluice_wire::SERVED_MODEL_PARAM.to_string(), string_param(a.served_model)),
                ("sluice_model_version".to_string(), string_param(&a.model.version_str)),
                ("sluice_request_id".to_string(), string_param(a.request_id)),
            ]
            .into_iter()
            .collect(),
            outputs,
            raw_output_contents,
        })
    }
}

fn to_contents(data: TensorData) -> pb::InferTensorContents {
    let mut c = pb::InferTensorContents::default();
    match data {
        TensorData::Bool(v) => c.bool_contents = v,
        TensorData::I8(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::I16(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::I32(v) => c.int_contents = v,
        TensorData::I64(v) => c.int64_contents = v,
        TensorData::U8(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::U16(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::U32(v) => c.uint_contents = v,
        TensorData::U64(v) => c.uint64_contents = v,
        TensorData::F32(v) => c.fp32_contents = v,
        TensorData::F64(v) => c.fp64_contents = v,
        TensorData::Bytes(v) => c.bytes_contents = v,
        // never reached: FP16/BF16 outputs are rendered raw (see GrpcBody::render)
        TensorData::F16(v) => c.fp32_contents = v.into_iter().map(half::f16::to_f32).collect(),
        TensorData::Bf16(v) => c.fp32_contents = v.into_iter().map(half::bf16::to_f32).collect(),
    }
    c
}
