//! Fuzz targets for every request parser, run as tests on the pinned stable toolchain:
//! MLflow `/predict` JSON, V2 JSON, V2 binary (header + tensor bytes) and gRPC `ModelInferRequest`
//! (protobuf decode, then into tensors), each followed by validation against real model schemas;
//! labels posts; the `[storage]` config section and table locations; config store versions
//! (JSON from the store, merged and validated as a following replica does); Databricks'
//! serving-endpoints create and update bodies; what an MLflow registry answers (`MLmodel`,
//! REST JSON); and the auth path (`Authorization` header, route need, token check, scope and
//! hash parsing).
//!
//! Each target mutates the committed corpus (`gateway/fuzz/corpus/<target>/`) with a seeded
//! generator for a bounded time (`SLUICE_FUZZ_SECS`, default 4 s a target; `SLUICE_FUZZ_SEED`
//! picks the seed, default from the clock and printed) and asserts for every input that
//! - the parser returns (an error or tensors): no panic, no abort;
//! - the heap it allocated at its peak is at most [`MULTIPLE`] times the input's size plus
//!   [`SLACK`]: no allocation is sized from a number in the input.
//!
//! A failing input is written to `target/fuzz-failures/<target>-<n>` to be added to the corpus.
//! [`worst_case_bodies_cost_a_measured_multiple`] measures the multiple on 16 MiB worst cases.

#![allow(unsafe_code)] // the counting allocator below: a GlobalAlloc impl is unsafe by definition

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_wire::pb;

use crate::core::order_inputs;
use crate::registry::{LoadedModel, Registry};

/// Peak heap a parser may take, as a multiple of its input's size (see the README's "What is
/// bounded": the worst case is MLflow JSON of one-digit numbers, a serde_json value each).
pub const MULTIPLE: usize = 40;
/// Fixed allowance on top: schemas, error messages, small vectors.
pub const SLACK: usize = 256 * 1024;

struct Counting;

