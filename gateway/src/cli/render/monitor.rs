//! Monitors for a person: `sluice monitor status` (the last refresh, the newest window's drift,
//! the alerts) and what a refresh (`monitor refresh`, `monitor run`) read, wrote and fired.

use serde_json::Value;

use super::plain_table;

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| if v.is_null() { String::new() } else { v.to_string() }, str::to_string)
}

/// A statistic with 4 decimals, a p-value in scientific notation, `-` when absent.
fn stat(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".to_string(), |x| format!("{x:.4}"))
}

fn pvalue(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".to_string(), |x| format!("{x:.2e}"))
}

/// `sluice monitor status`: from `GET /monitors/{endpoint}`.
pub fn monitor_status(s: &Value) -> String {
    let mut out = format!(
        "{}: monitor of {} ({} refreshes, last {}{})\n",
        text(&s["endpoint"]),
        text(&s["table_dir"]),
        s["refreshes"].as_u64().unwrap_or(0),
        s["last_refresh"].as_str().unwrap_or("never"),
        if s["refreshing"].as_bool() == Some(true) { "; refreshing now" } else { "" },
    );
    out.push_str(&format!(
        "metric tables: {}, {}\nbaseline: {}\n",
        text(&s["profile_metrics"]),
        text(&s["drift_metrics"]),
        s["baseline"].as_str().unwrap_or("none")
    ));
    if let Some(e) = s["last_error"].as_str() {
        out.push_str(&format!("last error: {e}\n"));
    }
    let drift = s["latest_drift"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("\ndrift of the newest window ({} rows)\n", drift.len()));
    if !drift.is_empty() {
        let rows = drift
            .iter()
            .map(|d| {
                vec![
                    text(&d["granularity"]),
                    text(&d["drift_type"]),
                    d["model_id"].as_str().unwrap_or(":all").to_string(),
                    text(&d["column_name"]),
                    d["window"]["start"].as_str().unwrap_or("").to_string(),
                    pvalue(&d["ks_test"]["pvalue"]),
                    stat(&d["population_stability_index"]),
                    stat(&d["js_distance"]),
                    stat(&d["wasserstein_distance"]),
                    pvalue(&d["chi_squared_test"]["pvalue"]),
                    stat(&d["tv_distance"]),
                    stat(&d["l_infinity_distance"]),
                ]
            })
            .collect();
        out.push_str(&plain_table(
            &[
                "GRANULARITY",
                "DRIFT TYPE",
                "MODEL",
                "COLUMN",
                "WINDOW",
                "KS P",
                "PSI",
                "JS",
                "WASSERSTEIN",
                "CHI2 P",
                "TV",
                "L-INF",
            ],
            &[5, 6, 7, 8, 9, 10, 11],
            rows,
        ));
    }
    let alerts = s["alerts"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("\nalerts ({})\n", alerts.len()));
    if !alerts.is_empty() {
        let rows = alerts
            .iter()
            .map(|a| {
                vec![
                    text(&a["name"]),
                    if a["firing"].as_bool() == Some(true) { "FIRING" } else { "ok" }.to_string(),
                    stat(&a["value"]),
                    a["since"].as_str().unwrap_or("-").to_string(),
                    a["notifications_sent"].as_u64().unwrap_or(0).to_string(),
                    a["notifications_failed"].as_u64().unwrap_or(0).to_string(),
                ]
            })
            .collect();
        out.push_str(&plain_table(&["ALERT", "STATE", "VALUE", "SINCE", "SENT", "FAILED"], &[2, 4, 5], rows));
    }
    out
}

