//! KServe V2 gRPC with the generated tonic client: every RPC, raw and typed contents, errors.

use sluice_wire::pb;
use sluice_wire::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::Code;

use crate::common::{self, DEMO, fixture};

fn fraud_input(raw: bool) -> (pb::ModelInferRequest, Vec<f32>) {
    let (_, rows) = fixture("fraud_classifier");
    let x: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    let mut input = pb::model_infer_request::InferInputTensor {
        name: "input".into(),
        datatype: "FP32".into(),
        shape: vec![16, 8],
        ..Default::default()
    };
    let mut req = pb::ModelInferRequest {
        model_name: "fraud_classifier".into(),
        model_version: "1".into(),
        id: "grpc-1".into(),
        ..Default::default()
    };
    // unknown request parameters are ignored (perf_analyzer sends this one)
    req.parameters.insert(
        "triton_enable_empty_final_response".into(),
        pb::InferParameter { parameter_choice: Some(pb::infer_parameter::ParameterChoice::BoolParam(true)) },
    );
    if raw {
        req.raw_input_contents = vec![x.iter().flat_map(|v| v.to_le_bytes()).collect()];
    } else {
        input.contents = Some(pb::InferTensorContents { fp32_contents: x.clone(), ..Default::default() });
    }
    req.inputs = vec![input];
    (req, x)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(DEMO).await;
    let mut c = GrpcInferenceServiceClient::connect(t.grpc.clone()).await.unwrap();
    assert!(c.server_live(pb::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(c.server_ready(pb::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let meta = c.server_metadata(pb::ServerMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(meta.name, "sluice");
    assert!(meta.extensions.contains(&"binary_tensor_data".to_string()));
    let ready = |name: &str, version: &str| pb::ModelReadyRequest { name: name.into(), version: version.into() };
    assert!(c.model_ready(ready("mlp", "")).await.unwrap().into_inner().ready);
    assert!(c.model_ready(ready("fraud_classifier", "2")).await.unwrap().into_inner().ready);
    assert!(c.model_ready(ready("fraud_classifier", "3")).await.unwrap().into_inner().ready);
    assert!(!c.model_ready(ready("fraud_classifier", "7")).await.unwrap().into_inner().ready);
    assert!(!c.model_ready(ready("nope", "")).await.unwrap().into_inner().ready);

    let m = c
        .model_metadata(pb::ModelMetadataRequest { name: "fraud_classifier".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.versions, vec!["1", "2", "3"]);
    assert_eq!(m.inputs[0].datatype, "FP32");
    assert_eq!(m.inputs[0].shape, vec![-1, 8]);
    assert_eq!(m.outputs[0].datatype, "INT64");

    let cfg = c
        .model_config(pb::ModelConfigRequest { name: "mlp".into(), version: "1".into() })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(cfg.max_batch_size, 64);
    assert_eq!(cfg.input[0].dims, vec![64]);
    assert_eq!(cfg.input[0].data_type, pb::DataType::TypeFp32 as i32);
    assert!(matches!(cfg.scheduling_choice, Some(pb::model_config::SchedulingChoice::DynamicBatching(_))));

    // raw and typed contents give the same answer; raw in -> raw out, typed in -> typed out
    let (raw_req, _) = fraud_input(true);
    let raw = c.model_infer(raw_req).await.unwrap().into_inner();
    assert_eq!(raw.id, "grpc-1");
    assert_eq!(raw.model_version, "1");
    assert_eq!(raw.raw_output_contents.len(), 2);
    assert_eq!(raw.outputs[0].shape, vec![16]);
    let labels: Vec<i64> =
        raw.raw_output_contents[0].chunks(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
    let probs: Vec<f32> =
        raw.raw_output_contents[1].chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let (typed_req, _) = fraud_input(false);
    let typed = c.model_infer(typed_req).await.unwrap().into_inner();
    assert!(typed.raw_output_contents.is_empty());
    assert_eq!(typed.outputs[0].contents.as_ref().unwrap().int64_contents, labels);
    assert_eq!(typed.outputs[1].contents.as_ref().unwrap().fp32_contents, probs);

    // output selection
    let (mut sel, _) = fraud_input(true);
    sel.outputs = vec![pb::model_infer_request::InferRequestedOutputTensor {
        name: "probabilities".into(),
        ..Default::default()
    }];
    let sel = c.model_infer(sel).await.unwrap().into_inner();
    assert_eq!(sel.outputs.len(), 1);
    assert_eq!(sel.raw_output_contents[0], raw.raw_output_contents[1]);

    let stats = c
        .model_statistics(pb::ModelStatisticsRequest { name: "fraud_classifier".into(), version: "1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.model_stats[0].inference_count, 48);
    let s = stats.model_stats[0].inference_stats.as_ref().unwrap();
    assert_eq!(s.success.as_ref().unwrap().count, 3);
    let all = c.model_statistics(pb::ModelStatisticsRequest::default()).await.unwrap().into_inner();
    // fraud_classifier v1-3, delivery_time, mlp, mlp_fp16
    assert_eq!(all.model_stats.len(), 6);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_grpc_codes() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(DEMO).await;
    let mut c = GrpcInferenceServiceClient::connect(t.grpc.clone()).await.unwrap();
    let code = |r: Result<tonic::Response<pb::ModelInferResponse>, tonic::Status>| r.unwrap_err().code();

    let (mut req, _) = fraud_input(true);
    req.model_name = "nope".into();
    assert_eq!(code(c.model_infer(req).await), Code::NotFound);
    let (mut req, _) = fraud_input(true);
    req.model_version = "5".into();
    assert_eq!(code(c.model_infer(req).await), Code::NotFound);
    let (mut req, _) = fraud_input(true);
    req.inputs[0].shape = vec![16, 7];
    assert_eq!(code(c.model_infer(req).await), Code::InvalidArgument);
    let (mut req, _) = fraud_input(true);
    req.inputs[0].datatype = "INT32".into();
    assert_eq!(code(c.model_infer(req).await), Code::InvalidArgument);
    let (mut req, _) = fraud_input(true);
    req.raw_input_contents[0].pop();
    assert_eq!(code(c.model_infer(req).await), Code::InvalidArgument);
    let (mut req, _) = fraud_input(false);
    req.inputs[0].contents = None;
    assert_eq!(code(c.model_infer(req).await), Code::InvalidArgument);
    let meta = c.model_metadata(pb::ModelMetadataRequest { name: "nope".into(), version: String::new() }).await;
    assert_eq!(meta.unwrap_err().code(), Code::NotFound);
    let cfg = c.model_config(pb::ModelConfigRequest { name: "nope".into(), version: String::new() }).await;
    assert_eq!(cfg.unwrap_err().code(), Code::NotFound);
    // still serving
    let (req, _) = fraud_input(true);
    assert!(c.model_infer(req).await.is_ok());
    t.stop().await;
}
