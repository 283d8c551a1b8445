//! The monitor inside the gateway, end to end: traffic in which one feature shifts for one window,
//! the drift table showing it on that feature only, an alert delivered to a webhook exactly once
//! and cleared once, a gateway restart between refreshes that changes no metric row, and a
//! compaction of the table between refreshes that recomputes nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Float64Type;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde_json::{Value, json};

use crate::common::{self, metric};

const FEATURES: [&str; 8] = [
    "amount",
    "account_age_days",
    "txn_count_24h",
    "merchant_risk",
    "distance_km",
    "hour_of_day",
    "is_foreign",
    "card_present",
];
const WINDOW_MS: i64 = 4000;

/// The fraud model's baseline rows (its training sample), feature by feature.
async fn baseline() -> Vec<Vec<f64>> {
    let ctx = SessionContext::new();
    let path = common::repo_root().join("models/fraud_classifier/1/baseline.parquet");
    let df = ctx.read_parquet(path.display().to_string(), ParquetReadOptions::default()).await.unwrap();
    let batches = df.select_columns(&FEATURES).unwrap().collect().await.unwrap();
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            rows.push((0..FEATURES.len()).map(|c| b.column(c).as_primitive::<Float64Type>().value(r)).collect());
        }
    }
    rows
}

fn config(data: &Path, hook: &str) -> String {
    format!(
        r#"
        [server]
        data_dir = "{}"
        [[models]]
        name = "fraud_classifier"
        versions = [1]
        [[endpoints]]
        name = "fraud"
        served_entities = [{{ name = "champion", entity_name = "fraud_classifier", entity_version = 1 }}]
        inference_table = {{ enabled = true, flush_interval_ms = 100 }}
        [endpoints.monitor]
        granularities = ["4 seconds"]
        baseline = "models/fraud_classifier/1/baseline.parquet"
        refresh_interval = "1h"
        [[endpoints.monitor.alerts]]
        name = "amount_shift"
        metric = "ks_test.pvalue"
        column = "amount"
        op = "<"
        threshold = 1e-6
        webhook_url = "{hook}"
        "#,
        data.display()
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Sends 200 baseline rows (from `offset`) inside one fresh window, with `amount` shifted when
/// asked; returns the window start (ms).
async fn phase(t: &common::TestServer, rows: &[Vec<f64>], offset: usize, shift: bool) -> i64 {
    let now = now_ms();
    let start = (now / WINDOW_MS + 1) * WINDOW_MS;
    tokio::time::sleep(Duration::from_millis((start - now + 150) as u64)).await;
    for req in 0..40 {
        let data: Vec<Vec<f64>> = (0..5)
            .map(|k| {
                let mut r = rows[(offset + req * 5 + k) % rows.len()].clone();
                if shift {
                    r[0] = r[0] * 4.0 + 300.0;
                }
                r
            })
            .collect();
        let body = json!({"dataframe_split": {"columns": FEATURES, "data": data}});
        let (status, _) = t.served("/endpoints/fraud/predict", &body, &[]).await;
        assert_eq!(status, 200);
    }
    assert!(now_ms() < start + WINDOW_MS - 200, "the phase did not fit in its window");
    // let the window close and the table writer publish it
    tokio::time::sleep(Duration::from_millis((start + WINDOW_MS - now_ms() + 300).max(0) as u64)).await;
    start
}

async fn refresh(t: &common::TestServer) -> Value {
    let r = t
        .client
        .post(format!("{}/monitors/fraud/refresh", t.admin))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    v
}

/// BASELINE KS p-values of window `start_ms` (all models, whole table) by column.
async fn pvalues(data: &Path, start_ms: i64) -> BTreeMap<String, f64> {
    let ctx = SessionContext::new();
    let files = files(&data.join("fraud_drift_metrics")).await;
    let df = ctx
        .read_parquet(files.keys().map(|p| p.to_string()).collect::<Vec<_>>(), ParquetReadOptions::default())
        .await
        .unwrap();
    ctx.register_table("d", df.into_view()).unwrap();
    let sql = format!(
        "SELECT column_name, ks_test['pvalue'] FROM d WHERE drift_type = 'BASELINE' AND model_id IS NULL \
         AND slice_key IS NULL AND CAST(\"window\"['start'] AS BIGINT) = {} AND ks_test IS NOT NULL",
        start_ms * 1000
    );
    let mut out = BTreeMap::new();
    for b in ctx.sql(&sql).await.unwrap().collect().await.unwrap() {
        let names =
            datafusion::arrow::compute::cast(b.column(0), &datafusion::arrow::datatypes::DataType::Utf8).unwrap();
        for r in 0..b.num_rows() {
            out.insert(
                names.as_string::<i32>().value(r).to_string(),
                b.column(1).as_primitive::<Float64Type>().value(r),
            );
        }
    }
    out
}

/// Every file under `dir` with its bytes.
/// The data files of the metric table in `dir` at its latest version (as its Delta log lists
/// them), by path, with their bytes.
async fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let table = sluice_tables::Table::open(&sluice_tables::Location::Local(dir.to_path_buf())).await.unwrap();
    let mut out = BTreeMap::new();
    for f in table.files().unwrap() {
        let path = dir.join(&f.path);
        out.insert(path.display().to_string(), std::fs::read(&path).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_alert_and_restart() {
    if common::skip_without_ort() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (hook, got) = common::receiver().await;
    let cfg = config(data.path(), &hook);
    let rows = baseline().await;
    let t = common::start_with(common::config(&cfg)).await;

    // unknown monitors are a clear 404
    let r = t.client.get(format!("{}/monitors/nope", t.admin)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.text().await.unwrap().contains("has no monitor"));

    let a = phase(&t, &rows, 0, false).await;
    refresh(&t).await;
    let b = phase(&t, &rows, 200, true).await;
    let report = refresh(&t).await;
    assert!(report["refresh"]["report"]["windows_recomputed"].as_u64().unwrap() >= 1, "{report}");

    let pa = pvalues(data.path(), a).await;
    let pb = pvalues(data.path(), b).await;
    assert_eq!(pb.len(), FEATURES.len(), "{pb:?}");
    assert!(pb["amount"] < 1e-6, "amount shifted: {pb:?}");
    for f in &FEATURES[1..] {
        assert!(pb[*f] > 1e-3, "{f} did not shift: {pb:?}");
        assert!(pa[*f] > 1e-3, "{f} in the normal window: {pa:?}");
    }
    assert!(pa["amount"] > 1e-3, "{pa:?}");

    // webhooks go out in the background: wait for the receiver, and for the count
    common::eventually("the alert's webhook", || async { !got.lock().unwrap().is_empty() }).await;
    common::eventually("the webhook counted", || async {
        let r = t.client.get(format!("{}/monitors/fraud", t.admin)).send().await.unwrap();
        r.json::<Value>().await.unwrap()["alerts"][0]["notifications_sent"] == 1
    })
    .await;
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1, "one notification when the alert triggers: {got:?}");
        assert_eq!(got[0]["alert"], "amount_shift");
        assert_eq!(got[0]["state"], "triggered");
        assert!(got[0]["value"].as_f64().unwrap() < 1e-6);
    }
    let status: Value = t.client.get(format!("{}/monitors/fraud", t.admin)).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["alerts"][0]["firing"], true, "{status}");
    assert!(status["latest_drift"].as_array().unwrap().iter().any(|d| d["column_name"] == "amount"), "{status}");
    assert_eq!(metric(&t, "sluice_monitor_alert_firing", r#"endpoint="fraud",alert="amount_shift""#).await, 1.0);
    // the CLI shows the same as tables, and a refresh in a line
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .args(["--admin-url", &t.admin])
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = cli(&["monitor", "status", "fraud"]);
    assert!(shown.starts_with("fraud: monitor of "), "{shown}");
    let alert: Vec<&str> = shown.lines().find(|l| l.starts_with("amount_shift ")).unwrap().split_whitespace().collect();
    assert_eq!(alert[..2], ["amount_shift", "FIRING"], "{shown}");
    assert!(shown.lines().any(|l| l.split_whitespace().any(|w| w == "amount")), "{shown}");
    let shown = cli(&["monitor", "refresh", "fraud"]);
    assert!(shown.starts_with("fraud: refreshed in ") && shown.ends_with('\n'), "{shown}");
    let json: Value = serde_json::from_str(&cli(&["monitor", "status", "fraud", "-o", "json"])).unwrap();
    assert_eq!(json["alerts"][0]["firing"], true);
    // the dashboard's reads run on the analysis threads
    for path in ["series", "histogram?column=amount"] {
        let r = t.client.get(format!("{}/monitors/fraud/{path}", t.admin)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    for read in ["dashboard_series", "dashboard_histogram"] {
        let labels = format!(r#"read="{read}",result="done""#);
        assert!(metric(&t, "sluice_analysis_reads_total", &labels).await >= 1.0, "{read}");
    }

    // restart between two refreshes: nothing already computed changes, nothing is re-sent
    let before = files(&data.path().join("fraud_profile_metrics")).await;
    let before_drift = files(&data.path().join("fraud_drift_metrics")).await;
    t.stop().await;
    let t = common::start_with(common::config(&cfg)).await;
    let c = phase(&t, &rows, 400, false).await;
    refresh(&t).await;
    let after = files(&data.path().join("fraud_profile_metrics")).await;
    let after_drift = files(&data.path().join("fraud_drift_metrics")).await;
    for (old, new) in [(&before, &after), (&before_drift, &after_drift)] {
        for (path, bytes) in old {
            assert_eq!(new.get(path), Some(bytes), "{path} changed across the restart");
        }
        assert!(new.len() > old.len(), "the new window was written");
    }
    let pc = pvalues(data.path(), c).await;
    assert!(pc["amount"] > 1e-3, "{pc:?}");
    common::eventually("the clearing webhook", || async { got.lock().unwrap().len() >= 2 }).await;
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 2, "one more notification when it clears: {got:?}");
        assert_eq!(got[1]["state"], "cleared");
    }
    let status = || async {
        let r = t.client.get(format!("{}/monitors/fraud", t.admin)).send().await.unwrap();
        r.json::<Value>().await.unwrap()
    };
    assert_eq!(status().await["alerts"][0]["firing"], false);
    // webhooks are sent in the background: counted once the answer is back
    common::eventually("both notifications counted", || async {
        status().await["alerts"][0]["notifications_sent"] == 2
    })
    .await;

    // `sluice table optimize` between two refreshes: the refresh follows the table's versions,
    // so the compacted files hold rows already read: no row is read again, no window is
    // recomputed, the metric tables get no new version
    let metrics = || async {
        let mut out = Vec::new();
        for name in ["fraud_profile_metrics", "fraud_drift_metrics"] {
            let dir = data.path().join(name);
            let version =
                sluice_tables::Table::open(&sluice_tables::Location::Local(dir.clone())).await.unwrap().version();
            out.push((version, files(&dir).await));
        }
        out
    };
    let optimize = || {
        let table = data.path().join("fraud");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["table", "optimize", &table.display().to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
        // "<table>: N files compacted into M (version V)"
        let n: Vec<u64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        assert!(n.len() >= 2 && n[0] > n[1], "{text}");
        n[1]
    };
    let before = metrics().await;
    let compacted = optimize();
    let report = refresh(&t).await;
    let r = &report["refresh"]["report"];
    assert_eq!(r["rewritten_files"], compacted, "{report}");
    for counter in ["windows_recomputed", "new_files", "removed_files", "rows_read"] {
        assert_eq!(r[counter], 0, "{counter}: {report}");
    }
    assert!(metrics().await == before, "the metric tables changed after a compaction");

    // new rows compacted together with files already read before the next refresh: that
    // rewrite is no rename, the new window is computed
    let d = phase(&t, &rows, 600, true).await;
    optimize();
    let report = refresh(&t).await;
    assert!(report["refresh"]["report"]["windows_recomputed"].as_u64().unwrap() >= 1, "{report}");
    let pd = pvalues(data.path(), d).await;
    assert!(pd["amount"] < 1e-6, "{pd:?}");
    // recomputed from the compacted file (rows in another order): the same up to rounding
    let pc2 = pvalues(data.path(), c).await;
    assert_eq!(pc2.keys().collect::<Vec<_>>(), pc.keys().collect::<Vec<_>>());
    for (k, v) in &pc {
        assert!((pc2[k] - v).abs() <= 1e-9 * v.abs().max(1e-300), "{k}: {v} then {}", pc2[k]);
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_monitor_expressions_are_refused_by_name() {
    if common::skip_without_ort() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let t = common::start_with(common::config(&config(data.path(), "http://127.0.0.1:9/hook"))).await;
    let endpoint = |definition: &str| {
        json!({
            "served_entities": [{"name": "champion", "entity_name": "fraud_classifier", "entity_version": "1"}],
            "inference_table": {"enabled": true},
            "monitor": {
                "granularities": ["1 hour"],
                "custom_metrics": [{"type": "aggregate", "name": "bad_metric", "input_columns": [":table"],
                                    "definition": definition}],
            },
        })
    };
    let put = |body: Value| {
        let c = t.client.clone();
        let url = format!("{}/admin/endpoints/fraud", t.admin);
        async move {
            let r = c.put(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = put(endpoint("avg(no_such_column)")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_metric") && body.contains("no_such_column"), "{body}");
    // the endpoint keeps serving on its previous config
    let (status, _) = t.served("/endpoints/fraud/predict", &common::fraud_body(1), &[]).await;
    assert_eq!(status, 200);
    let (status, body) = put(endpoint("avg(CASE WHEN amount > 1000 THEN 1.0 ELSE 0.0 END)")).await;
    assert_eq!(status, 200, "{body}");
    let bad_granularity = json!({
        "served_entities": [{"name": "champion", "entity_name": "fraud_classifier", "entity_version": "1"}],
        "inference_table": {"enabled": true},
        "monitor": {"granularities": ["1 fortnight"]},
    });
    let (status, body) = put(bad_granularity).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("monitor.granularities") && body.contains("fortnight"), "{body}");
    t.stop().await;
}
