//! Measures what inference logging costs: the same endpoint with its inference table on and off,
//! driven in one run by the same closed-loop HTTP clients, alternating rounds so machine noise
//! hits both alike. Prints requests per second of each and the ratio.
//!
//!     scripts/fetch-onnxruntime.sh
//!     cargo run --release -p sluice --example logging_cost -- [seconds-per-round] [rounds] [clients]
//!
//! Until the load-test harness exists this is the measurement behind the README's number.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice::config::Config;

const CONFIG: &str = r#"
[server]
data_dir = "DATA"
[[models]]
name = "fraud_classifier"
versions = [1]
[[endpoints]]
name = "on"
served_entities = [{ name = "m", entity_name = "fraud_classifier", entity_version = 1 }]
inference_table = { enabled = true }
[[endpoints]]
name = "off"
served_entities = [{ name = "m", entity_name = "fraud_classifier", entity_version = 1 }]
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let clients: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(16);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let data = std::env::temp_dir().join(format!("sluice-logging-cost-{}", std::process::id()));
        let mut config = Config::from_toml(&CONFIG.replace("DATA", &data.display().to_string()), "bench", &repo)?;
        let any = "127.0.0.1:0".parse()?;
        (config.server.http_addr, config.server.grpc_addr, config.server.admin_addr) = (any, any, any);
        config.runtime.onnxruntime_lib = Some(repo.join(sluice::runtime::library::DEFAULT_RELATIVE_PATH));
        let server = sluice::server::start(config, None).await?;
        let base = format!("http://{}", server.http_addr);
        let body = Arc::new(
            r#"{"dataframe_split":{"columns":["amount","account_age_days","txn_count_24h","merchant_risk","distance_km","hour_of_day","is_foreign","card_present"],"data":[[120.5,400,3,0.3,12,14,0,1]]}}"#
                .to_string(),
        );
        let client = reqwest::Client::new();
        let mut totals = [0u64; 2];
        let mut elapsed = [0f64; 2];
        for round in 0..rounds * 2 {
            let which = round % 2;
            let url = Arc::new(format!("{base}/endpoints/{}/predict", ["on", "off"][which]));
            let done = Arc::new(AtomicU64::new(0));
            let stop = Instant::now() + Duration::from_secs(secs);
            let start = Instant::now();
            let mut handles = Vec::new();
            for _ in 0..clients {
                let (client, url, body, done) = (client.clone(), url.clone(), body.clone(), done.clone());
                handles.push(tokio::spawn(async move {
                    while Instant::now() < stop {
                        let r = client.post(url.as_str()).header("content-type", "application/json").body(body.to_string()).send().await;
                        if matches!(r, Ok(r) if r.status() == 200) {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for h in handles {
                let _ = h.await;
            }
            totals[which] += done.load(Ordering::Relaxed);
            elapsed[which] += start.elapsed().as_secs_f64();
        }
        let rps = [totals[0] as f64 / elapsed[0], totals[1] as f64 / elapsed[1]];
        println!("logging on : {:>9.0} req/s ({} requests)", rps[0], totals[0]);
        println!("logging off: {:>9.0} req/s ({} requests)", rps[1], totals[1]);
        println!("on / off   : {:.3}", rps[0] / rps[1]);
        server.shutdown(Duration::from_secs(10)).await;
        let _ = std::fs::remove_dir_all(&data);
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
