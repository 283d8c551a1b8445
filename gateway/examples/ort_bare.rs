//! Bare ONNX Runtime: the in-process cost of one request for each bundled model, with the session
//! options the gateway uses (graph optimisation level 3, 1 intra-op and 1 inter-op thread), no
//! gateway code in the loop. The baseline the gateway's overhead is measured against.
//!
//!     cargo run --release -p sluice --example ort_bare -- [iterations] [rows] [--json]
//!
//! For each model: one session, inputs of `rows` rows (seeded values), `iterations` timed
//! `Session::run` calls after 200 warm-up calls, on one thread. Prints p50/p99 latency (us) and
//! runs per second.

use std::time::Instant;

use ort::session::{Session, SessionInputValue, builder::GraphOptimizationLevel};
use ort::value::{TensorElementType, TensorRef, ValueType};

const MODELS: &[(&str, u64)] = &[("fraud_classifier", 1), ("delivery_time", 1), ("mlp", 1)];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let nums: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    let iterations = nums.first().copied().unwrap_or(20_000);
    let rows = nums.get(1).copied().unwrap_or(1);
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lib = repo.join(sluice::runtime::library::DEFAULT_RELATIVE_PATH);
    let env = sluice::runtime::library::environment(Some(&lib))?;
    let mut results = Vec::new();
    for (model, version) in MODELS {
        let path = repo.join(format!("models/{model}/{version}/model.onnx"));
        let mut session = Session::builder(env)?
            .with_optimization_level(GraphOptimizationLevel::Level3)?
            .with_intra_threads(1)?
            .with_inter_threads(1)?
            .commit_from_file(&path)?;
        // seeded inputs: every FP32 input with its dynamic dimensions set to `rows`
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut inputs: Vec<(String, Vec<i64>, Vec<f32>)> = Vec::new();
        for o in session.inputs() {
            let ValueType::Tensor { ty, shape, .. } = o.dtype() else { return Err("non-tensor input".into()) };
            if *ty != TensorElementType::Float32 {
                return Err(format!("{model}: input {} is {ty:?}; this benchmark feeds FP32", o.name()).into());
            }
            let dims: Vec<i64> = shape
                .iter()
                .enumerate()
                .map(|(i, &d)| if d < 0 { if i == 0 { rows as i64 } else { 1 } } else { d })
                .collect();
            let n: i64 = dims.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect();
            inputs.push((o.name().to_string(), dims, data));
        }
        let run = |session: &mut Session| -> Result<(), Box<dyn std::error::Error>> {
            let mut values: Vec<(&str, SessionInputValue<'_>)> = Vec::new();
            for (name, dims, data) in &inputs {
                values.push((name.as_str(), TensorRef::from_array_view((dims.clone(), &data[..]))?.into()));
            }
            let out = session.run(values)?;
            drop(out);
            Ok(())
        };
        for _ in 0..200 {
            run(&mut session)?;
        }
        let mut lat = Vec::with_capacity(iterations);
        let start = Instant::now();
        for _ in 0..iterations {
            let t = Instant::now();
            run(&mut session)?;
            lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
        let wall = start.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
        results.push(serde_json::json!({
            "model": model, "version": version, "rows": rows, "iterations": iterations,
            "p50_us": pct(0.5), "p99_us": pct(0.99), "runs_per_s": iterations as f64 / wall,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!("{:<18} {:>5} {:>10} {:>10} {:>12}", "model", "rows", "p50 us", "p99 us", "runs/s");
        for r in &results {
            println!(
                "{:<18} {:>5} {:>10.1} {:>10.1} {:>12.0}",
                r["model"].as_str().unwrap_or(""),
                r["rows"],
                r["p50_us"].as_f64().unwrap_or(0.0),
                r["p99_us"].as_f64().unwrap_or(0.0),
                r["runs_per_s"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}
