//! In-process fake servers on 127.0.0.1:0: an HTTP server speaking just enough of Sluice
//! (V2 metadata, `/predict`, V2 JSON and binary infer, admin endpoint view, a monitor's baseline) and a tonic gRPC
//! server implementing ModelMetadata and ModelInfer. Both count and capture what they get.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use sluice_wire::pb;
use sluice_wire::pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

/// Most requests whose bodies are kept.
const CAPTURE: usize = 100_000;

/// How the fake behaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Model inputs (name, datatype, shape) in the metadata; default one FP32 [-1, 4].
    pub inputs: Vec<(&'static str, &'static str, Vec<i64>)>,
    /// Requests whose number (from 0) is a multiple of this sleep `stall` first.
    pub stall_every: Option<u64>,
    pub stall: Duration,
    /// Handle one request at a time (so a stall holds up everything behind it).
    pub serial: bool,
    /// Requests whose number is a multiple of this answer 503.
    pub fail_every: Option<u64>,
    /// Leave out the served-model header / parameter.
    pub no_served_model: bool,
    /// The baseline path `GET /monitors/{endpoint}` names (no monitor: 404).
    pub baseline: Option<String>,
}

/// One captured request.
#[derive(Debug, Clone)]
pub struct Captured {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Shared state of a fake server.
#[derive(Debug, Default)]
pub struct State {
    pub behaviour: Behaviour,
    /// Inference requests (predict, infer, gRPC ModelInfer) received.
    pub count: AtomicU64,
    pub captured: Mutex<Vec<Captured>>,
    pub grpc_captured: Mutex<Vec<pb::ModelInferRequest>>,
    serial: tokio::sync::Mutex<()>,
}

impl State {
    fn inputs(&self) -> Vec<(&'static str, &'static str, Vec<i64>)> {
        if self.behaviour.inputs.is_empty() {
            vec![("input", "FP32", vec![-1, 4])]
        } else {
            self.behaviour.inputs.clone()
        }
    }

    /// Deterministic 90/10: request n goes to the challenger when n % 10 == 9.
    fn served(n: u64) -> &'static str {
        if n % 10 == 9 { "challenger" } else { "champion" }
    }

