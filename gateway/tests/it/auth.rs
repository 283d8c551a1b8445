//! Principals and scopes: every route of every port (HTTP inference, admin, gRPC) tried without a
//! token, with a token that is not one, with a valid token of the wrong scope and with the right
//! one. The table below is checked against the routes in the source, so a route added without a
//! row (and so without a decided rule) fails this test.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sluice_wire::pb;
use sluice_wire::pb::grpc_inference_service_client::GrpcInferenceServiceClient;

use crate::common::{self, DEMO};

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// What a route needs, as the test expects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Open,
    Authn,
    /// `query:fraud`
    Query,
    /// `query:*` (a model called directly)
    QueryAny,
    /// `labels:fraud`
    Labels,
    Read,
    Manage,
}

/// (principal, secret, scopes)
const PRINCIPALS: &[(&str, &str, &[&str])] = &[
    ("app", "app-secret-0123456789", &["query:fraud"]),
    ("direct", "direct-secret-0123456789", &["query:*"]),
    ("labeller", "labeller-secret-0123456789", &["labels:fraud"]),
    ("viewer", "viewer-secret-0123456789", &["read"]),
    ("ops", "ops-secret-0123456789", &["manage"]),
];

fn secret(name: &str) -> &'static str {
    PRINCIPALS.iter().find(|p| p.0 == name).unwrap().1
}

/// A principal whose scopes meet `need`, and one whose do not (None: every valid token meets it).
fn right_and_wrong(need: Need) -> (Option<&'static str>, Option<&'static str>) {
    match need {
        Need::Open => (None, None),
        Need::Authn => (Some("labeller"), None),
        Need::Query => (Some("app"), Some("labeller")),
        Need::QueryAny => (Some("direct"), Some("app")),
        Need::Labels => (Some("labeller"), Some("app")),
        Need::Read => (Some("viewer"), Some("app")),
        Need::Manage => (Some("ops"), Some("viewer")),
    }
}

fn config_text() -> String {
    let mut text = DEMO.replacen("[server]\n", &format!("[server]\nadmin_token = \"{ADMIN_TOKEN}\"\n"), 1);
    for (name, secret, scopes) in PRINCIPALS {
        let scopes: Vec<String> = scopes.iter().map(|s| format!("\"{s}\"")).collect();
        text.push_str(&format!(
            "\n[[auth.tokens]]\nname = \"{name}\"\nhash = \"{}\"\nscopes = [{}]\n",
            sluice::auth::hash(secret),
            scopes.join(", ")
        ));
    }
    text
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Http,
    Admin,
}

