//! What the CLI prints for a person (`--output table`): the endpoint list and the A/B report. It
//! reads the admin API's JSON through its own small types, not the server's handler types, so the
//! two sides share only the wire format.

use serde::Deserialize;
use serde_json::Value;

/// One entry of `GET /admin/endpoints` (`endpoints[]`): the members the table shows.
#[derive(Debug, Clone, Deserialize)]
pub struct EndpointRow {
    pub name: String,
    pub config_version: u64,
    pub served_models: Vec<ServedModelRow>,
}

/// A served model of an [`EndpointRow`].
#[derive(Debug, Clone, Deserialize)]
pub struct ServedModelRow {
    pub name: String,
    pub model: String,
    pub version: String,
    pub traffic_percentage: u32,
    /// Set when the served model is a shadow.
    pub mirror_percent: Option<u32>,
    /// Requests answered in the last 5 minutes, from the dashboard's traffic counts (every
    /// replica's, with a config store); not part of `GET /admin/endpoints`.
    #[serde(skip)]
    pub requests: Option<u64>,
}

/// Adds each served model's requests from a `GET /dashboard/api/traffic` answer.
pub fn add_requests(rows: &mut [EndpointRow], traffic: &Value) {
    let series = traffic.get("series").and_then(Value::as_array).cloned().unwrap_or_default();
    for row in rows.iter_mut() {
        for m in row.served_models.iter_mut() {
            let n: u64 = series
                .iter()
                .filter(|s| s["endpoint"] == row.name.as_str() && s["served_model"] == m.name.as_str())
                .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| p["requests"].as_u64())
                .sum();
            m.requests = Some(n);
        }
    }
}

/// The endpoints of a `GET /admin/endpoints` answer.
pub fn endpoint_rows(listing: &Value) -> Result<Vec<EndpointRow>, super::CliError> {
    Ok(Vec::<EndpointRow>::deserialize(listing.get("endpoints").unwrap_or(&Value::Null))?)
}

/// A readable table of endpoints.
pub fn endpoints_table(rows: &[EndpointRow]) -> String {
    let requests = rows.iter().flat_map(|r| &r.served_models).any(|m| m.requests.is_some());
    let head = if requests {
        "SERVED MODELS (traffic / mirror, requests in 5 min)"
    } else {
        "SERVED MODELS (traffic / mirror)"
    };
    let mut out = format!("{:<20} {:>7}  {head}\n", "ENDPOINT", "VERSION");
    for v in rows {
        let served: Vec<String> = v
            .served_models
            .iter()
            .map(|s| {
                let share = match s.mirror_percent {
                    Some(m) => format!("{}={}:v{} shadow {m}%", s.name, s.model, s.version),
                    None => format!("{}={}:v{} {}%", s.name, s.model, s.version, s.traffic_percentage),
                };
                match s.requests {
                    Some(n) => format!("{share} ({n} req)"),
                    None => share,
                }
            })
            .collect();
        out.push_str(&format!("{:<20} {:>7}  {}\n", v.name, v.config_version, served.join(", ")));
    }
    out
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "-".into())
}

fn interval(v: &Value, digits: usize) -> String {
    match v.as_array() {
        Some(a) if a.len() == 2 => format!("[{}, {}]", num(&a[0], digits), num(&a[1], digits)),
        _ => "-".into(),
    }
}