/// What a refresh did: `fraud: refreshed in 12.3 ms: 2 new files, 1200 rows read, ...` and a
/// line an alert that fired or cleared. `report` is a refresh report, `transitions` its alert
/// transitions.
pub fn refresh_summary(what: &str, report: &Value, transitions: &Value) -> String {
    let n = |k: &str| report[k].as_u64().unwrap_or(0);
    let ms = report["duration_ms"].as_f64().unwrap_or(0.0);
    let mut out = if n("new_files") + n("new_label_files") + n("removed_files") + n("rewritten_files") == 0 {
        format!("{what}: refreshed in {ms:.1} ms: nothing new to read\n")
    } else {
        let mut files = vec![format!("{} new files", n("new_files"))];
        for (k, label) in
            [("new_label_files", "new label files"), ("removed_files", "removed"), ("rewritten_files", "rewritten")]
        {
            if n(k) > 0 {
                files.push(format!("{} {label}", n(k)));
            }
        }
        format!(
            "{what}: refreshed in {ms:.1} ms: {}, {} rows read, {} windows recomputed; wrote {} profile and {} drift rows\n",
            files.join(", "),
            n("rows_read"),
            n("windows_recomputed"),
            n("profile_rows"),
            n("drift_rows"),
        )
    };
    for t in transitions.as_array().into_iter().flatten() {
        let model = t["model_id"].as_str().map(|m| format!(" of model {m}")).unwrap_or_default();
        out.push_str(&format!(
            "alert {} {}: {} of {}{model} = {} ({} {}, {} window{})\n",
            text(&t["alert"]),
            text(&t["state"]),
            text(&t["metric"]),
            text(&t["column"]),
            stat(&t["value"]),
            text(&t["op"]),
            t["threshold"],
            text(&t["granularity"]),
            t["window_start"].as_str().map(|w| format!(" from {w}")).unwrap_or_default(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_refresh_in_one_line_and_a_line_an_alert() {
        let report = json!({"new_files": 2, "new_label_files": 0, "removed_files": 0, "rewritten_files": 0,
            "windows_recomputed": 3, "rows_read": 1200, "profile_rows": 24, "drift_rows": 36, "duration_ms": 12.34});
        let t = json!([{"alert": "amount_drift", "state": "triggered", "metric": "js_distance", "column": "amount",
            "model_id": null, "op": ">", "threshold": 0.2, "value": 0.31, "granularity": "1 hour",
            "window_start": "2026-12-07T10:00:00Z"}]);
        assert_eq!(
            refresh_summary("fraud", &report, &t),
            "fraud: refreshed in 12.3 ms: 2 new files, 1200 rows read, 3 windows recomputed; wrote 24 profile and 36 \
             drift rows\nalert amount_drift triggered: js_distance of amount = 0.3100 (> 0.2, 1 hour window from \
             2026-12-07T10:00:00Z)\n"
        );
        let idle = json!({"new_files": 0, "duration_ms": 0.5});
        assert_eq!(refresh_summary("fraud", &idle, &Value::Null), "fraud: refreshed in 0.5 ms: nothing new to read\n");
    }

    #[test]
    fn status_tables() {
        let s = json!({
            "endpoint": "fraud", "table": "fraud", "table_dir": "data/fraud", "profile_metrics": "fraud_profile_metrics",
            "drift_metrics": "fraud_drift_metrics", "granularities": ["1 hour"], "refresh_interval_s": 60.0,
            "baseline": "models/b.parquet", "refreshes": 4, "refreshing": false, "last_refresh": "2026-12-07T10:00:00Z",
            "last_report": null, "last_error": null, "latest_profile": [],
            "latest_drift": [{"window": {"start": "2026-12-07T10:00:00Z", "end": "2026-12-07T11:00:00Z"},
                "granularity": "1 hour", "drift_type": "BASELINE", "model_id": null, "column_name": "amount",
                "ks_test": {"statistic": 0.5, "pvalue": 0.000012}, "population_stability_index": 0.25,
                "js_distance": 0.31, "wasserstein_distance": 12.5, "chi_squared_test": null, "tv_distance": null,
                "l_infinity_distance": null}],
            "alerts": [{"name": "amount_drift", "firing": true, "value": 0.31, "since": "2026-12-07T10:00:00Z",
                "notifications_sent": 1, "notifications_failed": 0}]
        });
        let out = monitor_status(&s);
        assert!(out.starts_with("fraud: monitor of data/fraud (4 refreshes, last 2026-12-07T10:00:00Z)\n"), "{out}");
        assert!(
            out.contains("1 hour       BASELINE    :all   amount  2026-12-07T10:00:00Z  1.20e-5  0.2500  0.3100"),
            "{out}"
        );
        assert!(out.contains("amount_drift  FIRING  0.3100  2026-12-07T10:00:00Z     1       0"), "{out}");
    }
}