/// Every HTTP route: port, method, route template (as in the source), a concrete path, a body
/// (None: no body), and the need. Bodies and names are chosen so a call that gets through
/// changes nothing (a bad body, an unknown name).
fn http_routes() -> Vec<(Port, &'static str, &'static str, String, Option<Value>, Need)> {
    use Need::*;
    use Port::*;
    let predict = common::fraud_body(1);
    vec![
        (Http, "POST", "/predict", "/predict".into(), Some(predict.clone()), Query),
        (
            Http,
            "POST",
            "/endpoints/{endpoint}/predict",
            "/endpoints/fraud/predict".into(),
            Some(predict.clone()),
            Query,
        ),
        (
            Http,
            "POST",
            "/serving-endpoints/{endpoint}/invocations",
            "/serving-endpoints/fraud/invocations".into(),
            Some(predict.clone()),
            Query,
        ),
        (
            Http,
            "POST",
            "/endpoints/{endpoint}/served-models/{served}/predict",
            "/endpoints/fraud/served-models/champion/predict".into(),
            Some(predict.clone()),
            Query,
        ),
        (
            Http,
            "POST",
            "/endpoints/{endpoint}/labels",
            "/endpoints/fraud/labels".into(),
            Some(json!({"labels": "not a list"})),
            Labels,
        ),
        (Http, "GET", "/v2", "/v2".into(), None, Authn),
        (Http, "GET", "/v2/health/live", "/v2/health/live".into(), None, Open),
        (Http, "GET", "/v2/health/ready", "/v2/health/ready".into(), None, Open),
        (Http, "GET", "/v2/models/stats", "/v2/models/stats".into(), None, Authn),
        (Http, "GET", "/v2/models/{model}", "/v2/models/fraud_classifier".into(), None, Authn),
        (Http, "GET", "/v2/models/{model}/ready", "/v2/models/fraud_classifier/ready".into(), None, Authn),
        (Http, "GET", "/v2/models/{model}/config", "/v2/models/fraud_classifier/config".into(), None, Authn),
        (Http, "GET", "/v2/models/{model}/stats", "/v2/models/fraud_classifier/stats".into(), None, Authn),
        (
            Http,
            "POST",
            "/v2/models/{model}/infer",
            "/v2/models/fraud_classifier/infer".into(),
            Some(json!({"inputs": []})),
            QueryAny,
        ),
        (
            Http,
            "GET",
            "/v2/models/{model}/versions/{version}",
            "/v2/models/fraud_classifier/versions/1".into(),
            None,
            Authn,
        ),
        (
            Http,
            "GET",
            "/v2/models/{model}/versions/{version}/ready",
            "/v2/models/fraud_classifier/versions/1/ready".into(),
            None,
            Authn,
        ),
        (
            Http,
            "GET",
            "/v2/models/{model}/versions/{version}/config",
            "/v2/models/fraud_classifier/versions/1/config".into(),
            None,
            Authn,
        ),
        (
            Http,
            "GET",
            "/v2/models/{model}/versions/{version}/stats",
            "/v2/models/fraud_classifier/versions/1/stats".into(),
            None,
            Authn,
        ),
        (
            Http,
            "POST",
            "/v2/models/{model}/versions/{version}/infer",
            "/v2/models/fraud_classifier/versions/1/infer".into(),
            Some(json!({"inputs": []})),
            QueryAny,
        ),
        (Http, "GET", "/metrics", "/metrics".into(), None, Read),
        // MLflow's scoring server routes
        (Http, "POST", "/invocations", "/invocations".into(), Some(predict.clone()), Query),
        (Http, "GET", "/ping", "/ping".into(), None, Open),
        (Http, "GET", "/version", "/version".into(), None, Authn),
        // Databricks' serving-endpoints API: reads need `read`, changes `manage`
        (Http, "GET", "/api/2.0/serving-endpoints", "/api/2.0/serving-endpoints".into(), None, Read),
        (
            Http,
            "POST",
            "/api/2.0/serving-endpoints",
            "/api/2.0/serving-endpoints".into(),
            Some(json!({"name": 1})),
            Manage,
        ),
        (Http, "GET", "/api/2.0/serving-endpoints/{name}", "/api/2.0/serving-endpoints/fraud".into(), None, Read),
        (Http, "DELETE", "/api/2.0/serving-endpoints/{name}", "/api/2.0/serving-endpoints/nope".into(), None, Manage),
        (
            Http,
            "PUT",
            "/api/2.0/serving-endpoints/{name}/config",
            "/api/2.0/serving-endpoints/nope/config".into(),
            Some(json!({})),
            Manage,
        ),
        (
            Http,
            "PATCH",
            "/api/2.0/serving-endpoints/{name}/tags",
            "/api/2.0/serving-endpoints/nope/tags".into(),
            Some(json!({})),
            Manage,
        ),
        (
            Http,
            "PUT",
            "/api/2.0/serving-endpoints/{name}/tags",
            "/api/2.0/serving-endpoints/nope/tags".into(),
            Some(json!({})),
            Manage,
        ),
        (
            Http,
            "GET",
            "/api/2.0/serving-endpoints/{name}/served-models/{served}/logs",
            "/api/2.0/serving-endpoints/fraud/served-models/champion/logs".into(),
            None,
            Read,
        ),
        (
            Http,
            "GET",
            "/api/2.0/serving-endpoints/{name}/served-models/{served}/build-logs",
            "/api/2.0/serving-endpoints/fraud/served-models/champion/build-logs".into(),
            None,
            Read,
        ),
        (
            Http,
            "GET",
            "/api/2.0/serving-endpoints/{name}/metrics",
            "/api/2.0/serving-endpoints/fraud/metrics".into(),
            None,
            Read,
        ),
        (
            Http,
            "GET",
            "/api/2.0/serving-endpoints/{name}/openapi",
            "/api/2.0/serving-endpoints/fraud/openapi".into(),
            None,
            Read,
        ),
        // not a route: behind a valid token it is a 404
        (Http, "GET", "-", "/no/such/route".into(), None, Authn),
        // admin port
        (Admin, "GET", "/metrics", "/metrics".into(), None, Read),
        (Admin, "GET", "/health", "/health".into(), None, Open),
        (Admin, "GET", "/v2/health/live", "/v2/health/live".into(), None, Open),
        (Admin, "GET", "/v2/health/ready", "/v2/health/ready".into(), None, Open),
        (Admin, "GET", "/", "/".into(), None, Open),
        (Admin, "GET", "/dashboard", "/dashboard".into(), None, Open),
        (Admin, "GET", "/dashboard/style.css", "/dashboard/style.css".into(), None, Open),
        (Admin, "GET", "/dashboard/app.js", "/dashboard/app.js".into(), None, Open),
        (Admin, "GET", "/dashboard/charts.js", "/dashboard/charts.js".into(), None, Open),
        (Admin, "GET", "/dashboard/api/traffic", "/dashboard/api/traffic".into(), None, Read),
        (Admin, "GET", "/monitors/{endpoint}/series", "/monitors/fraud/series?metric=nope".into(), None, Read),
        (Admin, "GET", "/monitors/{endpoint}/histogram", "/monitors/fraud/histogram?column=nope".into(), None, Read),
        (Admin, "GET", "/debug/clock", "/debug/clock".into(), None, Read),
        (Admin, "POST", "/debug/clock", "/debug/clock".into(), Some(json!({"advance": "0s"})), Manage),
        (Admin, "POST", "/debug/worker-panic", "/debug/worker-panic".into(), Some(json!({"model": "nope"})), Manage),
        (Admin, "GET", "/admin/endpoints", "/admin/endpoints".into(), None, Read),
        (Admin, "GET", "/admin/replica", "/admin/replica".into(), None, Read),
        (Admin, "GET", "/admin/endpoints/{name}", "/admin/endpoints/fraud".into(), None, Read),
        (Admin, "PUT", "/admin/endpoints/{name}", "/admin/endpoints/nope".into(), Some(json!({"bad": 1})), Manage),
        (Admin, "DELETE", "/admin/endpoints/{name}", "/admin/endpoints/nope".into(), None, Manage),
        (
            Admin,
            "PATCH",
            "/admin/endpoints/{name}/traffic",
            "/admin/endpoints/nope/traffic".into(),
            Some(json!({"routes": []})),
            Manage,
        ),
        (
            Admin,
            "PUT",
            "/admin/endpoints/{name}/traffic",
            "/admin/endpoints/nope/traffic".into(),
            Some(json!({"routes": []})),
            Manage,
        ),
        (Admin, "GET", "/admin/endpoints/{name}/history", "/admin/endpoints/fraud/history".into(), None, Read),
        (
            Admin,
            "POST",
            "/admin/endpoints/{name}/rollback",
            "/admin/endpoints/fraud/rollback".into(),
            Some(json!({"version": 99})),
            Manage,
        ),
        (Admin, "POST", "/admin/reload", "/admin/reload".into(), None, Manage),
        (Admin, "GET", "/experiments/{endpoint}", "/experiments/nope".into(), None, Read),
        (Admin, "GET", "/monitors", "/monitors".into(), None, Read),
        (Admin, "GET", "/monitors/{endpoint}", "/monitors/nope".into(), None, Read),
        (Admin, "POST", "/monitors/{endpoint}/refresh", "/monitors/nope/refresh".into(), None, Manage),
        (Admin, "GET", "/rollouts", "/rollouts".into(), None, Read),
        (Admin, "GET", "/rollouts/{endpoint}", "/rollouts/fraud".into(), None, Read),
        (Admin, "POST", "/rollouts/{endpoint}", "/rollouts/nope".into(), Some(json!({"candidate": "x"})), Manage),
        (Admin, "POST", "/rollouts/{endpoint}/pause", "/rollouts/fraud/pause".into(), None, Manage),
        (Admin, "POST", "/rollouts/{endpoint}/resume", "/rollouts/fraud/resume".into(), None, Manage),
        (Admin, "POST", "/rollouts/{endpoint}/abort", "/rollouts/fraud/abort".into(), None, Manage),
        (Admin, "GET", "-", "/no/such/route".into(), None, Read),
    ]
}

