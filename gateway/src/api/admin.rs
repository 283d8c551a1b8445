//! The admin port (8002): every admin route and the state they share.
//!
//! Routes: live endpoint config editing, history and rollback, reload ([`endpoints`]); monitors
//! ([`monitor`]); rollouts ([`rollouts`]); the A/B report ([`experiments`]); test hooks of a
//! `--test-clock` gateway ([`debug`]); the dashboard's data ([`dashboard`]); the dashboard page
//! and its assets, metrics and health. Who may call which is `api::access`'s rule, checked by
//! the stack's auth layer (reads need `read`, changes `manage`, or the admin token). The errors
//! of the layers below become statuses in `api::error`. Bodies use the Databricks endpoint
//! shape.
//!
//! Every admin route, open ones included, is behind [`browser_guard`] too: the admin API is
//! reachable from the operator's browser, so a page from elsewhere must not be able to use it
//! (cross-site requests, DNS rebinding).

mod dashboard;
mod debug;
pub mod endpoints;
mod experiments;
mod monitor;
mod rollouts;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::http::{self, HttpState, read_body};
use crate::control::Control;
use crate::monitor::service::Monitors;
use crate::rollout::Rollouts;

pub use endpoints::{EndpointView, ServedModelView};

/// State of the admin routes.
#[derive(Clone)]
pub struct AdminState {
    pub control: Arc<Control>,
    pub rollouts: Arc<Rollouts>,
    pub monitors: Arc<Monitors>,
    /// Whether the admin listener is bound to a loopback address: without a token, it then
    /// answers only requests addressed to a loopback name.
    pub loopback: bool,
    pub max_body_bytes: usize,
    /// With a config store: the other replicas' reports (fleet-wide dashboard counts).
    pub fleet: Option<Arc<crate::control::fleet::Fleet>>,
}

impl AdminState {
    /// Traffic of the last `minutes` up to `now_us`: this replica's live counts, plus (with a
    /// config store) the other replicas' last reports; and who is counted, with the age of
    /// each report.
    pub async fn fleet_traffic(
        &self,
        minutes: u32,
        now_us: i64,
    ) -> (Vec<crate::traffic_stats::SeriesView>, Vec<serde_json::Value>) {
        let mut raws = self.control.gateway().traffic().raw(minutes, now_us);
        let mut replicas = vec![serde_json::json!({"id": self.control.leadership().id, "age_s": 0.0, "this": true})];
        if let Some(fleet) = &self.fleet {
            match fleet.others(now_us / 1000).await {
                Ok(others) => {
                    for r in others {
                        replicas.push(serde_json::json!({
                            "id": r.id,
                            "age_s": (now_us / 1000 - r.time_ms) as f64 / 1000.0,
                            "leader": r.leader,
                            "store_version": r.store_version,
                        }));
                        raws.extend(r.traffic);
                    }
                }
                Err(e) => tracing::warn!("the other replicas' reports cannot be read: {e}"),
            }
        }
        (crate::traffic_stats::merge(&raws, minutes, now_us), replicas)
    }
}

/// The admin port's routes: the admin API behind the token, then the open ones (the dashboard
/// page, metrics and health, which use the inference port's state).
pub fn router(http_state: HttpState, state: AdminState) -> Router {
    Router::new()
        .merge(endpoints::routes())
        .merge(monitor::routes())
        .merge(rollouts::routes())
        .merge(experiments::routes())
        .merge(debug::routes())
        .merge(dashboard::routes())
        .with_state(state.clone())
        .merge(http::ops_routes().merge(dashboard::page_routes()).with_state(http_state))
        .fallback(http::fallback)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(middleware::from_fn_with_state(state, browser_guard))
}

/// What a browser page from another origin could otherwise do with the admin API, refused:
/// - **DNS rebinding**: on loopback without a token, the `Host` must be a loopback name
///   (`localhost`, `*.localhost`, `127.x.x.x`, `[::1]`); `evil.example` resolving to 127.0.0.1
///   gets 403. (With a token, the token is what protects it.)
/// - **Cross-site requests** (state-changing methods, every route): a `Sec-Fetch-Site` other
///   than `same-origin` or `none`, or an `Origin` that is not this host, gets 403; and the
///   body must be declared `Content-Type: application/json` (415 otherwise), which a form or a
///   no-CORS `fetch` cannot send, so a cross-site request needs a CORS preflight this API never
///   grants.
async fn browser_guard(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    match check_browser(&state, req.method(), req.headers(), req.uri()) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            crate::metrics::rejected("admin", e.kind());
            e.into_response()
        }
    }
}

fn check_browser(
    state: &AdminState,
    method: &Method,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| uri.authority().map(|a| a.as_str()));
    if state.loopback
        && !state.control.access().any_token()
        && let Some(host) = host
        && !is_loopback_name(host)
    {
        return Err(ApiError::Forbidden(format!(
            "Host '{host}' is not a loopback name: the admin API without a token answers only requests \
             addressed to localhost, 127.0.0.1 or [::1] (set server.admin_token to reach it by another name)"
        )));
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(ApiError::Forbidden(format!(
            "cross-origin request refused (Sec-Fetch-Site: {site}): the admin API changes state only for \
             its own pages and non-browser clients"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(_, authority)| host.is_some_and(|h| authority.eq_ignore_ascii_case(h)));
        if !same {
            return Err(ApiError::Forbidden(format!(
                "cross-origin request refused (Origin: {}): the admin API changes state only for its own \
                 pages and non-browser clients",
                String::from_utf8_lossy(origin.as_bytes())
            )));
        }
    }
    if http::media_type(headers)?.as_deref() != Some("application/json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "{method} on the admin API needs Content-Type: application/json (even without a body)"
        )));
    }
    Ok(())
}

/// `localhost`, a name under `.localhost`, an IPv4 address in 127/8 or `[::1]`, with or
/// without a port.
fn is_loopback_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A JSON request body (no Content-Type, or `application/json`), at most `max_body_bytes`.
async fn json_body<T: serde::de::DeserializeOwned>(
    s: &AdminState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    match http::media_type(headers)?.as_deref() {
        None | Some("application/json") => {}
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {other} is not supported; send application/json"
            )));
        }
    }
    let bytes = read_body(body, s.max_body_bytes).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::is_loopback_name;

    #[test]
    fn loopback_names() {
        for host in [
            "localhost",
            "localhost:8002",
            "LOCALHOST.",
            "dash.localhost:1",
            "127.0.0.1",
            "127.9.9.9:80",
            "[::1]",
            "[::1]:8002",
        ] {
            assert!(is_loopback_name(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8002",
            "localhost.evil.example",
            "10.0.0.1:8002",
            "[::2]:1",
            "[::1]x",
            "",
            "127.0.0.1.nip.io",
            "0.0.0.0",
        ] {
            assert!(!is_loopback_name(host), "{host}");
        }
    }
}