thread_local! {
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = CURRENT.try_with(|c| {
        let v = c.get() + delta;
        c.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the bookkeeping only adds
// to thread-local counters and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's pointer and layout came from `alloc` above.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's pointer and layout came from `alloc` above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns the most heap it held at once, above what was held before.
fn peak_of(f: impl FnOnce()) -> usize {
    let start = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(start));
    f();
    (PEAK.with(Cell::get) - start).max(0) as usize
}

/// The models the targets validate against: a named-feature classifier and a raw tensor model.
struct Models {
    _registry: Registry,
    /// Batchers of batching models are tasks: they need a runtime (nothing is run on them here).
    _runtime: tokio::runtime::Runtime,
    fraud: std::sync::Arc<LoadedModel>,
    mlp: std::sync::Arc<LoadedModel>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `None` (the test skips) only under the explicit opt-out `SLUICE_SKIP_ORT_TESTS=1`, which
/// `scripts/test.sh` refuses; without it a missing ONNX Runtime fails the test.
fn models() -> Option<Models> {
    if std::env::var("SLUICE_SKIP_ORT_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping: SLUICE_SKIP_ORT_TESTS=1 skips the tests that need ONNX Runtime");
        return None;
    }
    let root = repo();
    crate::runtime::library::environment(Some(&root.join(crate::runtime::library::DEFAULT_RELATIVE_PATH)))
        .expect("ONNX Runtime (scripts/fetch-onnxruntime.sh) is needed by the fuzz targets");
    let toml = "[runtime]\nmodel_repository = \"models\"\n[[models]]\nname = \"fraud_classifier\"\nversions = [1]\n\
                [[models]]\nname = \"mlp\"\nversions = [1]\n";
    let config = crate::config::Config::from_toml(toml, "fuzz.toml", &root).expect("fuzz config");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _entered = runtime.enter();
    let registry = Registry::build(&config, None, &tokio_util::task::TaskTracker::new()).expect("the fuzz models load");
    let fraud = registry.get("fraud_classifier", None).expect("fraud").clone();
    let mlp = registry.get("mlp", None).expect("mlp").clone();
    drop(_entered);
    Some(Models { _registry: registry, _runtime: runtime, fraud, mlp })
}

/// One parser with everything the request path does before running a model.
type Target = fn(&Models, &[u8]);

fn mlflow(m: &Models, body: &[u8]) {
    for model in [&m.fraud, &m.mlp] {
        if let Ok(parsed) = crate::api::mlflow::parse(body) {
            let _ = crate::api::mlflow::to_tensors(model, parsed.payload);
        }
    }
}

/// Validation against both models' schemas, as the request path does (it takes the inputs:
/// only small ones are copied for the second model, so the copy does not count as the parser's).
fn validate(m: &Models, inputs: Vec<crate::core::NamedTensor>) {
    if inputs.iter().map(|i| i.tensor.data.len()).sum::<usize>() < 4096 {
        let _ = order_inputs(&m.mlp, inputs.clone());
    }
    let _ = order_inputs(&m.fraud, inputs);
}

fn v2_with_header(m: &Models, headers: &http::HeaderMap, body: &[u8]) {
    if let Ok(req) = crate::api::http::infer::decode(headers, body) {
        validate(m, req.inputs);
    }
}

fn v2_json(m: &Models, body: &[u8]) {
    v2_with_header(m, &http::HeaderMap::new(), body);
}

/// Input: a 4-byte little-endian `Inference-Header-Content-Length` (all ones: none), then the body.
fn v2_binary(m: &Models, input: &[u8]) {
    let Some((len, body)) = input.split_first_chunk::<4>() else { return };
    let len = u32::from_le_bytes(*len);
    let mut headers = http::HeaderMap::new();
    if len != u32::MAX {
        headers.insert(sluice_wire::INFERENCE_HEADER_CONTENT_LENGTH, http::HeaderValue::from(len));
    }
    v2_with_header(m, &headers, body);
}

fn grpc(m: &Models, input: &[u8]) {
    if let Ok(req) = pb::ModelInferRequest::decode(input)
        && let Ok(req) = crate::api::grpc::decode(req)
    {
        validate(m, req.inputs);
    }
}

/// A labels post, parsed as `POST /endpoints/{name}/labels` does.
fn labels(_: &Models, input: &[u8]) {
    let _ = crate::inference_log::labels::parse(input);
}

/// The `[storage]` section's validation and the table locations it derives. Input lines are the
/// section's values (`tables`, `endpoint`, `region`, `cache_dir`, `allow_http` when the fifth
/// line is `true`); the TOML parser itself is the `toml` crate's, not Sluice's.
fn storage(_: &Models, input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let mut lines = text.lines();
    let mut next = || lines.next().map(str::to_string);
    let raw = crate::config::raw::RawStorage {
        tables: next(),
        endpoint: next(),
        region: next(),
        cache_dir: next(),
        allow_http: next().map(|l| l == "true"),
        config_store: next(),
    };
    if let Ok(s) = crate::config::validate::storage_of(&raw, Path::new("/nonexistent/data"), Path::new("/nonexistent"))
        && let Some(remote) = s.remote
    {
        let t = remote.child("fraud");
        let _ = (t.sibling("fraud_labels").to_string(), t.url(), t.storage_options());
    }
}

/// A version object of the config store, as another replica (or anything with write access
/// to the bucket) left it: parsed, merged with a replica's own settings and validated, as a
/// replica following the store does before it loads anything.
fn config_version(_: &Models, input: &[u8]) {
    let Ok(v) = serde_json::from_slice::<crate::control::store::Version>(input) else { return };
    let local = crate::config::raw::RawConfig::default();
    let raw = crate::control::store::shared(&local, &v.config);
    let _ = crate::config::Config::from_raw(raw, "fuzz store version", Path::new("/nonexistent"));
}

/// Databricks' serving-endpoints API: the input as the JSON body of a create, then (when it
/// made an endpoint) as the body of a config update of it; each endpoint checked as a config.
fn serving_endpoint(_: &Models, input: &[u8]) {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(input) else { return };
    let check = |e: crate::config::raw::RawEndpoint| {
        let raw = crate::config::raw::RawConfig { endpoints: vec![e], ..Default::default() };
        let _ = crate::config::Config::from_raw(raw, "fuzz serving endpoint", Path::new("/nonexistent"));
    };
    if let Ok(e) = crate::api::serving_endpoints::create_request(body.clone()) {
        if let Ok(updated) = crate::api::serving_endpoints::update_request(&e, body) {
            check(updated);
        }
        check(e);
    }
}

/// What an MLflow tracking server hands Sluice: the input as an `MLmodel` file (its onnx flavor
/// and signature, then the manifest they imply) and as each JSON answer of the registry (alias,
/// version, artifact listing, error).
fn mlmodel(_: &Models, input: &[u8]) {
    use crate::registry::mlflow;
    let text = String::from_utf8_lossy(input);
    if let Ok(m) = mlflow::parse_mlmodel(&text) {
        let manifest = mlflow::manifest_of(&m, Some(vec!["a".into(), "b".into()]));
        let _ = toml::to_string(&manifest);
    }
    mlflow::fuzz_answer(input);
}

/// The auth path of a request: the input's first line is the `Authorization` header, the second
/// the path. The bearer token is checked against a fixed set of principals (and the admin
/// token) for the route's need on both ports; the other lines are parsed as scopes and hashes,
/// as the config does.
fn auth(_: &Models, input: &[u8]) {
    use crate::api::access;
    thread_local! {
        static ACCESS: crate::control::Access = crate::control::Access {
            admin_token: Some(crate::config::raw::Secret("admin-token-0123456789".into())),
            principals: std::sync::Arc::new(crate::auth::Principals::new(vec![(
                "app".into(),
                crate::auth::parse_hash(&crate::auth::hash("app-secret-0123456789")).unwrap_or_default(),
                vec![crate::auth::Scope::Query(crate::auth::Pattern::Endpoint("fraud".into()))],
            )])),
        };
    }
    let mut lines = input.split(|b| *b == b'\n');
    let header = lines.next().unwrap_or_default();
    let path = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(header) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    let snapshot = crate::core::Snapshot::empty();
    ACCESS.with(|a| {
        for port in [access::Port::Inference, access::Port::Admin] {
            for method in [http::Method::GET, http::Method::POST] {
                let need = access::http_need(port, &method, &path, &snapshot, a);
                let _ = access::authorize(a, &need, access::bearer(&headers));
            }
        }
        let _ = access::authorize(a, &access::grpc_need(&path), access::bearer(&headers));
    });
    for line in lines {
        let text = String::from_utf8_lossy(line);
        let _ = text.parse::<crate::auth::Scope>();
        let _ = crate::auth::parse_hash(&text);
        let _ = crate::auth::valid_name(&text);
    }
}

const INTERESTING: &[&str] = &[
    "0",
    "-1",
    "8796093022208",
    "9223372036854775807",
    "18446744073709551616",
    "1e400",
    "-0.0",
    "[]",
    "[[]]",
    "{}",
    "null",
    "true",
    "\"\"",
    "\"BYTES\"",
    "\"FP32\"",
    "\"FP16\"",
    "\"BF16\"",
    "65504",
    "65520",
    "[[[[[[[[1]]]]]]]]",
    "4294967295",
];

/// One mutation of `seed`: byte edits, splices, interesting tokens, huge length prefixes.
fn mutate(rng: &mut StdRng, seed: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let at = if v.is_empty() { 0 } else { rng.random_range(0..v.len()) };
        match rng.random_range(0..8) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.random_range(0..8),
            1 => v.insert(at, rng.random()),
            2 if !v.is_empty() => {
                let end = (at + rng.random_range(1..16)).min(v.len());
                v.drain(at..end);
            }
            3 => {
                let token = INTERESTING[rng.random_range(0..INTERESTING.len())].as_bytes();
                let end = (at + rng.random_range(0..8)).min(v.len());
                v.splice(at..end, token.iter().copied());
            }
            4 if !v.is_empty() => {
                // Repeat a piece many times: long arrays, deep nesting, many fields.
                let end = (at + rng.random_range(1..32)).min(v.len());
                let piece = v[at..end].to_vec();
                for _ in 0..rng.random_range(1..200) {
                    v.splice(at..at, piece.iter().copied());
                }
            }
            5 if v.len() >= 4 => {
                // A length prefix (binary BYTES, header length, protobuf) made huge.
                let at = rng.random_range(0..v.len() - 3);
                v[at..at + 4].copy_from_slice(&rng.random_range(0x0100_0000u32..=u32::MAX).to_le_bytes());
            }
            6 if !corpus.is_empty() => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                let from = rng.random_range(0..=other.len());
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ => v.truncate(at),
        }
    }
    v
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = repo().join("gateway/fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("corpus folder").filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("corpus file")).collect();
    assert!(!seeds.is_empty(), "no corpus in {}", dir.display());
    seeds
}

/// Runs `target` on every corpus file, then on mutations for the time budget.
fn fuzz(name: &str, target: Target) {
    let Some(models) = models() else { return };
    let seeds = corpus(name);
    let secs = std::env::var("SLUICE_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(4u64);
    let seed = std::env::var("SLUICE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    eprintln!("fuzz {name}: seed {seed} (SLUICE_FUZZ_SEED), {secs} s");
    let mut rng = StdRng::seed_from_u64(seed);
    let until = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut worst) = (0usize, 0.0f64);
    let mut check = |input: &[u8]| {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| peak_of(|| target(&models, input))));
        let bound = MULTIPLE * input.len() + SLACK;
        let failed = match ran {
            Err(_) => Some("panicked".to_string()),
            Ok(peak) if peak > bound => Some(format!("allocated {peak} bytes at its peak, over the bound {bound}")),
            Ok(peak) => {
                if input.len() >= 4096 {
                    worst = worst.max(peak as f64 / input.len() as f64);
                }
                None
            }
        };
        if let Some(why) = failed {
            let dir = repo().join("target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}-{runs}"));
            let _ = std::fs::write(&file, input);
            panic!("fuzz {name}: input of {} bytes {why}; saved as {} (seed {seed})", input.len(), file.display());
        }
        runs += 1;
    };
    for s in &seeds {
        check(s);
    }
    while Instant::now() < until {
        let base = &seeds[rng.random_range(0..seeds.len())];
        let input = mutate(&mut rng, base, &seeds);
        check(&input);
    }
    eprintln!("fuzz {name}: {runs} inputs, worst peak {worst:.1}x the input (inputs of 4 KiB or more)");
}