    /// Numbers the request, stalls or fails it as configured; `Err(status)` to answer an error.
    async fn admit(&self) -> Result<u64, StatusCode> {
        let _serial = if self.behaviour.serial { Some(self.serial.lock().await) } else { None };
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        if self.behaviour.stall_every.is_some_and(|k| n.is_multiple_of(k)) {
            tokio::time::sleep(self.behaviour.stall).await;
        }
        if self.behaviour.fail_every.is_some_and(|k| n.is_multiple_of(k)) {
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        Ok(n)
    }

    pub fn bodies(&self) -> Vec<Captured> {
        self.captured.lock().unwrap().clone()
    }
}

fn json_response(status: StatusCode, v: &Value, served: Option<&str>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    if let Some(s) = served {
        r.headers_mut().insert("x-sluice-served-model", s.parse().unwrap());
    }
    r
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let resp = match (method.as_str(), parts.as_slice()) {
        ("GET", ["v2", "models", m] | ["v2", "models", m, "versions", _]) if *m != "missing" => {
            let inputs: Vec<Value> =
                state.inputs().iter().map(|(n, d, s)| json!({"name": n, "datatype": d, "shape": s})).collect();
            json_response(
                StatusCode::OK,
                &json!({"name": m, "versions": ["1"], "platform": "onnxruntime_onnx", "inputs": inputs,
                        "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, 2]}]}),
                None,
            )
        }
        ("GET", ["monitors", e]) => match &state.behaviour.baseline {
            Some(b) => json_response(StatusCode::OK, &json!({"endpoint": e, "baseline": b}), None),
            None => json_response(StatusCode::NOT_FOUND, &json!({"error": "no monitor"}), None),
        },
        ("GET", ["admin", "endpoints", e]) => json_response(
            StatusCode::OK,
            &json!({"name": e, "config_version": 1, "served_models": [
                {"name": "champion", "model": "m", "version": "1", "traffic_percentage": 90},
                {"name": "challenger", "model": "m", "version": "2", "traffic_percentage": 10},
                {"name": "shadow", "model": "m", "version": "3", "traffic_percentage": 0, "mirror_percent": 100}
            ], "config": {}}),
            None,
        ),
        ("POST", ["endpoints", _, "predict"])
        | ("POST", ["predict"])
        | ("POST", ["v2", "models", _, "infer"])
        | ("POST", ["v2", "models", _, "versions", _, "infer"]) => {
            {
                let mut c = state.captured.lock().unwrap();
                if c.len() < CAPTURE {
                    c.push(Captured { path: path.clone(), headers: headers.clone(), body: body.clone() });
                }
            }
            match state.admit().await {
                Err(status) => json_response(status, &json!({"error": "fake overload"}), None),
                Ok(n) => {
                    let served = (!state.behaviour.no_served_model).then(|| State::served(n));
                    if parts[0] == "v2" {
                        match check_v2(&headers, &body) {
                            Ok(()) => json_response(StatusCode::OK, &json!({"outputs": []}), served),
                            Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({"error": e}), None),
                        }
                    } else {
                        json_response(StatusCode::OK, &json!({"predictions": [0]}), served)
                    }
                }
            }
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": format!("no route {path}")}), None),
    };
    Ok(resp)
}

/// Checks a V2 body: JSON, or a JSON header of the announced length plus exactly the announced bytes.
fn check_v2(headers: &http::HeaderMap, body: &[u8]) -> Result<(), String> {
    let (header, raw) = match headers.get("inference-header-content-length") {
        Some(v) => {
            let n: usize = v.to_str().map_err(|e| e.to_string())?.parse().map_err(|e| format!("{e}"))?;
            if n > body.len() {
                return Err("header length beyond the body".into());
            }
            body.split_at(n)
        }
        None => (body, &[][..]),
    };
    let v: Value = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let inputs = v["inputs"].as_array().ok_or("no inputs")?;
    let announced: u64 = inputs.iter().filter_map(|i| i["parameters"]["binary_data_size"].as_u64()).sum();
    if announced != raw.len() as u64 {
        return Err(format!("binary sizes {announced} != {} bytes", raw.len()));
    }
    Ok(())
}

/// A running fake HTTP server.
pub struct FakeHttp {
    pub addr: SocketAddr,
    pub state: Arc<State>,
}

impl FakeHttp {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Starts a fake HTTP server; it runs until the test's runtime ends.
pub async fn http(behaviour: Behaviour) -> FakeHttp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(State { behaviour, ..State::default() });
    let s = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { break };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(s.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    FakeHttp { addr, state }
}

/// The fake gRPC service.
#[derive(Clone)]
pub struct FakeGrpc {
    pub state: Arc<State>,
}

fn string_param(s: &str) -> pb::InferParameter {
    pb::InferParameter { parameter_choice: Some(pb::infer_parameter::ParameterChoice::StringParam(s.into())) }
}

#[tonic::async_trait]
impl GrpcInferenceService for FakeGrpc {
    async fn model_metadata(
        &self,
        req: tonic::Request<pb::ModelMetadataRequest>,
    ) -> Result<tonic::Response<pb::ModelMetadataResponse>, tonic::Status> {
        let name = req.into_inner().name;
        if name == "missing" {
            return Err(tonic::Status::not_found("unknown model 'missing'"));
        }
        let inputs = self
            .state
            .inputs()
            .into_iter()
            .map(|(n, d, s)| pb::model_metadata_response::TensorMetadata {
                name: n.into(),
                datatype: d.into(),
                shape: s,
            })
            .collect();
        Ok(tonic::Response::new(pb::ModelMetadataResponse {
            name,
            versions: vec!["1".into()],
            platform: "onnxruntime_onnx".into(),
            inputs,
            outputs: vec![],
        }))
    }

    async fn model_infer(
        &self,
        req: tonic::Request<pb::ModelInferRequest>,
    ) -> Result<tonic::Response<pb::ModelInferResponse>, tonic::Status> {
        let r = req.into_inner();
        {
            let mut c = self.state.grpc_captured.lock().unwrap();
            if c.len() < CAPTURE {
                c.push(r.clone());
            }
        }
        let n = self.state.admit().await.map_err(|_| tonic::Status::resource_exhausted("fake overload"))?;
        let mut parameters = HashMap::new();
        if !self.state.behaviour.no_served_model {
            parameters.insert("sluice_served_model".to_string(), string_param(State::served(n)));
        }
        Ok(tonic::Response::new(pb::ModelInferResponse {
            model_name: r.model_name,
            model_version: "1".into(),
            id: r.id,
            parameters,
            outputs: vec![],
            raw_output_contents: vec![],
        }))
    }
}

/// Starts a fake gRPC server; returns its URL and state.
pub async fn grpc(behaviour: Behaviour) -> (String, Arc<State>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(State { behaviour, ..State::default() });
    let svc = GrpcInferenceServiceServer::new(FakeGrpc { state: state.clone() });
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming).await;
    });
    (format!("http://{addr}"), state)
}

/// A port with nothing listening on it.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
