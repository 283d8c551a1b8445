//! The ceiling of this machine's gRPC stack: a minimal tonic server (the same tonic, HTTP/2
//! settings and tokio runtime the gateway uses) whose `ModelInfer` decodes the request and
//! answers a fixed `ModelInferResponse` the size of the gateway's answer for the fraud classifier
//! (a `label` INT64 [1] and `probabilities` FP32 [1, 2], as raw output contents), without a
//! model. Driven by `sluice-loadtest` like the gateway's gRPC route, it shows how much of the
//! gateway's gRPC throughput is tonic itself; `fixed_body.rs` is its HTTP/1.1 counterpart.
//!
//!     cargo run --release -p sluice --example fixed_grpc -- [addr] [ports-file]
//!
//! Default address 127.0.0.1:0; the bound port is printed (and written to `ports-file`).

use sluice::config::ListenerLimits;
use sluice_wire::pb;
use sluice_wire::pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use tonic::{Request, Response, Status};

struct Fixed {
    answer: pb::ModelInferResponse,
}

fn fixed_answer() -> pb::ModelInferResponse {
    let tensor = |name: &str, datatype: &str, shape: Vec<i64>| pb::model_infer_response::InferOutputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        ..Default::default()
    };
    let label = 0i64.to_le_bytes().to_vec();
    let probabilities = [0.82f32, 0.18].iter().flat_map(|p| p.to_le_bytes()).collect();
    pb::ModelInferResponse {
        model_name: "fraud".into(),
        model_version: "1".into(),
        id: String::new(),
        outputs: vec![tensor("label", "INT64", vec![1]), tensor("probabilities", "FP32", vec![1, 2])],
        raw_output_contents: vec![label, probabilities],
        ..Default::default()
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Fixed {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: true }))
    }

    async fn model_ready(&self, _: Request<pb::ModelReadyRequest>) -> Result<Response<pb::ModelReadyResponse>, Status> {
        Ok(Response::new(pb::ModelReadyResponse { ready: true }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Err(Status::unimplemented("fixed-answer server"))
    }

    /// The fraud classifier's signature (what `sluice-loadtest` asks before it sends).
    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let meta = |name: &str, datatype: &str, shape: Vec<i64>| pb::model_metadata_response::TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape,
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: req.into_inner().name,
            versions: vec!["1".into()],
            platform: "onnxruntime_onnx".into(),
            inputs: vec![meta("input", "FP32", vec![-1, 8])],
            outputs: vec![meta("label", "INT64", vec![-1]), meta("probabilities", "FP32", vec![-1, 2])],
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        // the request was decoded (as the gateway's is); the answer is the same every time
        let mut answer = self.answer.clone();
        answer.id = req.into_inner().id;
        Ok(Response::new(answer))
    }

    async fn model_config(
        &self,
        _: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        Err(Status::unimplemented("fixed-answer server"))
    }

    async fn model_statistics(
        &self,
        _: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        Err(Status::unimplemented("fixed-answer server"))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:0".into());
    let ports_file = args.get(2).cloned();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        let local = listener.local_addr()?;
        println!("fixed-answer gRPC server on {local}");
        if let Some(f) = ports_file {
            std::fs::write(f, local.port().to_string())?;
        }
        // the gateway's HTTP/2 settings (its gRPC server builder), without its tower layers
        let limits = ListenerLimits::default();
        let incoming = futures::stream::unfold(listener, |l| async move {
            let accepted = l.accept().await.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                s
            });
            Some((accepted, l))
        });
        sluice::server::stack::grpc_builder(&limits)
            .add_service(GrpcInferenceServiceServer::new(Fixed { answer: fixed_answer() }))
            .serve_with_incoming(incoming)
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