/// (port, method, template) of every `.route(...)` in the API's source.
fn routes_in_source() -> BTreeSet<(&'static str, String, String)> {
    let api = common::repo_root().join("gateway/src/api");
    let mut files: Vec<(std::path::PathBuf, bool)> =
        vec![(api.join("http.rs"), false), (api.join("serving_endpoints.rs"), false)];
    for e in std::fs::read_dir(api.join("admin")).unwrap() {
        files.push((e.unwrap().path(), true));
    }
    let method_re = ["get(", "post(", "put(", "patch(", "delete("];
    let mut out = BTreeSet::new();
    for (file, admin_file) in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // in http.rs, the routes after `ops_routes` are the admin port's
        let ops_at = text.find("fn ops_routes").unwrap_or(usize::MAX);
        for (at, _) in text.match_indices(".route(\"") {
            let rest = &text[at + 8..];
            let path = &rest[..rest.find('"').unwrap()];
            let line = &rest[..rest.find('\n').unwrap_or(rest.len())];
            let port = if admin_file || at > ops_at { "admin" } else { "http" };
            for m in method_re {
                // a method call at the start of the handler or chained after one
                if line.contains(&format!(", {m}"))
                    || line.contains(&format!(").{m}"))
                    || line.contains(&format!(" {m}"))
                {
                    out.insert((port, m.trim_end_matches('(').to_uppercase(), path.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn every_route_in_the_source_has_a_row() {
    let rows: BTreeSet<(&str, String, String)> = http_routes()
        .into_iter()
        .filter(|r| r.2 != "-")
        .map(|r| (if r.0 == Port::Http { "http" } else { "admin" }, r.1.to_string(), r.2.to_string()))
        .collect();
    let source = routes_in_source();
    assert!(source.len() > 40, "the scan found the routes: {source:?}");
    let missing: Vec<_> = source.difference(&rows).collect();
    assert!(missing.is_empty(), "routes without a row in the auth table (decide their rule): {missing:?}");
    let stale: Vec<_> = rows.difference(&source).collect();
    assert!(stale.is_empty(), "rows for routes that no longer exist: {stale:?}");
}

async fn call(
    t: &common::TestServer,
    port: Port,
    method: &str,
    path: &str,
    body: &Option<Value>,
    token: Option<&str>,
) -> (u16, Value, Option<String>) {
    let base = if port == Port::Http { &t.http } else { &t.admin };
    let mut r = t.client.request(method.parse().unwrap(), format!("{base}{path}"));
    if method != "GET" {
        r = r.header("content-type", "application/json");
    }
    if let Some(b) = body {
        r = r.body(serde_json::to_vec(b).unwrap());
    }
    if let Some(tok) = token {
        r = r.bearer_auth(tok);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    let bytes = r.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), challenge)
}

/// An error answer's text: Sluice's `error`, or Databricks' `message` beside an `error_code`
/// (the serving-endpoints API).
fn error_text(v: &Value) -> Option<&str> {
    v["error"].as_str().or_else(|| v["error_code"].as_str().and(v["message"].as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_on_every_port_needs_its_scope() {
    if common::skip_without_ort() {
        return;
    }
    let t = common::start(&config_text()).await;
    let mut failures = Vec::new();
    for (port, method, template, path, body, need) in http_routes() {
        let what = format!("{port:?} {method} {template} ({path})");
        let (right, wrong) = right_and_wrong(need);
        // no token, and a token that is not one
        for token in [None, Some("not-a-token-0123456789")] {
            let (s, v, challenge) = call(&t, port, method, &path, &body, token).await;
            let ok = if need == Need::Open {
                !matches!(s, 401 | 403)
            } else {
                s == 401 && error_text(&v).is_some() && challenge.as_deref() == Some("Bearer")
            };
            if !ok {
                failures.push(format!("{what} with {token:?}: {s} {v}"));
            }
        }
        if let Some(w) = wrong {
            let (s, v, _) = call(&t, port, method, &path, &body, Some(secret(w))).await;
            if !(s == 403 && error_text(&v).is_some_and(|e| e.contains(w))) {
                failures.push(format!("{what} as {w} (wrong scope): {s} {v}"));
            }
        }
        let right = right.map(secret);
        let (s, v, _) = call(&t, port, method, &path, &body, right).await;
        if matches!(s, 401 | 403) || s == 415 {
            failures.push(format!("{what} with the right scope ({right:?}): {s} {v}"));
        }
    }
    // the admin token opens the admin port (and only it)
    let (s, ..) = call(&t, Port::Admin, "GET", "/admin/endpoints", &None, Some(ADMIN_TOKEN)).await;
    assert_eq!(s, 200);
    let (s, ..) = call(
        &t,
        Port::Admin,
        "POST",
        "/admin/endpoints/nope/rollback",
        &Some(json!({"version": 1})),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(s, 404);
    let (s, ..) =
        call(&t, Port::Http, "POST", "/endpoints/fraud/predict", &Some(common::fraud_body(1)), Some(ADMIN_TOKEN)).await;
    assert_eq!(s, 401, "the admin token is not a data-plane token");
    assert!(failures.is_empty(), "{} wrong answers:\n{}", failures.len(), failures.join("\n"));

    // gRPC: health open, the rest needs a token, ModelInfer the scope of the name it calls
    let mut c = GrpcInferenceServiceClient::connect(t.grpc.clone()).await.unwrap();
    assert!(c.server_live(with(pb::ServerLiveRequest {}, None)).await.is_ok());
    assert!(
        c.model_ready(with(pb::ModelReadyRequest { name: "fraud_classifier".into(), version: String::new() }, None))
            .await
            .is_ok()
    );
    for token in [None, Some("not-a-token-0123456789")] {
        let e = c.server_metadata(with(pb::ServerMetadataRequest {}, token)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    }
    assert!(c.server_metadata(with(pb::ServerMetadataRequest {}, Some(secret("labeller")))).await.is_ok());
    let (cols, rows) = common::fixture("fraud_classifier");
    let infer = |model: &str| pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, cols.len() as i64],
            contents: Some(pb::InferTensorContents {
                fp32_contents: rows[0].iter().map(|x| *x as f32).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    for (model, right, wrong) in [("fraud", "app", "labeller"), ("fraud_classifier", "direct", "app")] {
        let e = c.model_infer(with(infer(model), None)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{model}: {e:?}");
        let e = c.model_infer(with(infer(model), Some(secret(wrong)))).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{model} as {wrong}: {e:?}");
        let r = c.model_infer(with(infer(model), Some(secret(right)))).await;
        assert!(r.is_ok(), "{model} as {right}: {r:?}");
    }

    // the principal, not the client, is the requester; requests are counted per principal
    let r = t
        .client
        .post(t.url("/endpoints/fraud/predict"))
        .bearer_auth(secret("app"))
        .header("x-sluice-requester", "someone-else")
        .json(&common::fraud_body(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let table = t.data.as_ref().unwrap().path().join("fraud");
    let row = || crate::onepath::table_rows(&table).into_iter().find(|r| r["request_id"] == id);
    common::eventually("the request's table row", || async { row().is_some() }).await;
    assert_eq!(row().unwrap()["requester"], "app");
    let metric = |labels: &'static str| {
        let r = t.client.get(format!("{}/metrics", t.admin)).bearer_auth(secret("viewer")).send();
        async move {
            let text = r.await.unwrap().text().await.unwrap();
            let prefix = format!("sluice_principal_requests_total{{{labels}}} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
        }
    };
    assert!(metric("principal=\"app\",outcome=\"allowed\"").await >= 5.0);
    assert!(metric("principal=\"app\",outcome=\"denied\"").await >= 5.0);
    assert!(metric("principal=\"anonymous\",outcome=\"denied\"").await >= 50.0);
    t.stop().await;
}

fn with<T>(req: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(req);
    if let Some(tok) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {tok}").parse().unwrap());
    }
    r
}

/// Labels feed the monitor and the rollout quality guardrail, so only the right callers may
/// post them and only about answers the gateway gave: a `query`-only principal is refused; ids
/// the table never logged are refused (named, counted) unless the table opts in; a flood from a
/// `labels`-scoped principal is rate-limited (429, counted) and written as a few files, not a
/// file a post; after a restart the table still knows what it logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_scoped_known_capped_and_batched() {
    if common::skip_without_ort() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let text = config_text()
        .replacen("[server]\n", "[server]\nlabels_per_second = 50\n", 1)
        .replace("data_dir = \"data\"", &format!("data_dir = \"{}\"", data.path().display()));
    let t = common::start_with(common::config(&text)).await;
    // a few answers to label
    let mut ids = Vec::new();
    for i in 0..4 {
        let r = t
            .client
            .post(t.url("/endpoints/fraud/predict"))
            .bearer_auth(secret("app"))
            .header("x-request-id", format!("known-{i}"))
            .json(&common::fraud_body(1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.push(format!("known-{i}"));
    }
    let post = |who: &'static str, body: Value| {
        let r = t.client.post(t.url("/endpoints/fraud/labels")).bearer_auth(secret(who)).json(&body).send();
        async move {
            let r = r.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let label = |id: &str| json!({"request_id": id, "label": "fraud"});
    let (s, v) = post("app", json!([label(&ids[0])])).await;
    assert_eq!(s, 403, "a query-only principal cannot post labels: {v}");
    // unknown ids: refused and named; a post of only unknown ids is a 400
    let (s, v) = post("labeller", json!([label(&ids[0]), label("never-answered")])).await;
    assert_eq!((s, v["accepted"].as_u64(), v["unknown"].as_u64()), (200, Some(1), Some(1)), "{v}");
    assert_eq!(v["unknown_ids"], json!(["never-answered"]));
    let (s, v) = post("labeller", json!([label("forged-1"), label("forged-2")])).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("labels_accept_unknown_ids"), "{v}");
    // a post over the item cap
    let many: Vec<Value> = (0..10_001).map(|i| label(&ids[i % 4])).collect();
    let (s, v) = post("labeller", Value::Array(many)).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("10000"), "{v}");
    // a flood: 8 posters, 40 posts each of 100 labels, over a burst of 10,000 at 50 a second (a
    // slow refill: past the burst, each refilled post is a file of its own, so a fast refill on a
    // slow machine would turn the flood into a file a post and hide whether the burst was batched)
    let labels_dir = data.path().join("fraud_labels");
    let files_before = sluice::inference_log::read::list_parquet(&labels_dir).len();
    let began = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url, ids) = (t.client.clone(), t.url("/endpoints/fraud/labels"), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for k in 0..40 {
                let body: Vec<Value> =
                    (0..100).map(|i| json!({"request_id": ids[(k + i) % 4], "label": "legit"})).collect();
                let r = client.post(&url).bearer_auth(secret("labeller")).json(&body).send().await.unwrap();
                statuses.push(r.status().as_u16());
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.extend(task.await.unwrap());
    }
    let (ok, limited) =
        (statuses.iter().filter(|s| **s == 200).count(), statuses.iter().filter(|s| **s == 429).count());
    assert_eq!(ok + limited, 320, "only 200 and 429: {statuses:?}");
    // a burst of 10,000 labels (less the 4 charged above: 99 posts), then 50 a second
    let elapsed = began.elapsed().as_secs_f64();
    let most = (10_000.0 + 50.0 * elapsed) / 100.0;
    assert!(ok >= 99 && ok as f64 <= most + 1.0, "{ok} posts accepted; at most {most:.1}");
    let files = sluice::inference_log::read::list_parquet(&labels_dir).len() - files_before;
    assert!(files >= 1 && files * 4 <= ok, "{ok} accepted posts were written as {files} files");
    // and the writer starts a write at most once a window (200 ms) while posts keep coming
    assert!(files as f64 <= elapsed / 0.2 + 2.0, "{files} files in {elapsed:.1} s");
    let metric = |labels: &'static str| {
        let r = t.client.get(format!("{}/metrics", t.admin)).bearer_auth(secret("viewer")).send();
        async move {
            let text = r.await.unwrap().text().await.unwrap();
            let prefix = format!("sluice_labels_total{{{labels}}} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
        }
    };
    assert_eq!(metric("endpoint=\"fraud\",outcome=\"rate_limited\"").await, (limited * 100) as f64);
    assert_eq!(metric("endpoint=\"fraud\",outcome=\"unknown_id\"").await, 3.0);
    assert_eq!(metric("endpoint=\"fraud\",outcome=\"accepted\"").await, (1 + ok * 100) as f64);
    t.stop().await;

    // after a restart the table still knows the ids it logged
    let t = common::start_with(common::config(&text)).await;
    let r = t
        .client
        .post(t.url("/endpoints/fraud/labels"))
        .bearer_auth(secret("labeller"))
        .json(&json!([{"request_id": "known-3", "label": "fraud"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["accepted"], 1);
    t.stop().await;
}
