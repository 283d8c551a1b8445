//! The operator dashboard on the admin port: one page built into the binary (`GET /dashboard`
//! and its assets under `/dashboard/`, no data in them, so open like `/metrics`) that draws from
//! the admin API with the same bearer token, plus the reads only it needs: recent traffic, and a
//! monitor's metric series and histograms.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::AdminState;
use crate::api::ApiError;
use crate::api::http::json_ok;
use crate::core::CoreError;
use crate::monitor::MonitorSpec;

/// The page and its assets, built into the binary from `gateway/assets/dashboard/` (no build
/// step): the HTML shell, its stylesheet, and two ES modules (behaviour and drawing).
const INDEX_HTML: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/dashboard/index.html"));
const STYLE_CSS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/dashboard/style.css"));
const APP_JS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/dashboard/app.js"));
const CHARTS_JS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/dashboard/charts.js"));

/// Scripts and styles come from this origin only (no inline code); charts are inline SVG. No
/// other page may frame the dashboard (clickjacking).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src data:; frame-ancestors 'none'";

/// Open routes: the page itself and its assets.
pub(super) fn page_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/dashboard") }))
        .route("/dashboard", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/dashboard/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/dashboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/dashboard/charts.js", get(|| async { asset("text/javascript; charset=utf-8", CHARTS_JS) }))
}

/// One built-in file, never cached (the binary and its page change together).
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("content-security-policy"), CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Data routes (behind the admin token).
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/dashboard/api/traffic", get(traffic))
        .route("/monitors/{endpoint}/series", get(series))
        .route("/monitors/{endpoint}/histogram", get(histogram))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrafficParams {
    minutes: Option<u32>,
}

/// `GET /dashboard/api/traffic?minutes=30`: requests, errors and latency percentiles per
/// endpoint and served model, per 10-second bucket. With a config store, of the whole fleet:
/// this replica's live counts plus the other replicas' last reports (`replicas` lists them,
/// with their age).
async fn traffic(
    State(s): State<AdminState>,
    params: Result<Query<TrafficParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(format!("{e}; use minutes (1..=60)")))?;
    let now = crate::inference_log::now_us();
    let minutes = p.minutes.unwrap_or(30).clamp(1, 60);
    let (series, replicas) = s.fleet_traffic(minutes, now).await;
    let from_ms =
        (now / 1_000_000 / crate::traffic_stats::BUCKET_SECONDS + 1) * crate::traffic_stats::BUCKET_SECONDS * 1000
            - i64::from(minutes) * 60_000;
    Ok(json_ok(&serde_json::json!({
        "bucket_seconds": crate::traffic_stats::BUCKET_SECONDS,
        "from_ms": from_ms,
        "to_ms": now / 1000,
        "series": series,
        "replicas": replicas,
    })))
}

/// The endpoint's monitor spec and its status (paths).
async fn monitor_of(
    s: &AdminState,
    endpoint: &str,
) -> Result<(MonitorSpec, crate::monitor::service::Status), ApiError> {
    let status = s.monitors.status(endpoint)?;
    let spec = s
        .control
        .config()
        .await
        .endpoint(endpoint)
        .and_then(|e| e.monitor.clone())
        .ok_or_else(|| ApiError::not_found(format!("endpoint '{endpoint}' has no monitor")))?;
    Ok((spec, status))
}

