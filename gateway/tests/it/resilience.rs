//! Slow, greedy and hostile clients and failing workers: the listener stack's timeouts and
//! limits answer them, and the gateway keeps serving everyone else.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_wire::pb;
use sluice_wire::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

use crate::common::{self, DEMO};

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Reads what the server sends until it closes the connection or `limit` passes; returns the
/// bytes and whether it closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(until.into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

/// Headers of a `/predict` POST whose body never (fully) comes.
fn stalled_post(host: &str, content_length: usize) -> String {
    format!(
        "POST /predict HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\n\r\n"
    )
}

/// Sends `body` to `/predict` until it is answered 200, within `limit` of the first try: the
/// server recovers at once after whatever refused it (`refused` is the status it may give until then).
async fn served_again(t: &common::TestServer, body: &str, refused: u16, limit: Duration) {
    let started = Instant::now();
    loop {
        let r = t.client.post(t.url("/predict")).header("content-type", "application/json").body(body.to_string());
        match r.send().await {
            Ok(r) if r.status() == 200 => return,
            Ok(r) => assert_eq!(r.status().as_u16(), refused),
            Err(_) => {}
        }
        assert!(started.elapsed() < limit, "not served again within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn predict_ok(t: &common::TestServer) {
    let (status, body) = common::post_json(t, "/predict", &common::fraud_body(2)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_bodies_are_cut_off_while_others_are_served() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start_tweaked(DEMO, |c| {
        c.server.limits.header_read_timeout = Duration::from_millis(400);
        c.server.limits.body_read_timeout = Duration::from_millis(400);
    })
    .await;
    let host = addr(&t.http);
    // Headers that trickle: closed by the header read timeout, with nothing answered.
    let mut slow_headers = TcpStream::connect(&host).await.unwrap();
    slow_headers.write_all(b"POST /predict HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    // A body that stops half way: 408 with {"error"}.
    let mut slow_body = TcpStream::connect(&host).await.unwrap();
    slow_body.write_all(stalled_post(&host, 100).as_bytes()).await.unwrap();
    slow_body.write_all(b"{\"instances\": [").await.unwrap();
    // Meanwhile everyone else is served.
    predict_ok(&t).await;
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut slow_body, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_read_timeout_ms"), "{answer}");
    assert!(closed || answer.contains("{\"error\""), "{answer}");
    let (answer, closed) = read_until_closed(&mut slow_headers, Duration::from_secs(5)).await;
    assert!(closed, "a connection trickling headers was not closed: {answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // An idle keep-alive connection is closed too (HTTP/1: the header timer runs between requests).
    let mut idle = TcpStream::connect(&host).await.unwrap();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(closed, "an idle connection was not closed");
    predict_ok(&t).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_limit_are_shed_at_once_and_the_server_recovers() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start_tweaked(DEMO, |c| {
        c.server.limits.max_concurrent_requests = 2;
        c.server.limits.body_read_timeout = Duration::from_secs(30);
    })
    .await;
    let host = addr(&t.http);
    // Two requests whose bodies never come hold both slots.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&host).await.unwrap();
        s.write_all(stalled_post(&host, 1000).as_bytes()).await.unwrap();
        holders.push(s);
    }
    // The slots are taken once the holders' headers are in: wait for the first 429.
    let started = Instant::now();
    let (status, body) = loop {
        let r = common::post_json(&t, "/predict", &common::fraud_body(1)).await;
        // (20 s: on a loaded 2-core CI machine the holders' headers can take seconds to be read)
        if r.0 == 429 || started.elapsed() > Duration::from_secs(20) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 429, "{body}");
    assert!(body["error"].as_str().unwrap().contains("server.max_concurrent_requests"), "{body}");
    // gRPC shares the slots: RESOURCE_EXHAUSTED before the message is looked at.
    let mut grpc = GrpcInferenceServiceClient::connect(t.grpc.clone()).await.unwrap();
    let err = grpc.model_infer(pb::ModelInferRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Health, metadata and metrics never wait for a slot.
    for path in ["/v2/health/ready", "/v2/models/fraud_classifier", "/metrics"] {
        assert_eq!(t.client.get(t.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
    assert!(grpc.server_live(pb::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(common::metric(&t, "sluice_load_shed_total", "protocol=\"http\"").await >= 1.0);
    assert!(common::metric(&t, "sluice_load_shed_total", "protocol=\"grpc\"").await >= 1.0);
    // The holders leave: the next request is served at once.
    drop(holders);
    served_again(&t, &common::fraud_body(1).to_string(), 429, Duration::from_secs(2)).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_with_an_error_and_later_ones_accepted() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start_tweaked(DEMO, |c| {
        c.server.limits.max_connections = 3;
    })
    .await;
    let host = addr(&t.http);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(TcpStream::connect(&host).await.unwrap());
    }
    // Accepted connections hold their slots once the accept loop has seen them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(&host).await.unwrap();
    let (answer, closed) = read_until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(closed, "{answer}");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("server.max_connections"), "{answer}");
    assert!(
        common::metric(&t, "sluice_connections_refused_total", "listener=\"http\",reason=\"max_connections\"").await
            >= 1.0
    );
    drop(open);
    served_again(&t, &common::fraud_body(1).to_string(), 503, Duration::from_secs(3)).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_total_timeout_gets_504() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start_tweaked(DEMO, |c| {
        c.server.request_timeout = Duration::from_millis(200);
        c.server.limits.total_timeout = Duration::from_millis(300);
        c.server.limits.body_read_timeout = Duration::from_secs(30);
    })
    .await;
    let host = addr(&t.http);
    let mut s = TcpStream::connect(&host).await.unwrap();
    s.write_all(stalled_post(&host, 100).as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("server.total_timeout_ms"), "{answer}");
    predict_ok(&t).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_panic_fails_its_requests_and_the_model_keeps_serving() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start_tweaked(DEMO, |c| c.server.test_clock = true).await;
    let r = t
        .client
        .post(format!("{}/debug/worker-panic", t.admin))
        .json(&json!({"model": "fraud_classifier", "version": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let champion = "/endpoints/fraud/served-models/champion/predict";
    let r = t.client.post(t.url(champion)).json(&common::fraud_body(2)).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("worker"), "{body}");
    // Counted once the worker is back from the unwinding (the answer may come first).
    common::eventually("the panic to be counted", || async {
        common::metric(&t, "sluice_worker_panics_total", "model=\"fraud_classifier\",version=\"1\"").await == 1.0
    })
    .await;
    // The same worker (one instance) answers the next requests.
    for _ in 0..3 {
        let r = t.client.post(t.url(champion)).json(&common::fraud_body(2)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // Without the test clock the hook does not exist.
    let plain = common::start(DEMO).await;
    let r = plain
        .client
        .post(format!("{}/debug/worker-panic", plain.admin))
        .json(&json!({"model": "fraud_classifier"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    plain.stop().await;
    t.stop().await;
}

/// A BYTES input claiming 2^43 elements with a few bytes of data, over HTTP binary and gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_sizes_never_size_allocations() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(DEMO).await;
    let header = json!({"inputs": [{"name": "input", "shape": [8_796_093_022_208i64], "datatype": "BYTES",
                                    "parameters": {"binary_data_size": 9}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&[1, 0, 0, 0, b'a', 1, 0, 0, 0]);
    let r = t
        .client
        .post(t.url("/v2/models/fraud_classifier/infer"))
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let mut grpc = GrpcInferenceServiceClient::connect(t.grpc.clone()).await.unwrap();
    for (datatype, shape) in
        [("BYTES", vec![8_796_093_022_208i64]), ("FP64", vec![i64::MAX, 4]), ("INT32", vec![4_611_686_018_427_387_904])]
    {
        let req = pb::ModelInferRequest {
            model_name: "fraud_classifier".into(),
            inputs: vec![pb::model_infer_request::InferInputTensor {
                name: "input".into(),
                datatype: datatype.into(),
                shape,
                ..Default::default()
            }],
            raw_input_contents: vec![vec![1, 0, 0, 0, b'a', 0, 0, 0, 0]],
            ..Default::default()
        };
        let err = grpc.model_infer(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{datatype}: {err:?}");
    }
    // Ids over the cap: 400 over HTTP, INVALID_ARGUMENT over gRPC, on every transport.
    let long = "x".repeat(sluice::limits::MAX_ID_BYTES + 1);
    let r = t.client.post(t.url("/predict")).header("x-request-id", &long).json(&common::fraud_body(1)).send().await;
    assert_eq!(r.unwrap().status(), 400);
    let mut with_id = common::fraud_body(1);
    with_id["client_request_id"] = json!(long);
    assert_eq!(common::post_json(&t, "/predict", &with_id).await.0, 400);
    let v2 = json!({"id": long, "inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [0, 0, 0, 0, 0, 0, 0, 0]}]});
    assert_eq!(common::post_json(&t, "/v2/models/fraud_classifier/infer", &v2).await.0, 400);
    let req = pb::ModelInferRequest { model_name: "fraud_classifier".into(), id: long.clone(), ..Default::default() };
    assert_eq!(grpc.model_infer(req).await.unwrap_err().code(), Code::InvalidArgument);
    let labels = json!([{"request_id": "a", "label": long}]);
    assert_eq!(common::post_json(&t, "/endpoints/fraud/labels", &labels).await.0, 400);
    predict_ok(&t).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_buffered_bytes_budget_are_shed_unread() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start_tweaked(DEMO, |c| {
        c.server.max_body_bytes = 64 * 1024;
        c.server.limits.max_buffered_body_bytes = 64 * 1024;
        c.server.limits.body_read_timeout = Duration::from_secs(30);
    })
    .await;
    let host = addr(&t.http);
    // A request announcing 60,000 bytes holds them while its body does not come.
    let mut holder = TcpStream::connect(&host).await.unwrap();
    holder.write_all(stalled_post(&host, 60_000).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 10 KiB more does not fit in the 64 KiB budget: 429 before the body is read.
    let mut big = common::fraud_body(1);
    big["client_request_id"] = json!("p");
    let padded = format!("{}{}", " ".repeat(10 * 1024), big);
    let r =
        t.client.post(t.url("/predict")).header("content-type", "application/json").body(padded.clone()).send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("server.max_buffered_body_bytes"), "{body}");
    // A small one still fits.
    predict_ok(&t).await;
    // The holder leaves: the large one fits again.
    drop(holder);
    served_again(&t, &padded, 429, Duration::from_secs(2)).await;
    t.stop().await;
}
