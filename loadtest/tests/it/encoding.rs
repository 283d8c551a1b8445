//! What the tool sends for each target, parsed back in the fake servers.

use serde_json::Value;
use sluice_loadtest::app::Verdict;
use sluice_loadtest::payload::Rows;

use crate::fake::{self, Behaviour};
use crate::run;

/// A model with an FP32 [-1, 3] input and an INT64 [-1] input: 4 values per row.
fn two_inputs() -> Behaviour {
    Behaviour { inputs: vec![("x", "FP32", vec![-1, 3]), ("n", "INT64", vec![-1])], ..Behaviour::default() }
}

/// The rows of request 0 for seed 7, 2 rows of 4 values, as the generator makes them.
fn expected_rows() -> Vec<Vec<f64>> {
    Rows::Generated { seed: 7, width: 4 }.rows_for(0, 2, None)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn i64s(bytes: &[u8]) -> Vec<i64> {
    bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_binary_sends_a_json_header_then_raw_little_endian_tensors() {
    let f = fake::http(two_inputs()).await;
    let url = f.url();
    let args = [
        "--url",
        &url,
        "--target",
        "v2-binary",
        "--model",
        "m",
        "--rows",
        "2",
        "--seed",
        "7",
        "-c",
        "1",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
    ];
    let (r, verdict) = run(&args).await;
    assert_eq!(verdict, Verdict::Passed);
    assert_eq!(r.overall.requests.errors, 0, "{:?}", r.overall.errors);
    let c = &f.state.bodies()[0];
    assert_eq!(c.path, "/v2/models/m/infer");
    assert_eq!(c.headers["content-type"], "application/octet-stream");
    let n: usize = c.headers["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let (header, raw) = c.body.split_at(n);
    let h: Value = serde_json::from_slice(header).unwrap();
    assert_eq!(h["parameters"]["binary_data_output"], true);
    let x = &h["inputs"][0];
    assert_eq!((x["name"].as_str(), x["datatype"].as_str()), (Some("x"), Some("FP32")));
    assert_eq!(x["shape"], serde_json::json!([2, 3]));
    assert_eq!(x["parameters"]["binary_data_size"], 24);
    assert!(x.get("data").is_none());
    let nn = &h["inputs"][1];
    assert_eq!((nn["name"].as_str(), nn["datatype"].as_str()), (Some("n"), Some("INT64")));
    assert_eq!(nn["shape"], serde_json::json!([2]));
    assert_eq!(nn["parameters"]["binary_data_size"], 16);
    assert_eq!(raw.len(), 24 + 16);
    let rows = expected_rows();
    let want_x: Vec<f32> = rows.iter().flat_map(|r| r[..3].iter().map(|&v| v as f32)).collect();
    let want_n: Vec<i64> = rows.iter().map(|r| r[3].round() as i64).collect();
    assert_eq!(f32s(&raw[..24]), want_x);
    assert_eq!(i64s(&raw[24..]), want_n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_json_sends_typed_data() {
    let f = fake::http(two_inputs()).await;
    let url = f.url();
    let args = [
        "--url",
        &url,
        "--target",
        "v2-json",
        "--model",
        "m",
        "--model-version",
        "2",
        "--rows",
        "2",
        "--seed",
        "7",
        "-c",
        "1",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
    ];
    let (r, _) = run(&args).await;
    assert_eq!(r.overall.requests.errors, 0, "{:?}", r.overall.errors);
    let c = &f.state.bodies()[0];
    assert_eq!(c.path, "/v2/models/m/versions/2/infer");
    assert_eq!(c.headers["content-type"], "application/json");
    assert!(c.headers.get("inference-header-content-length").is_none());
    let b: Value = serde_json::from_slice(&c.body).unwrap();
    let rows = expected_rows();
    let xs: Vec<f32> = b["inputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(xs, rows.iter().flat_map(|r| r[..3].iter().map(|&v| v as f32)).collect::<Vec<_>>());
    let ns: Vec<i64> = b["inputs"][1]["data"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(ns, rows.iter().map(|r| r[3].round() as i64).collect::<Vec<_>>());
    assert_eq!(b["inputs"][0]["shape"], serde_json::json!([2, 3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_sends_raw_input_contents_and_reads_the_served_model() {
    let (url, state) = fake::grpc(two_inputs()).await;
    let args = [
        "--url",
        &url,
        "--target",
        "grpc",
        "--model",
        "m",
        "--rows",
        "2",
        "--seed",
        "7",
        "-c",
        "2",
        "--duration",
        "800ms",
        "--warmup",
        "200ms",
        "--expect-split",
        "champion=90,challenger=10",
    ];
    let (r, verdict) = run(&args).await;
    assert_eq!(verdict, Verdict::Passed);
    assert_eq!(r.overall.requests.errors, 0, "{:?}", r.overall.errors);
    let first = state.grpc_captured.lock().unwrap().first().cloned().unwrap();
    assert_eq!(first.model_name, "m");
    assert_eq!(first.inputs.len(), 2);
    assert_eq!(first.inputs[0].shape, vec![2, 3]);
    assert_eq!(first.inputs[1].datatype, "INT64");
    assert_eq!(first.raw_input_contents.len(), 2);
    // Request 0 carries the first rows, encoded as raw FP32 contents. With two workers on a
    // loaded machine the server may see it after several of the other worker's requests, so it
    // is looked for among all the requests captured, not only the first two.
    let rows = expected_rows();
    let want_x: Vec<f32> = rows.iter().flat_map(|r| r[..3].iter().map(|&v| v as f32)).collect();
    let seen: Vec<Vec<f32>> =
        state.grpc_captured.lock().unwrap().iter().map(|q| f32s(&q.raw_input_contents[0])).collect();
    assert!(seen.contains(&want_x), "request 0's rows in none of the {} requests captured", seen.len());
    // The served model comes from the sluice_served_model response parameter.
    let served = &r.overall.served_models;
    assert!(served["champion"] > 0 && served.get("challenger").is_some(), "{served:?}");
    assert_eq!(r.overall.served_model_unreported, 0);
    assert!(r.run.served_model_from.contains("sluice_served_model"));
    assert!(r.split.unwrap().chi_squared.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_without_a_served_model_says_so() {
    let (url, _state) = fake::grpc(Behaviour { no_served_model: true, ..Behaviour::default() }).await;
    let args = [
        "--url",
        &url,
        "--target",
        "grpc",
        "--model",
        "m",
        "-c",
        "1",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--expect-split",
        "champion=90,challenger=10",
    ];
    let (r, _) = run(&args).await;
    assert_eq!(r.overall.served_model_unreported, r.overall.requests.ok);
    let split = r.split.clone().unwrap();
    assert!(split.chi_squared.is_none());
    assert!(split.note.unwrap().contains("cannot be checked"));
    assert!(r.to_table().contains("not reported by the server"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_uses_columns_and_payload_rows() {
    let f = fake::http(Behaviour::default()).await;
    let url = f.url();
    let (_, _) = run(&[
        "--url",
        &url,
        "--endpoint",
        "e",
        "--columns",
        "a,b,c,d",
        "-c",
        "1",
        "--duration",
        "200ms",
        "--warmup",
        "0s",
    ])
    .await;
    let b: Value = serde_json::from_slice(&f.state.bodies()[0].body).unwrap();
    assert_eq!(b["dataframe_split"]["columns"], serde_json::json!(["a", "b", "c", "d"]));

    // The committed fraud inputs, cycled in order, 2 rows a request, converted to V2 JSON.
    let f = fake::http(Behaviour { inputs: vec![("input", "FP32", vec![-1, 8])], ..Behaviour::default() }).await;
    let url = f.url();
    let payload = crate::repo_path("tests/fixtures/inputs/fraud_classifier.json");
    let (r, _) = run(&[
        "--url",
        &url,
        "--target",
        "v2-json",
        "--model",
        "fraud",
        "--payload",
        payload.to_str().unwrap(),
        "--rows",
        "2",
        "-c",
        "1",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
    ])
    .await;
    assert_eq!(r.overall.requests.errors, 0, "{:?}", r.overall.errors);
    let file: Value = serde_json::from_slice(&std::fs::read(&payload).unwrap()).unwrap();
    let bodies = f.state.bodies();
    for (k, c) in bodies.iter().take(3).enumerate() {
        let b: Value = serde_json::from_slice(&c.body).unwrap();
        let got: Vec<f32> =
            b["inputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let want: Vec<f32> = (0..2)
            .flat_map(|i| file["data"][2 * k + i].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32))
            .collect();
        assert_eq!(got, want, "request {k}");
    }

    // A body that is not dataframe_split is sent as is.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("body.json");
    let body = r#"{"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}"#;
    std::fs::write(&p, body).unwrap();
    let f = fake::http(Behaviour::default()).await;
    let url = f.url();
    let (r, _) =
        run(&["--url", &url, "--payload", p.to_str().unwrap(), "-c", "1", "--duration", "200ms", "--warmup", "0s"])
            .await;
    let c = &f.state.bodies()[0];
    assert_eq!(c.path, "/predict");
    assert_eq!(&c.body[..], body.as_bytes());
    assert_eq!(r.run.rows_per_request, 2);
}

/// Without --payload, an endpoint whose Sluice monitor names a baseline gets rows drawn from it
/// (seeded): every row sent is a row of the baseline, under its column names. --generated, and a
/// baseline this machine cannot open, keep the generated values, and the report says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_drawn_from_the_endpoint_monitor_baseline() {
    let baseline = crate::repo_path("models/fraud_classifier/1/baseline.parquet");
    let against = |url: &str, more: &[&str]| {
        let mut a: Vec<String> = ["--url", url, "--admin-url", url, "--endpoint", "fraud", "-c", "1", "--warmup", "0s"]
            .map(String::from)
            .to_vec();
        a.extend(more.iter().map(|s| s.to_string()));
        a
    };
    let f = fake::http(Behaviour { baseline: Some(baseline.display().to_string()), ..Behaviour::default() }).await;
    let args = against(&f.url(), &["--duration", "400ms"]);
    let (r, _) = run(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(r.run.payload.starts_with(&format!("sampled from baseline {}", baseline.display())), "{}", r.run.payload);
    let want = sluice_loadtest::baseline::load(&baseline, None).unwrap();
    assert_eq!(want.columns.len(), 8, "the features, not label and prediction: {:?}", want.columns);
    let bodies = f.state.bodies();
    assert!(bodies.len() > 5);
    let mut distinct = std::collections::BTreeSet::new();
    assert_eq!(want.rows.len(), 2000);
    for c in &bodies {
        let b: Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(b["dataframe_split"]["columns"], serde_json::json!(want.columns));
        for row in b["dataframe_split"]["data"].as_array().unwrap() {
            // sent as the model's FP32 values
            let row: Vec<f32> = row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            assert!(
                want.rows.iter().any(|w| w.iter().map(|&x| x as f32).eq(row.iter().copied())),
                "{row:?} is not a baseline row"
            );
            distinct.insert(format!("{row:?}"));
        }
    }
    // drawn with replacement (about 1 - 1/e of n draws distinct), not the file cycled from row 0
    let n = bodies.len() as f64;
    let expected = 2000.0 * (1.0 - (-n / 2000.0).exp());
    assert!(
        (distinct.len() as f64 - expected).abs() < 0.1 * n,
        "{} distinct of {n}, expected {expected:.0}",
        distinct.len()
    );

    let generated = against(&f.url(), &["--duration", "400ms", "--generated"]);
    let (r, _) = run(&generated.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(r.run.payload.starts_with("generated (standard normal"), "{}", r.run.payload);
    let f =
        fake::http(Behaviour { baseline: Some("/nonexistent/baseline.parquet".into()), ..Behaviour::default() }).await;
    let missing = against(&f.url(), &["--duration", "200ms"]);
    let (r, _) = run(&missing.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(r.run.payload.contains("/nonexistent/baseline.parquet, is not a file here"), "{}", r.run.payload);
}

/// An FP16 model: the V2 binary body carries each value rounded to the nearest half, 2 bytes an
/// element, and V2 JSON the same half values as numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fp16_inputs_are_sent_as_half_values() {
    let f = fake::http(Behaviour { inputs: vec![("x", "FP16", vec![-1, 4])], ..Behaviour::default() }).await;
    let url = f.url();
    let halves = |rows: &[Vec<f64>]| -> Vec<half::f16> {
        rows.iter().flat_map(|r| r.iter().map(|&v| half::f16::from_f64(v))).collect()
    };
    let args = ["--url", &url, "--model", "m", "--rows", "2", "--seed", "7", "-c", "1", "--duration", "300ms"];
    let (r, _) = run(&[&args[..], &["--target", "v2-binary", "--warmup", "0s"]].concat()).await;
    assert_eq!(r.overall.requests.errors, 0, "{:?}", r.overall.errors);
    let c = &f.state.bodies()[0];
    let n: usize = c.headers["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let (header, raw) = c.body.split_at(n);
    let h: Value = serde_json::from_slice(header).unwrap();
    assert_eq!(
        (h["inputs"][0]["datatype"].as_str(), h["inputs"][0]["parameters"]["binary_data_size"].as_u64()),
        (Some("FP16"), Some(16))
    );
    let sent: Vec<half::f16> = raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(sent, halves(&expected_rows()));

    let f = fake::http(Behaviour { inputs: vec![("x", "FP16", vec![-1, 4])], ..Behaviour::default() }).await;
    let url = f.url();
    let args = ["--url", &url, "--model", "m", "--rows", "2", "--seed", "7", "-c", "1", "--duration", "300ms"];
    let (r, _) = run(&[&args[..], &["--target", "v2-json", "--warmup", "0s"]].concat()).await;
    assert_eq!(r.overall.requests.errors, 0, "{:?}", r.overall.errors);
    let b: Value = serde_json::from_slice(&f.state.bodies()[0].body).unwrap();
    let sent: Vec<half::f16> =
        b["inputs"][0]["data"].as_array().unwrap().iter().map(|v| half::f16::from_f64(v.as_f64().unwrap())).collect();
    assert_eq!(sent, halves(&expected_rows()));
    assert!(
        b["inputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&sent)
            .all(|(v, h)| v.as_f64().unwrap() as f32 == h.to_f32())
    );
}
