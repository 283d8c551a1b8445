//! Who may call what: the need of every route of every port ([`http_need`], [`grpc_need`],
//! [`model_need`]) and the check of a caller's bearer token against the tokens in force
//! ([`authorize`]). The stack's auth layer (`server::stack`) asks these for every request.
//!
//! - Without `[[auth.tokens]]`, the inference ports are open, as before; the admin port needs
//!   `server.admin_token` when one is set (and `/metrics` stays open).
//! - With tokens, every route but health checks and the dashboard's static page needs a token:
//!   queries `query:<endpoint>` (a model called directly: `query:*`), labels
//!   `labels:<endpoint>`, metadata any valid token, admin reads and `/metrics` on either port
//!   `read`, admin changes `manage`. The admin token, when set, still opens the admin port.

use std::sync::Arc;

use http::{HeaderMap, Method, header};

use crate::auth::{AuthError, Need, Principal, constant_time_eq};
use crate::control::Access;
use crate::core::Snapshot;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Inference,
    Admin,
}

/// Who the caller is, once authorized: a principal of `[[auth.tokens]]`, the admin token's
/// holder, or nobody (no token needed).
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<Arc<Principal>>);

/// The principal's name of an authorized caller (`None` without tokens): who made a change.
pub fn principal_name(caller: Option<axum::Extension<Caller>>) -> Option<String> {
    caller.and_then(|axum::Extension(c)| c.0.map(|p| p.name.clone()))
}

/// The name the admin token's holder goes by.
pub const ADMIN_PRINCIPAL: &str = "admin";

/// What an HTTP request to `path` on `port` needs.
pub fn http_need(port: Port, method: &Method, path: &str, snapshot: &Snapshot, access: &Access) -> Need {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // `/metrics` and the admin API's reads and writes; open without [[auth.tokens]] as before
    let metrics = if access.principals.enabled() { Need::Read } else { Need::Open };
    match (port, parts.as_slice()) {
        (_, ["health"] | ["v2", "health", "live" | "ready"]) => Need::Open,
        (Port::Inference, ["ping"]) => Need::Open,
        (_, ["metrics"]) => metrics,
        (Port::Inference, ["predict"] | ["invocations"]) => match &snapshot.default_endpoint {
            Some(e) => Need::Query(e.clone()),
            None => Need::QueryAny,
        },
        (Port::Inference, ["endpoints", e, "predict"])
        | (Port::Inference, ["serving-endpoints", e, "invocations"])
        | (Port::Inference, ["endpoints", e, "served-models", _, "predict"]) => Need::Query(e.to_string()),
        (Port::Inference, ["endpoints", e, "labels"]) => Need::Labels(e.to_string()),
        // Databricks' serving-endpoints API: reads and changes of the config, as on the admin port
        (Port::Inference, ["api", "2.0", "serving-endpoints", ..]) if matches!(*method, Method::GET | Method::HEAD) => {
            Need::Read
        }
        (Port::Inference, ["api", "2.0", "serving-endpoints", ..]) => Need::Manage,
        (Port::Inference, ["v2", "models", m, "infer"] | ["v2", "models", m, "versions", _, "infer"]) => {
            model_need(m, snapshot)
        }
        // metadata, readiness of models, statistics, and anything unknown (404 after the check)
        (Port::Inference, _) => Need::Authenticated,
        (Port::Admin, [""] | ["dashboard"] | ["dashboard", "style.css" | "app.js" | "charts.js"]) => Need::Open,
        (Port::Admin, _) if matches!(*method, Method::GET | Method::HEAD) => Need::Read,
        (Port::Admin, _) => Need::Manage,
    }
}

/// What a V2 inference call to `name` needs: an endpoint's query scope, or `query:*` for a
/// model called directly (as V2 names resolve: an endpoint first).
pub fn model_need(name: &str, snapshot: &Snapshot) -> Need {
    if snapshot.endpoints.contains_key(name) { Need::Query(name.to_string()) } else { Need::QueryAny }
}

/// What a gRPC call needs before its message is read. `ModelInfer` needs a valid token here;
/// its scope is checked once the model name is decoded ([`model_need`]).
pub fn grpc_need(path: &str) -> Need {
    match path.rsplit('/').next().unwrap_or("") {
        "ServerLive" | "ServerReady" | "ModelReady" => Need::Open,
        _ => Need::Authenticated,
    }
}