#[test]
fn fuzz_mlflow_json() {
    fuzz("mlflow", mlflow);
}

#[test]
fn fuzz_v2_json() {
    fuzz("v2_json", v2_json);
}

#[test]
fn fuzz_v2_binary() {
    fuzz("v2_binary", v2_binary);
}

#[test]
fn fuzz_labels() {
    fuzz("labels", labels);
}

#[test]
fn fuzz_storage() {
    fuzz("storage", storage);
}

#[test]
fn fuzz_config_version() {
    fuzz("config_version", config_version);
}

#[test]
fn fuzz_serving_endpoint() {
    fuzz("serving_endpoint", serving_endpoint);
}

#[test]
fn fuzz_mlmodel() {
    fuzz("mlmodel", mlmodel);
}

#[test]
fn fuzz_auth() {
    fuzz("auth", auth);
}

#[test]
fn fuzz_grpc_model_infer() {
    fuzz("grpc", grpc);
}

/// The largest multiple each parser can be made to pay, on 16 MiB bodies built to be the worst:
/// the smallest elements the format allows. The numbers go in the README.
#[test]
fn worst_case_bodies_cost_a_measured_multiple() {
    let Some(m) = models() else { return };
    let size = 16 << 20;
    let fill = |prefix: &str, item: &str, suffix: &str| -> Vec<u8> {
        let n = (size - prefix.len() - suffix.len()) / (item.len() + 1);
        let mut s = String::with_capacity(size);
        s.push_str(prefix);
        for i in 0..n {
            if i > 0 {
                s.push(',');
            }
            s.push_str(item);
        }
        s.push_str(suffix);
        s.into_bytes()
    };
    let bytes_payload = |n: usize| -> Vec<u8> { (0..n).flat_map(|_| 0u32.to_le_bytes()).collect() };
    let n = size / 4 - 64;
    let header = format!(
        r#"{{"inputs":[{{"name":"input","shape":[{n}],"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}]}}"#,
        n * 4
    );
    let mut binary = (header.len() as u32).to_le_bytes().to_vec();
    binary.extend_from_slice(header.as_bytes());
    binary.extend_from_slice(&bytes_payload(n));
    let mut g = pb::ModelInferRequest { model_name: "m".into(), ..Default::default() };
    g.inputs.push(pb::model_infer_request::InferInputTensor {
        name: "input".into(),
        datatype: "BYTES".into(),
        shape: vec![(size / 2) as i64],
        contents: Some(pb::InferTensorContents { bytes_contents: vec![Vec::new(); size / 2], ..Default::default() }),
        ..Default::default()
    });
    let cases: Vec<(&str, Target, Vec<u8>)> = vec![
        ("MLflow instances of one-digit numbers", mlflow, fill("{\"instances\":[", "0", "]}")),
        ("MLflow dataframe_split rows", mlflow, fill("{\"dataframe_split\":{\"data\":[", "[0,0,0,0,0,0,0,0]", "]}}")),
        (
            "V2 JSON FP32 data",
            v2_json,
            fill(r#"{"inputs":[{"name":"input","shape":[1],"datatype":"FP32","data":["#, "0", "]}]}"),
        ),
        (
            "V2 JSON BYTES data",
            v2_json,
            fill(r#"{"inputs":[{"name":"input","shape":[1],"datatype":"BYTES","data":["#, "\"\"", "]}]}"),
        ),
        ("V2 binary BYTES of empty strings", v2_binary, binary),
        ("gRPC bytes_contents of empty strings", grpc, g.encode_to_vec()),
    ];
    for (what, target, body) in cases {
        let peak = peak_of(|| target(&m, &body));
        let multiple = peak as f64 / body.len() as f64;
        eprintln!("{what}: {} bytes -> peak {peak} bytes, {multiple:.1}x", body.len());
        assert!(peak <= MULTIPLE * body.len() + SLACK, "{what}: {multiple:.1}x is over the bound of {MULTIPLE}x");
    }
}