fn granularity<'a>(
    spec: &'a MonitorSpec,
    name: Option<&str>,
) -> Result<&'a crate::monitor::spec::Granularity, ApiError> {
    match name {
        None => spec.granularities.first().ok_or_else(|| ApiError::not_found("the monitor has no granularity")),
        Some(n) => {
            let want = crate::monitor::spec::Granularity::parse(n).map_err(|e| ApiError::bad_request(e.to_string()))?;
            spec.granularities.iter().find(|g| g.name == want.name).ok_or_else(|| {
                let names: Vec<&str> = spec.granularities.iter().map(|g| g.name.as_str()).collect();
                ApiError::bad_request(format!("the monitor has no granularity '{n}'; it has {names:?}"))
            })
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesParams {
    granularity: Option<String>,
    windows: Option<usize>,
}

/// `GET /monitors/{endpoint}/series?granularity=5 minutes&windows=48`.
async fn series(
    State(s): State<AdminState>,
    Path(endpoint): Path<String>,
    params: Result<Query<SeriesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(format!("{e}; use granularity and windows")))?;
    let (spec, status) = monitor_of(&s, &endpoint).await?;
    let g = granularity(&spec, p.granularity.as_deref())?;
    let windows = p.windows.unwrap_or(48).clamp(1, 1000);
    let g = g.clone();
    // On the analysis runtime: this handler's thread serves requests.
    let mut v = crate::analysis::run("dashboard_series", async move {
        crate::monitor::view::series(
            std::path::Path::new(&status.profile_metrics),
            std::path::Path::new(&status.drift_metrics),
            &g,
            windows,
        )
        .await
    })
    .await
    .map_err(|e| ApiError::Core(CoreError::Internal(e.to_string())))??;
    v["endpoint"] = serde_json::json!(endpoint);
    Ok(json_ok(&v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistogramParams {
    column: String,
    granularity: Option<String>,
    model_id: Option<String>,
}

/// `GET /monitors/{endpoint}/histogram?column=amount[&granularity=][&model_id=]`: baseline and
/// current distribution in the newest window.
async fn histogram(
    State(s): State<AdminState>,
    Path(endpoint): Path<String>,
    params: Result<Query<HistogramParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(format!("{e}; use column, granularity and model_id")))?;
    let (spec, status) = monitor_of(&s, &endpoint).await?;
    let g = granularity(&spec, p.granularity.as_deref())?;
    let table_dir = std::path::PathBuf::from(&status.table_dir);
    let labels = crate::inference_log::labels::dir_of(&table_dir);
    let baseline = spec.baseline.clone();
    let g = g.clone();
    // On the analysis runtime: this handler's thread serves requests.
    let mut v = crate::analysis::run("dashboard_histogram", async move {
        crate::monitor::view::histogram(
            &spec,
            &table_dir,
            &labels,
            baseline.as_deref(),
            &p.column,
            &g,
            p.model_id.as_deref(),
        )
        .await
    })
    .await
    .map_err(|e| ApiError::Core(CoreError::Internal(e.to_string())))??;
    v["endpoint"] = serde_json::json!(endpoint);
    Ok(json_ok(&v))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt;

    use super::*;

    async fn get_asset(path: &str) -> (StatusCode, String, String, String) {
        let res =
            page_routes::<()>().with_state(()).oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let h = |name: header::HeaderName| {
            res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
        };
        let (ct, csp) = (h(header::CONTENT_TYPE), h(header::CONTENT_SECURITY_POLICY));
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        (status, ct, csp, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Every file the page loads is served with its type under the same policy, and the policy
    /// allows no inline code (so none may be left in the page).
    #[tokio::test]
    async fn the_page_and_each_asset_it_loads_are_served() {
        let (status, ct, csp, page) = get_asset("/dashboard").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ct.starts_with("text/html"), "{ct}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "no other page may frame the dashboard: {csp}");
        assert!(!page.contains("<style") && !page.contains("style=") && !page.contains("<script>"));
        for (path, want) in [
            ("/dashboard/style.css", "text/css"),
            ("/dashboard/app.js", "text/javascript"),
            ("/dashboard/charts.js", "text/javascript"),
        ] {
            let (status, ct, asset_csp, body) = get_asset(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(ct.starts_with(want), "{path}: {ct}");
            assert_eq!(asset_csp, csp, "{path}");
            assert!(!body.is_empty(), "{path}");
            if path != "/dashboard/charts.js" {
                assert!(page.contains(&format!("\"{path}\"")), "the page does not load {path}");
            }
        }
        let (_, _, _, app) = get_asset("/dashboard/app.js").await;
        assert!(app.contains("from './charts.js'"));
        assert!(!app.contains("style:"), "style attributes are blocked by the CSP: use classes");
    }
}