/// The bearer token of `headers`, if any (`Authorization: Bearer <token>`, scheme in any case).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether `token` may do what `need` says, with the tokens of `access`: the caller on success.
/// Counted per principal (`sluice_principal_requests_total`) when a token was needed.
pub fn authorize(access: &Access, need: &Need, token: Option<&str>) -> Result<Caller, AuthError> {
    let decided = decide(access, need, token);
    if let Err(AuthError::Missing | AuthError::Invalid) = &decided {
        crate::metrics::principal_request("anonymous", "denied");
    }
    decided
}

fn decide(access: &Access, need: &Need, token: Option<&str>) -> Result<Caller, AuthError> {
    let required = match need {
        Need::Open => false,
        n if n.is_admin() => access.any_token(),
        _ => access.principals.enabled(),
    };
    if !required {
        return Ok(Caller(None));
    }
    let token = token.ok_or(AuthError::Missing)?;
    if need.is_admin()
        && let Some(admin) = &access.admin_token
        && constant_time_eq(token.as_bytes(), admin.0.as_bytes())
    {
        crate::metrics::principal_request(ADMIN_PRINCIPAL, "allowed");
        let scopes = vec![crate::auth::Scope::Manage];
        return Ok(Caller(Some(Arc::new(Principal { name: ADMIN_PRINCIPAL.into(), scopes }))));
    }
    let entry = access.principals.find(token).ok_or(AuthError::Invalid)?;
    if entry.principal.may(need) {
        entry.count(true);
        Ok(Caller(Some(entry.principal.clone())))
    } else {
        entry.count(false);
        Err(AuthError::Denied { principal: entry.principal.name.clone(), need: need.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Principals, Scope, hash, parse_hash};

    fn access() -> Access {
        let p = |name: &str, scopes: &[&str]| {
            (
                name.to_string(),
                parse_hash(&hash(&format!("{name}-secret"))).unwrap(),
                scopes.iter().map(|s| s.parse::<Scope>().unwrap()).collect(),
            )
        };
        Access {
            admin_token: Some(crate::config::raw::Secret("admin-token-0123456789".into())),
            principals: Arc::new(Principals::new(vec![p("app", &["query:fraud"]), p("ops", &["manage"])])),
        }
    }

    #[test]
    fn tokens_meet_or_miss_needs() {
        let a = access();
        let q = Need::Query("fraud".into());
        assert_eq!(authorize(&a, &q, None).unwrap_err(), AuthError::Missing);
        assert_eq!(authorize(&a, &q, Some("nope")).unwrap_err(), AuthError::Invalid);
        assert_eq!(authorize(&a, &q, Some("app-secret")).unwrap().0.unwrap().name, "app");
        assert!(matches!(authorize(&a, &Need::Manage, Some("app-secret")), Err(AuthError::Denied { .. })));
        assert_eq!(authorize(&a, &Need::Manage, Some("ops-secret")).unwrap().0.unwrap().name, "ops");
        assert_eq!(authorize(&a, &Need::Read, Some("admin-token-0123456789")).unwrap().0.unwrap().name, "admin");
        assert_eq!(
            authorize(&a, &q, Some("admin-token-0123456789")).unwrap_err(),
            AuthError::Invalid,
            "the admin token is not a data-plane token"
        );
        assert!(authorize(&a, &Need::Open, None).unwrap().0.is_none());
        // nothing configured: open, as before
        let none = Access::default();
        for need in [q.clone(), Need::QueryAny, Need::Labels("x".into()), Need::Read, Need::Manage] {
            assert!(authorize(&none, &need, None).unwrap().0.is_none(), "{need:?}");
        }
        // an admin token alone guards the admin API only
        let admin_only = Access { principals: Arc::default(), ..a };
        assert!(authorize(&admin_only, &q, None).is_ok());
        assert_eq!(authorize(&admin_only, &Need::Read, None).unwrap_err(), AuthError::Missing);
    }

    #[test]
    fn bearer_schemes() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, v.parse().unwrap());
            m
        };
        assert_eq!(bearer(&h("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&h("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&h("Basic abc")), None);
        assert_eq!(bearer(&h("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn grpc_calls() {
        let svc = "/inference.GRPCInferenceService/";
        for (m, need) in [
            ("ServerLive", Need::Open),
            ("ServerReady", Need::Open),
            ("ModelReady", Need::Open),
            ("ServerMetadata", Need::Authenticated),
            ("ModelMetadata", Need::Authenticated),
            ("ModelConfig", Need::Authenticated),
            ("ModelStatistics", Need::Authenticated),
            ("ModelInfer", Need::Authenticated),
            ("SomethingNew", Need::Authenticated),
        ] {
            assert_eq!(grpc_need(&format!("{svc}{m}")), need, "{m}");
        }
    }
}
