//! The operator CLI: `sluice endpoints|traffic|config|rollout|experiment ...` talk to a running
//! gateway's admin API.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::api::admin::EndpointView;

/// A client of the admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// `base`: e.g. `http://127.0.0.1:8002`.
    pub fn new(base: &str, token: Option<String>) -> AdminClient {
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request; a non-2xx answer is an error carrying the server's `error` text.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut req = hyper::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let payload = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(v).map_err(|e| e.to_string())?)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).map_err(|e| format!("bad request for {url}: {e}"))?;
        let resp = self.client.request(req).await.map_err(|e| {
            format!("cannot reach the admin API at {}: {e} (is sluice running? see --admin-url)", self.base)
        })?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let value: Value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        if status.is_success() {
            Ok(value)
        } else {
            let msg = value.get("error").and_then(Value::as_str).unwrap_or("no error text");
            Err(format!("{} {msg}", status.as_u16()))
        }
    }

    pub async fn endpoints(&self) -> Result<Vec<EndpointView>, String> {
        let v = self.call(Method::GET, "/admin/endpoints", None).await?;
        serde_json::from_value(v.get("endpoints").cloned().unwrap_or(Value::Null)).map_err(|e| e.to_string())
    }
}

/// Parses `name=percent` pairs into a Databricks traffic config.
pub fn traffic_from_pairs(pairs: &[String]) -> Result<Value, String> {
    let mut routes = Vec::new();
    for p in pairs {
        let (name, pct) = p.split_once('=').ok_or_else(|| format!("'{p}' is not NAME=PERCENT"))?;
        let pct: i64 = pct.trim().parse().map_err(|_| format!("'{pct}' in '{p}' is not a whole percentage"))?;
        routes.push(serde_json::json!({ "served_model_name": name.trim(), "traffic_percentage": pct }));
    }
    if routes.is_empty() {
        return Err("give at least one NAME=PERCENT".into());
    }
    Ok(serde_json::json!({ "routes": routes }))
}

/// A readable table of endpoints.
pub fn endpoints_table(views: &[EndpointView]) -> String {
    let mut out = format!("{:<20} {:>7}  {}\n", "ENDPOINT", "VERSION", "SERVED MODELS (traffic / mirror)");
    for v in views {
        let served: Vec<String> = v
            .served_models
            .iter()
            .map(|s| match s.mirror_percent {
                Some(m) => format!("{}={}:v{} shadow {m}%", s.name, s.model, s.version),
                None => format!("{}={}:v{} {}%", s.name, s.model, s.version, s.traffic_percentage),
            })
            .collect();
        out.push_str(&format!("{:<20} {:>7}  {}\n", v.name, v.config_version, served.join(", ")));
    }
    out
}

/// `v` with every null member of every object removed (optional CLI flags left unset).
pub fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(o) => {
            Value::Object(o.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, without_nulls(v))).collect())
        }
        other => other,
    }
}

/// Percent-encodes a query parameter value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
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
    fn traffic_pairs_parse() {
        let v = traffic_from_pairs(&["champion=90".into(), "challenger = 10".into()]).unwrap();
        assert_eq!(v["routes"][1]["served_model_name"], "challenger");
        assert_eq!(v["routes"][1]["traffic_percentage"], 10);
        assert!(traffic_from_pairs(&["champion".into()]).is_err());
        assert!(traffic_from_pairs(&["a=x".into()]).is_err());
    }
}
