//! The admin port (8002): every admin route, the state they share and the bearer-token check.
//!
//! Routes behind the token (`Authorization: Bearer <token>` when a token is configured; it must
//! be when the admin port is not bound to loopback): live endpoint config editing, history and
//! rollback, reload ([`endpoints`]); monitors ([`monitor`]); rollouts ([`rollouts`]); the A/B
//! report ([`experiments`]); test hooks of a `--test-clock` gateway ([`debug`]); the dashboard's
//! data ([`dashboard`]). Open routes: the dashboard page and its assets, metrics and health.
//! The errors of the layers below become statuses in `api::error`. Bodies use the Databricks
//! endpoint shape.

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
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::http::{self, HttpState, read_body};
use crate::config::raw::Secret;
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
    pub token: Option<Secret>,
    pub max_body_bytes: usize,
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
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
        .merge(http::ops_routes().merge(dashboard::page_routes()).with_state(http_state))
        .fallback(http::fallback)
        .method_not_allowed_fallback(http::method_not_allowed)
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(Secret(token)) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            None => {
                return ApiError::Unauthorized("the admin API needs Authorization: Bearer <token>".into())
                    .into_response();
            }
            Some(g) if !constant_time_eq(g.as_bytes(), token.as_bytes()) => {
                return ApiError::Unauthorized("the admin token is wrong".into()).into_response();
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