/// A readable A/B report (`sluice experiment report`), from `GET /experiments/{endpoint}`.
pub fn experiment_table(r: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut out = format!(
        "endpoint {}  {} .. {}  ({} requests)\nmetric {} ({}, {}), alpha {}, champion '{}'\n\n",
        s(&r["endpoint"]),
        s(&r["from"]),
        s(&r["to"]),
        r["requests"],
        s(&r["metric"]["name"]),
        s(&r["metric"]["test"]),
        if r["metric"]["higher_is_better"].as_bool() == Some(false) { "lower is better" } else { "higher is better" },
        r["alpha"],
        s(&r["champion"]),
    );
    out.push_str(&format!(
        "{:<16} {:>8} {:>7} {:>8} {:>8} {:>9} {:>9} {:>7} {:>9} {:<22} {:>9} {:>10}  {}\n",
        "SERVED MODEL",
        "REQUESTS",
        "SHARE",
        "EXPECTED",
        "ERRORS",
        "P50 MS",
        "P99 MS",
        "LABELS",
        "METRIC",
        "METRIC CI",
        "DIFF",
        "P-VALUE",
        "VERDICT"
    ));
    for a in r["arms"].as_array().into_iter().flatten() {
        let vs = &a["vs_champion"];
        out.push_str(&format!(
            "{:<16} {:>8} {:>7} {:>8} {:>8} {:>9} {:>9} {:>7} {:>9} {:<22} {:>9} {:>10}  {}\n",
            s(&a["served_model"]),
            a["requests"],
            num(&a["share"], 3),
            num(&a["expected_share"], 3),
            a["errors"],
            num(&a["latency_ms"]["p50"], 2),
            num(&a["latency_ms"]["p99"], 2),
            a["metric"]["n"],
            num(&a["metric"]["value"], 4),
            interval(&a["metric"]["ci"], 4),
            if vs.is_null() { "(champion)".to_string() } else { num(&vs["diff"], 4) },
            if vs.is_null() {
                String::new()
            } else {
                vs["p_value"].as_f64().map(|p| format!("{p:.3e}")).unwrap_or("-".into())
            },
            if vs.is_null() { String::new() } else { s(&vs["verdict"]) },
        ));
    }
    let srm = &r["srm"];
    out.push_str(&format!(
        "\nsample ratio: chi2 {} (dof {}), p = {}  {}\n",
        num(&srm["statistic"], 3),
        srm["dof"],
        srm["p_value"].as_f64().map(|p| format!("{p:.3e}")).unwrap_or("-".into()),
        if srm["flagged"].as_bool() == Some(true) { "MISMATCH: the split is not the configured one" } else { "ok" }
    ));
    for sh in r["shadows"].as_array().into_iter().flatten() {
        let o = &sh["overall"];
        let what = match o["agreement_rate"].as_f64() {
            Some(a) => format!("agreement {a:.4}"),
            None => format!("mean |diff| {}", num(&o["mean_abs_diff"], 4)),
        };
        out.push_str(&format!(
            "shadow '{}' vs '{}': {} over {} rows\n",
            s(&sh["shadow"]),
            s(&sh["primary"]),
            what,
            o["rows"]
        ));
    }
    for w in r["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("warning: {}\n", s(w)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_table_from_the_admin_json() {
        let listing = serde_json::json!({ "endpoints": [{
            "name": "fraud", "config_version": 3, "config": { "name": "fraud" },
            "served_models": [
                { "name": "champion", "model": "fraud_classifier", "version": "1", "traffic_percentage": 90 },
                { "name": "shadow", "model": "fraud_classifier", "version": "3", "traffic_percentage": 0,
                  "mirror_percent": 100 }
            ]
        }]});
        let table = endpoints_table(&endpoint_rows(&listing).unwrap());
        let line = table.lines().nth(1).unwrap();
        assert!(line.starts_with("fraud "), "{table}");
        assert!(line.ends_with("champion=fraud_classifier:v1 90%, shadow=fraud_classifier:v3 shadow 100%"), "{table}");
        assert!(endpoint_rows(&serde_json::json!({ "endpoints": [{ "name": 1 }] })).is_err());
        // with the dashboard's counts: each served model's requests of the buckets
        let mut rows = endpoint_rows(&listing).unwrap();
        let traffic = serde_json::json!({ "series": [
            { "endpoint": "fraud", "served_model": "champion", "points": [{ "requests": 30 }, { "requests": 12 }] },
            { "endpoint": "other", "served_model": "champion", "points": [{ "requests": 99 }] }
        ]});
        add_requests(&mut rows, &traffic);
        let table = endpoints_table(&rows);
        assert!(table.lines().next().unwrap().contains("requests in 5 min"), "{table}");
        assert!(table.contains("v1 90% (42 req), shadow=fraud_classifier:v3 shadow 100% (0 req)"), "{table}");
    }
}
